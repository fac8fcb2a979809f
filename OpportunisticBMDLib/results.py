"""The ``results.json`` contract (docs/results-contract.md): building it, its CSV row, writing both."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

SCHEMA_VERSION = 1
# ACR–SPR–SSR Practice Parameter for the Performance of Quantitative Computed Tomography (QCT) Bone
# Mineral Density (2018 revision): mean trabecular vBMD of two lumbar vertebrae > 120 mg/cm3 normal,
# 80-120 low bone mass (osteopenia), < 80 osteoporosis (the Chinese QCT guideline 2018 uses the same).
ACR_NORMAL_ABOVE_MG_CM3 = 120.0
ACR_OSTEOPOROSIS_BELOW_MG_CM3 = 80.0
ACR_SOURCE = ("ACR-SPR-SSR practice parameter for QCT bone densitometry (2018): "
              ">120 normal, 80-120 osteopenia, <80 osteoporosis")
# Summary levels in order of preference: L1-L2 as in clinical QCT, then the nearest lumbar/thoracolumbar.
PREFERRED_LEVELS = ("L1", "L2", "L3", "T12", "L4", "T11", "L5")

LEVEL_KEYS = (
    "vbmd_mg_cm3", "trabecular_hu_mean", "trabecular_hu_median", "trabecular_hu_sd", "voxel_count",
    "roi_volume_mm3", "body_volume_mm3", "erosion_radius_mm", "cut_by_fov",
    "height_anterior_mm", "height_middle_mm", "height_posterior_mm", "height_loss",
    "valid", "naming_confidence", "segmentation_confidence",
)


def acr_category(vbmd_mg_cm3: float | None) -> str | None:
    """``normal`` / ``osteopenia`` / ``osteoporosis`` (ACR: "low bone mass" is the middle one)."""
    if vbmd_mg_cm3 is None or not math.isfinite(vbmd_mg_cm3):
        return None
    if vbmd_mg_cm3 > ACR_NORMAL_ABOVE_MG_CM3:
        return "normal"
    if vbmd_mg_cm3 >= ACR_OSTEOPOROSIS_BELOW_MG_CM3:
        return "osteopenia"
    return "osteoporosis"


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, containers recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_results(
    *,
    input_info: dict[str, Any],
    levels: dict[str, dict[str, Any]],
    calibration: dict[str, Any],
    qc: list[dict[str, str]],
    options: dict[str, Any],
    models: dict[str, Any] | None = None,
    tissues: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results.json dict (keys documented in docs/results-contract.md)."""
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "input": input_info,
        "software": {"name": "OpportunisticBMD", "version": __version__, "models": models or {}},
        "options": options,
        "spine": {"levels": levels, "summary": {}},  # validity.finalize fills it, with the status
        "calibration": calibration,
        "tissues": tissues or {},
        "qc": qc,
    })


def csv_row(results: dict[str, Any]) -> dict[str, Any]:
    """One flat row per scan for cohort tables: ``<level>_<key>`` columns for every measured level."""
    spine = results.get("spine", {})
    summary = spine.get("summary", {})
    cal = results.get("calibration", {})
    inp = results.get("input", {})
    row: dict[str, Any] = {
        "ct": inp.get("ct"),
        "status": results.get("status"),
        "status_reasons": ";".join(r.get("code", "") for r in results.get("status_reasons") or []),
        "summary_vbmd_mg_cm3": summary.get("vbmd_mg_cm3"),
        "summary_trabecular_hu_mean": summary.get("trabecular_hu_mean"),
        "summary_levels_used": "-".join(summary.get("levels_used") or []),
        "summary_category": summary.get("category"),
        "calibration_method": cal.get("method"),
        "calibration_slope": cal.get("slope"),
        "calibration_intercept": cal.get("intercept"),
        "muscle_hu": cal.get("muscle_hu"),
        "fat_hu": cal.get("fat_hu"),
        "muscle_density_mg_cm3": cal.get("muscle_density_mg_cm3"),
        "fat_density_mg_cm3": cal.get("fat_density_mg_cm3"),
    }
    for level, values in spine.get("levels", {}).items():
        for key in LEVEL_KEYS:
            row[f"{level}_{key}"] = values.get(key)
    for side, regions in (results.get("hip") or {}).items():
        if isinstance(regions, dict):
            row[f"hip_{side}_category"] = regions.get("category")
            for region, values in regions.items():
                if isinstance(values, dict):
                    for key in ("abmd_g_cm2", "t_score"):
                        if key in values:
                            row[f"hip_{side}_{region}_{key}"] = values[key]
    qc = results.get("qc", [])
    row["qc_errors"] = sum(1 for q in qc if q.get("severity") == "error")
    row["qc_warnings"] = sum(1 for q in qc if q.get("severity") == "warning")
    row["qc_codes"] = ";".join(sorted({q.get("code", "") for q in qc}))
    return row


def write_json(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=2) + "\n")
    return path


def write_csv(rows: list[dict[str, Any]] | dict[str, Any], path: str | Path) -> Path:
    """Write one row (a dict) or several; columns are the union of keys in first-seen order."""
    rows = [rows] if isinstance(rows, dict) else rows
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path
