"""``muscle-fat``: the phantomless two-tissue line of the reference study (Radiologic Practice 2024,
doi:10.13609/j.cnki.1000-0313.2024.02.019):
``vBMD = MUSCLE_d + (SPINE_ct - MUSCLE_ct) * (MUSCLE_d - FAT_d) / (MUSCLE_ct - FAT_ct)``, the psoas and
subcutaneous fat densities from :mod:`.composition` at the scan's kVp, marrow base and psoas fat."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SegmentationError
from ..settings import AnalysisOptions
from ..volume import Volume
from .composition import (
    REFERENCE_KVP,
    base_marrow_fat_fraction,
    known_kvp,
    marrow_fat_term,
    muscle_fat_densities,
    psoas_fat_sd,
    slope_relative_sd,
    typical_psoas_fat_fraction,
)
from .registry import LINE_FROM_TISSUES, register_calibration
from .types import Calibration

# Muscle and fat must differ by this much in HU (typically ~140 HU) for the line to be meaningful.
MIN_MUSCLE_FAT_CONTRAST_HU = 50.0


def roi_mean_hu(ct: Volume, rois: dict[str, np.ndarray], key: str, what: str) -> float:
    mask = rois.get(key)
    if mask is None or not mask.any():
        raise SegmentationError(
            f"the {what} ROI ({key}) is empty: cannot calibrate with muscle and fat "
            "(draw it, or use --calibration internal-multi, phantom or hu)"
        )
    return float(ct.array[mask].mean())


def two_point_line(muscle_hu: float, fat_hu: float, muscle_d: float, fat_d: float) -> tuple[float, float]:
    """(slope, intercept) of the line through (fat_hu, fat_d) and (muscle_hu, muscle_d)."""
    slope = (muscle_d - fat_d) / (muscle_hu - fat_hu)
    return slope, muscle_d - slope * muscle_hu



# vBMD bias with paraspinal instead of psoas muscle (measurement: qc.py, `obmd bench muscle-substitution`):
# the real CT +19 mg/cm3; digital patients mean +7, -7 to +15.
PARASPINAL_BIAS_MG_CM3 = (19.0, (7.0, -7.0, 15.0))


@register_calibration(
    "muscle-fat", title="muscle-fat (psoas + subcutaneous fat)", help="psoas + anterior subcutaneous fat",
    validation="phantomless, ± stated (psoas and marrow fat assumed); digital patients: bias +8.7, "
               "limits −36 to +54 mg/cm³",
    line_from=LINE_FROM_TISSUES, paraspinal_bias_mg_cm3=PARASPINAL_BIAS_MG_CM3)
def muscle_fat_calibration(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                           options: AnalysisOptions) -> Calibration:
    muscle_hu = roi_mean_hu(ct, rois, "muscle_roi", "muscle")
    fat_hu = roi_mean_hu(ct, rois, "fat_roi", "fat")
    if muscle_hu - fat_hu < MIN_MUSCLE_FAT_CONTRAST_HU:
        raise SegmentationError(
            f"muscle ROI ({muscle_hu:.0f} HU) and fat ROI ({fat_hu:.0f} HU) differ by less than "
            f"{MIN_MUSCLE_FAT_CONTRAST_HU:.0f} HU: check the ROIs"
        )
    settings = options.calibration_settings
    kvp = known_kvp(ct, settings)
    kvp_assumed = kvp is None
    kvp = REFERENCE_KVP if kvp is None else round(kvp, 1)  # rounded: cache-friendly
    age = options.patient_age
    marrow_fat = base_marrow_fat_fraction(settings, age)
    user_psoas_fat = settings.psoas_fat_fraction
    psoas_fat = typical_psoas_fat_fraction(age) if user_psoas_fat is None else float(user_psoas_fat)
    physics_muscle_d, physics_fat_d = muscle_fat_densities(kvp, marrow_fat, psoas_fat)
    muscle_d = physics_muscle_d if options.muscle_density_mg_cm3 is None else float(options.muscle_density_mg_cm3)
    fat_d = physics_fat_d if options.fat_density_mg_cm3 is None else float(options.fat_density_mg_cm3)
    slope, intercept = two_point_line(muscle_hu, fat_hu, muscle_d, fat_d)
    # The patient's own psoas composition is unknown: its between-subject spread is this line's uncertainty
    # (not estimated when the user set the densities or the psoas fat: their own error is unknown here).
    typical = options.muscle_density_mg_cm3 is None and user_psoas_fat is None
    rel_sd = slope_relative_sd(psoas_fat_sd(age), kvp, marrow_fat, muscle_d, fat_d) if typical else None
    details: dict[str, Any] = {
        "muscle_hu": muscle_hu,
        "fat_hu": fat_hu,
        "muscle_density_mg_cm3": muscle_d,
        "fat_density_mg_cm3": fat_d,
        "density_source": {
            "muscle": "physics" if options.muscle_density_mg_cm3 is None else "user",
            "fat": "physics" if options.fat_density_mg_cm3 is None else "user",
        },
        "kvp": kvp,
        "kvp_source": "assumed" if kvp_assumed else "header",  # "assumed": qc flag kvp_assumed
        "base_marrow_fat_fraction": marrow_fat,
        "marrow_fat": marrow_fat_term(kvp, marrow_fat, settings, age, slope),
        "psoas_fat_fraction": psoas_fat,
        "psoas_fat_source": "user" if user_psoas_fat is not None else (
            "typical for age (Sollmann et al., Quant Imaging Med Surg 2020;10:496)" if age is not None
            else "typical for adults over 38 y, age unknown (Sollmann et al., Quant Imaging Med Surg 2020;10:496)"),
        "slope_relative_sd": rel_sd,
        "uncertainty": (f"1 SD from the psoas fat fraction's between-subject SD ({psoas_fat_sd(age):.3f}, Sollmann "
                        f"2020): slope +-{rel_sd:.1%}; scanner non-uniformity (cupping) comes on top")
        if rel_sd is not None else "not estimated (densities or psoas fat set by the user)",
        "muscle_voxels": int(rois["muscle_roi"].sum()),
        "fat_voxels": int(rois["fat_roi"].sum()),
        "formula": "vBMD = MUSCLE_d + (SPINE_ct - MUSCLE_ct) * (MUSCLE_d - FAT_d) / (MUSCLE_ct - FAT_ct)",
        "reference": "Radiologic Practice 2024, doi:10.13609/j.cnki.1000-0313.2024.02.019",
    }
    return Calibration("muscle-fat", slope, intercept, details)
