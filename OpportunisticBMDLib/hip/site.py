"""The hip as a measurement site of :func:`OpportunisticBMDLib.pipeline.measure`, a peer of the spine:
each femur in view measured on the spine's :class:`Calibration` (the same object, kept), its line's
uncertainty at the hip and the reference the hip's local check uses decided here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..labels import LABELS
from ..settings import AnalysisOptions
from ..volume import Volume
from .analysis import FEMUR_LABELS, HipOptions, HipPicture, _empty_side, analyze_hips
from .local_calibration import reference_tissue_hu
from .pad_anchor import PAD_METHODS, hip_relative_sd, pad_muscle_reference
from .tscores import load_age_reference


@dataclass
class HipSiteResult:
    results: dict[str, Any]  # results.json "hip": {"left": {...}, "right": {...}}
    rois: dict[str, np.ndarray] = field(default_factory=dict)  # hip_<region>_roi_<side> on the CT grid
    pictures: dict[str, HipPicture] = field(default_factory=dict)  # hip_<side>

    @property
    def qc(self) -> list[dict[str, str]]:
        """Each side's QC flags, for the scan's QC list."""
        return [flag for side in ("left", "right") for flag in (self.results.get(side, {}).get("qc") or [])]


def femur_in_view(labels: Volume | None) -> bool:
    return labels is not None and bool(np.isin(labels.array, (LABELS["femur_left"], LABELS["femur_right"])).any())


def hip_options_for(options: AnalysisOptions, slope_relative_sd: float | None) -> HipOptions:
    """The hip's options from the analysis' (header defaults resolved): the same kVp as the calibration's (the
    user's or the header's), the patient's age and sex for the Z-scores, the line's 1 SD at the hip."""
    return HipOptions(kvp=options.calibration_settings.kvp, patient_age=options.patient_age,
                      patient_sex=options.patient_sex, slope_relative_sd=slope_relative_sd,
                      z_reference=load_age_reference(options.z_reference) if options.z_reference else None)


def measure_hip_site(ct: Volume, labels: Volume, calibration: Calibration, spine_rois: dict[str, np.ndarray],
                     options: AnalysisOptions) -> HipSiteResult:
    """Areal BMD of each femur in ``labels`` on ``calibration`` (the spine's); ``options`` with the header
    defaults resolved (age, sex, kVp). ``spine_rois``: the calibration site's reference tissue ROIs."""
    if not calibration.calibrated:
        reason = "no density calibration (HU only): areal BMD needs mg/cm3; choose a calibration method"
        return HipSiteResult({side: _empty_side(reason) for side, lab in FEMUR_LABELS.items()
                              if (labels.array == lab).any()})
    details = calibration.details
    relative_sd = calibration.slope_relative_sd
    marrow = details.get("marrow_fat")  # the line's marrow base and its fat error (calibration.composition)
    marrow_hu_sd = marrow["hu_sd"] if marrow else 0.0
    if calibration.method in PAD_METHODS:
        # the pad's line holds at the pad, outside the body: the hip's muscle is checked against a typical
        # iliopsoas under that line (pad_anchor), not against the psoas ROI (itself offset by the body)
        reference = pad_muscle_reference(details, calibration.slope_mg_cm3_per_hu, calibration.intercept_mg_cm3,
                                         options.patient_age, options.calibration_settings.psoas_fat_fraction)
        relative_sd = hip_relative_sd(relative_sd, reference["muscle_hu_sd"], marrow_hu_sd)
    else:
        # the calibration site's reference tissues (spine ROIs): the hip checks its own muscle against them
        reference = reference_tissue_hu(ct.array, spine_rois)
        if relative_sd is not None:  # None: the line states no uncertainty (user densities): none added
            relative_sd = hip_relative_sd(relative_sd, marrow_hu_sd)
    results, rois, pictures = analyze_hips(ct, labels, calibration, hip_options_for(options, relative_sd),
                                           reference_hu=reference)
    return HipSiteResult(results, rois, {f"hip_{side}": pic for side, pic in pictures.items()})
