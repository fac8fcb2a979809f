"""HU -> mg/cm3 hydroxyapatite: the calibration registry and the spine engineer's methods.

A calibration method is a function ``(ct, rois, labels, options) -> Calibration`` registered under a
name with :func:`register_calibration`; ``AnalysisOptions.calibration`` picks one. Methods here:

- ``"muscle-fat"`` (default): the phantomless two-tissue line of the reference study (Radiologic
  Practice 2024, doi:10.13609/j.cnki.1000-0313.2024.02.019):
  ``vBMD = MUSCLE_d + (SPINE_ct - MUSCLE_ct) * (MUSCLE_d - FAT_d) / (MUSCLE_ct - FAT_ct)``;
- ``"hu"``: no calibration; HU are reported, vBMD and category are None;
- ``"phantom"``: a line from a phantom (in-scan or asynchronous), given as slope/intercept or as a
  ``calib.json`` written by ``obmd calibrate-phantom`` (``calibration_params["file"]``).

``calibration_internal`` (another engineer) registers ``"internal-multi"`` at import (bottom of file);
``calibration_pad`` registers ``"inscan"`` (an in-scan calibration pad found in the CT) and ``"auto"`` (the
default: the pad when one is found, else ``"muscle-fat"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SegmentationError
from .volume import Volume

# Equivalent densities (mg/cm3 hydroxyapatite) assigned to psoas muscle and subcutaneous fat.
# The reference study does not publish its values and no published muscle/fat HA-equivalents could be
# verified here, so they are computed from materials.py (NIST XCOM attenuation via xraydb, SpekPy tube
# spectrum, 6 mm Al, hardened by 25 cm water): the HA partial density in a marrow base (the scale QCT and
# the digital patient's truth use, as ``internal-multi``) that attenuates like the psoas (ICRU-44 skeletal
# muscle holding the typical psoas fat, :data:`PSOAS_FAT_FRACTION_OLDER`) / ICRU-44 adipose tissue, at the
# scan's kVp (DICOM KVP), the age-typical marrow fat fraction and the age-typical psoas fat
# (:func:`muscle_fat_densities`). They depend on the beam (half-fatty marrow base, psoas fat 6.9 %:
# 80 kVp 36.2 / -46.1; 100 kVp 37.9 / -53.2; 140 kVp 40.5 / -64.1) and on the base.
# The constants are the documented defaults for 120 kVp, a half-fatty marrow base and the older adults'
# psoas (kVp and age unknown): ``muscle_fat_densities()`` = 39.3 / -59.1; Testing/test_spine.py
# cross-checks them. --muscle-density / --fat-density override them.
MUSCLE_DENSITY_MG_CM3 = 39.3
FAT_DENSITY_MG_CM3 = -59.1
# The psoas is not lean muscle: chemical-shift-encoding water-fat MRI of 76 adults (Sollmann et al.,
# Quant Imaging Med Surg 2020;10(2):496-507, Table 2) found a psoas proton-density fat fraction of
# 4.5 +- 1.5 % below 38 y and 6.9 +- 2.9 % above. Each % of fat lowers the psoas ~1.5 HU and, read as lean
# muscle, steepens the two-point line ~1 % (vBMD and the hip's aBMD ~1 % high). ASSUMPTION: the PDFF is
# taken as the adipose-tissue volume fraction of the psoas. Age unknown: the older group (patients of
# opportunistic CT are mostly older than 38 y). The patient's own fat fraction varies (SD 1.5-2.9 %):
# that is this calibration's irreducible per-patient error (~ +-3 %, docs/calibration.md).
PSOAS_FAT_FRACTION_YOUNG = 0.045
PSOAS_FAT_FRACTION_OLDER = 0.069
PSOAS_FAT_AGE_SPLIT_Y = 38.0
PSOAS_FAT_SD_YOUNG = 0.015  # between-subject SD, same source
PSOAS_FAT_SD_OLDER = 0.029
REFERENCE_KVP = 120.0
REFERENCE_MARROW_FAT_FRACTION = 0.5
# Compositions a user may give (the patient's own, e.g. from a water-fat MRI), as fractions: every front end
# (CLI, Slicer module, web app) accepts these ranges.
PSOAS_FAT_FRACTION_RANGE = (0.0, 0.5)
MARROW_FAT_FRACTION_RANGE = (0.05, 0.95)
# Muscle and fat must differ by this much in HU (typically ~140 HU) for the line to be meaningful.
MIN_MUSCLE_FAT_CONTRAST_HU = 50.0


@dataclass
class Calibration:
    """mg/cm3 = intercept + slope * HU; slope None means "no calibration" (HU only)."""

    method: str
    slope_mg_cm3_per_hu: float | None
    intercept_mg_cm3: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_mg_cm3(self, hu: float | np.ndarray | None) -> float | np.ndarray | None:
        if hu is None or self.slope_mg_cm3_per_hu is None or self.intercept_mg_cm3 is None:
            return None
        return self.intercept_mg_cm3 + self.slope_mg_cm3_per_hu * hu

    @property
    def calibrated(self) -> bool:
        return self.slope_mg_cm3_per_hu is not None

    def as_dict(self) -> dict[str, Any]:
        """The ``calibration`` block of results.json (method-specific keys come from ``details``)."""
        out: dict[str, Any] = {
            "method": self.method,
            "slope": self.slope_mg_cm3_per_hu,
            "intercept": self.intercept_mg_cm3,
            "muscle_hu": None,
            "fat_hu": None,
            "muscle_density_mg_cm3": None,
            "fat_density_mg_cm3": None,
        }
        for key in ("muscle_hu", "fat_hu", "muscle_density_mg_cm3", "fat_density_mg_cm3", "note", "source_file"):
            if key in self.details:
                out[key] = self.details[key]
        out["details"] = {k: v for k, v in self.details.items() if k not in out}
        return out


CalibrationMethod = Callable[[Volume, dict[str, np.ndarray], Volume | None, Any], Calibration]
CALIBRATIONS: dict[str, CalibrationMethod] = {}


def register_calibration(name: str) -> Callable[[CalibrationMethod], CalibrationMethod]:
    """Decorator adding a method to :data:`CALIBRATIONS` under ``name``."""

    def decorate(func: CalibrationMethod) -> CalibrationMethod:
        CALIBRATIONS[name] = func
        return func

    return decorate


def check_options(options: Any) -> None:
    """Fail early (before any segmentation) on an unknown method or a phantom line without numbers."""
    if options.calibration not in CALIBRATIONS:
        raise InputError(f"unknown calibration method {options.calibration!r}; choose from {', '.join(CALIBRATIONS)}")
    if options.calibration == "phantom":
        params = dict(options.calibration_params or {})
        if params.get("file"):
            params.update(read_phantom_file(params["file"]))
        if params.get("slope") is None or params.get("intercept") is None:
            raise InputError(
                "calibration 'phantom' needs a slope and an intercept (--slope/--intercept or --calibration-file)"
            )
    if options.calibration in ("inscan", "auto"):
        from .calibration_pad import pad_densities

        pad_densities(dict(options.calibration_params or {}))


def calibrate(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: Any) -> Calibration:
    """Run the method ``options.calibration``; unknown names raise :class:`InputError`."""
    method = CALIBRATIONS.get(options.calibration)
    if method is None:
        raise InputError(f"unknown calibration method {options.calibration!r}; choose from {', '.join(CALIBRATIONS)}")
    return method(ct, rois, labels, options)


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


def _younger_group(age_years: float | None) -> bool:
    """The source's younger group (under 38 y); an unknown age counts as the older one."""
    return age_years is not None and age_years < PSOAS_FAT_AGE_SPLIT_Y


