"""Cases for the QC-bias benchmarks (``thickness``, ``muscle-substitution``): a thin digital patient or a
real CT with its labels, measured spine-only (``pipeline.derive_rois`` + ``pipeline.measure``, no hip).
Shared helpers, not a benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..volume import Volume


@dataclass
class Case:
    name: str
    ct: Volume
    labels: Volume  # our schema
    truth: dict | None  # truth.json of a digital patient; None for a real CT


def digital_patient(seed: int, **phantom_options: Any) -> Case:
    """Digital patient ``seed`` (region "spine" unless given), the kVp in the CT's metadata as DICOM has it."""
    from . import _cohort

    scan = _cohort.generate(int(seed), None, **phantom_options)
    scan.ct.metadata["patient_age"] = _cohort.patient_age(scan.truth)
    return Case(f"seed {seed}", scan.ct, scan.labels, scan.truth)


def real_case(ct_path: str, seg_path: str) -> Case:
    """A CT file and its label map (our schema or TotalSegmentator ``total``), labels mapped to ours."""
    from .. import io
    from ..pipeline import prepare_labels

    ct = io.read_ct(ct_path)
    labels = prepare_labels(io.read_labels(seg_path, like=ct), ct)
    return Case(str(ct_path), ct, labels, None)


def spine_summary(ct: Volume, labels: Volume, calibration: str = "auto",
                  erosion_radius_mm: float | None = None) -> dict[str, Any]:
    """L1-L2 vBMD (the two levels measured, withheld or not), its stated SD, the levels' values, reference HU
    and the QC codes."""
    from ..pipeline import derive_rois, measure
    from ..settings import AnalysisOptions

    options = AnalysisOptions(calibration=calibration) if erosion_radius_mm is None else \
        AnalysisOptions(calibration=calibration, erosion_radius_mm=float(erosion_radius_mm))
    geometry: dict = {}
    rois = derive_rois(ct, labels, options, geometry_out=geometry)
    results = measure(ct, rois, options, labels, geometry=geometry).results
    summary = results["spine"]["summary"]
    cal = results["calibration"]
    levels = results["spine"]["levels"]
    # the measured L1-L2 pair even where the validity rule withholds the summary (the bias is what is measured)
    pair = [levels[lvl] for lvl in ("L1", "L2") if lvl in levels and levels[lvl].get("voxel_count")]
    measured = len(pair) == 2 and all(v.get("vbmd_mg_cm3") is not None for v in pair)
    return {
        "vbmd_mg_cm3": float(np.mean([v["vbmd_mg_cm3"] for v in pair])) if measured else summary.get("vbmd_mg_cm3"),
        "trabecular_hu_mean": float(np.mean([v["trabecular_hu_mean"] for v in pair])) if measured
        else summary.get("trabecular_hu_mean"),
        "withheld_reasons": summary.get("withheld_reasons") or [],
        "stated_sd_mg_cm3": summary.get("vbmd_calibration_sd_mg_cm3"),
        "levels_used": summary.get("levels_used"),
        "category": summary.get("category"),
        "levels": {lvl: v.get("vbmd_mg_cm3") for lvl, v in results["spine"]["levels"].items()},
        "calibration_method": cal.get("method"),
        "muscle_hu": cal.get("muscle_hu"),
        "fat_hu": cal.get("fat_hu"),
        "muscle_roi_source": cal.get("muscle_roi_source"),
        "qc": [dict(q) for q in results["qc"]],
    }


def true_l1_l2(truth: dict | None) -> float | None:
    levels = (truth or {}).get("spine", {}).get("levels", {})
    values = [levels[lvl]["vbmd_mg_cm3"] for lvl in ("L1", "L2") if lvl in levels]
    return float(np.mean(values)) if len(values) == 2 else None


def describe(values: list[float]) -> dict[str, float | int | None]:
    """Mean, SD, min, max and n of ``values`` (None-free)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(arr.size), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max())}