def typical_psoas_fat_fraction(age_years: float | None) -> float:
    """Adipose volume fraction of an adult psoas at ``age_years`` (None: older adult), see
    :data:`PSOAS_FAT_FRACTION_OLDER`."""
    return PSOAS_FAT_FRACTION_YOUNG if _younger_group(age_years) else PSOAS_FAT_FRACTION_OLDER


def psoas_fat_sd(age_years: float | None) -> float:
    """Between-subject SD of the psoas fat fraction at ``age_years`` (None: older adult)."""
    return PSOAS_FAT_SD_YOUNG if _younger_group(age_years) else PSOAS_FAT_SD_OLDER


def slope_relative_sd(fat_sd: float, kvp: float, marrow_fat_fraction: float, psoas_d: float, fat_d: float) -> float:
    """Relative SD (1 SD) of the muscle-fat line's slope from the patient's psoas fat deviating from the
    assumed value by ``fat_sd``: the psoas' true HA-equivalent moves by ``fat_sd * (lean - fat)`` while the
    line keeps the assumed one, so the slope moves by that over ``psoas_d - fat_d``. A reading ``v`` (mg/cm3)
    then has SD ``rel * (v - fat_d)`` (the line pivots on the fat point); an areal BMD, mineral over soft
    tissue, ``rel * aBMD``."""
    lean_d, adipose_d = muscle_fat_densities(kvp, marrow_fat_fraction, 0.0)
    return float(fat_sd * (lean_d - adipose_d) / (psoas_d - fat_d))


@lru_cache(maxsize=128)
def muscle_fat_densities(kvp: float = REFERENCE_KVP,
                         marrow_fat_fraction: float = REFERENCE_MARROW_FAT_FRACTION,
                         psoas_fat_fraction: float = PSOAS_FAT_FRACTION_OLDER) -> tuple[float, float]:
    """(psoas, fat) HA-equivalent densities (mg/cm3) under a ``kvp`` beam on a marrow base with
    ``marrow_fat_fraction`` yellow marrow, the psoas holding ``psoas_fat_fraction`` adipose tissue (see the
    comment at :data:`MUSCLE_DENSITY_MG_CM3`)."""
    from . import materials as mat

    beam = mat.Beam(kvp=float(kvp))
    base = mat.trabecular_bone(0.0, float(marrow_fat_fraction))
    psoas = mat.mix({"muscle": 1.0 - float(psoas_fat_fraction), "adipose": float(psoas_fat_fraction)}) \
        if psoas_fat_fraction > 0 else "muscle"
    return (mat.ha_equivalent_mg_cm3(psoas, beam, base=base), mat.ha_equivalent_mg_cm3("adipose", beam, base=base))


@register_calibration("muscle-fat")
def _muscle_fat(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: Any) -> Calibration:
    from .calibration_internal import base_marrow_fat_fraction, known_kvp, marrow_fat_term

    muscle_hu = roi_mean_hu(ct, rois, "muscle_roi", "muscle")
    fat_hu = roi_mean_hu(ct, rois, "fat_roi", "fat")
    if muscle_hu - fat_hu < MIN_MUSCLE_FAT_CONTRAST_HU:
        raise SegmentationError(
            f"muscle ROI ({muscle_hu:.0f} HU) and fat ROI ({fat_hu:.0f} HU) differ by less than "
            f"{MIN_MUSCLE_FAT_CONTRAST_HU:.0f} HU: check the ROIs"
        )
    params = dict(getattr(options, "calibration_params", None) or {})
    kvp = known_kvp(ct, params)
    kvp_assumed = kvp is None
    kvp = REFERENCE_KVP if kvp is None else round(kvp, 1)  # rounded: cache-friendly
    age = getattr(options, "patient_age", None)
    marrow_fat = base_marrow_fat_fraction(params, age)
    user_psoas_fat = params.get("psoas_fat_fraction")
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
        "marrow_fat": marrow_fat_term(kvp, marrow_fat, params, age, slope),
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


@register_calibration("hu")
def _hu_only(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: Any) -> Calibration:
    details: dict[str, Any] = {
        "note": "no calibration: trabecular HU only (vBMD and ACR category not given). HU cut-offs such as "
        "Pickhardt 2013 (L1 <= 110 HU specific, <= 160 HU sensitive for DXA osteoporosis) are scanner-dependent "
        "screening thresholds, not vBMD categories."
    }
    for key, name in (("muscle_roi", "muscle_hu"), ("fat_roi", "fat_hu")):
        if rois.get(key) is not None and rois[key].any():
            details[name] = float(ct.array[rois[key]].mean())
    return Calibration("hu", None, None, details)


def read_phantom_file(path: str | Path) -> dict[str, Any]:
    """``{"slope", "intercept", "source_file"}`` from a calib.json (``obmd calibrate-phantom``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {"slope": float(data["slope"]), "intercept": float(data["intercept"]), "source_file": str(path)}
    except FileNotFoundError as exc:
        raise InputError(f"{path}: calibration file not found") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a calibration file with 'slope' and 'intercept' ({exc})") from exc


@register_calibration("phantom")
def _phantom(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: Any) -> Calibration:
    params = dict(options.calibration_params or {})
    if params.get("file"):
        params = {**read_phantom_file(params["file"]), **{k: v for k, v in params.items() if k != "file"}}
    if params.get("slope") is None or params.get("intercept") is None:
        raise InputError(
            "calibration 'phantom' needs a slope and an intercept (--slope/--intercept or --calibration-file)"
        )
    slope, intercept = float(params["slope"]), float(params["intercept"])
    if not np.isfinite(slope) or slope <= 0 or not np.isfinite(intercept):
        raise InputError(f"phantom calibration slope {slope} / intercept {intercept}: need a finite positive slope")
    details = {k: v for k, v in params.items() if k not in ("slope", "intercept")}
    for key, name in (("muscle_roi", "muscle_hu"), ("fat_roi", "fat_hu")):
        if rois.get(key) is not None and rois[key].any():
            details[name] = float(ct.array[rois[key]].mean())
    return Calibration("phantom", slope, intercept, details)


# Other engineers' methods register themselves on import.
from . import calibration_internal as _calibration_internal  # noqa: E402,F401
from . import calibration_pad as _calibration_pad  # noqa: E402,F401  (inscan, auto)
