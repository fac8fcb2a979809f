"""``phantom``: a line from a calibration phantom, given as slope/intercept or as the ``calib.json`` that
``obmd calibrate-phantom`` writes from a scan of an ESP-like phantom (three vertebrae of known HA density in
a water-equivalent body): the fit of that scan (:func:`fit_phantom_line`) and the only reader of
calib.json (:func:`read_phantom_file`) are here.

Inserts are found without labels: the vertebrae's cortical shells are bright (> ``SHELL_HU``); filling
the holes of each axial slice gives the vertebral bodies, whose inside minus a margin is the trabecular
insert. Inserts are matched to the nominal densities by rank of their mean HU (denser insert, higher HU).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..settings import AnalysisOptions, CalibrationSettings
from ..volume import Volume
from .registry import LINE_FROM_PHANTOM, register_calibration
from .types import Calibration

# European Spine Phantom (QRM): trabecular inserts of 50, 100 and 200 mg HA/cm3.
ESP_DENSITIES_MG_CM3 = (50.0, 100.0, 200.0)
# Shell threshold: an ~800 mg HA/cm3 shell reads > 900 HU at 80-140 kVp (~700 HU after blur), while a
# 200 mg/cm3 insert stays below ~400 HU even at 80 kVp.
SHELL_HU = 550.0
INSERT_MARGIN_MM = 2.0  # away from the shell: partial volume and blur
MIN_INSERT_MM3 = 300.0



@register_calibration(
    "phantom", title="phantom (a scanned calibration phantom's line)",
    help="--slope/--intercept or --calibration-file",
    validation="a calibration phantom scanned with the patient or on the same protocol (asynchronous)",
    check=lambda options: phantom_line(options.calibration_settings), needs_phantom_line=True,
    line_from=LINE_FROM_PHANTOM)
def phantom_calibration(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                        options: AnalysisOptions) -> Calibration:
    slope, intercept, details = phantom_line(options.calibration_settings)
    for key, name in (("muscle_roi", "muscle_hu"), ("fat_roi", "fat_hu")):
        if rois.get(key) is not None and rois[key].any():
            details[name] = float(ct.array[rois[key]].mean())
    return Calibration("phantom", slope, intercept, details)


def phantom_line(settings: CalibrationSettings) -> tuple[float, float, dict[str, Any]]:
    """(slope, intercept, details) from the settings' line or calib.json (the line given wins over the
    file's); :class:`InputError` when there is none or it is not a line of positive slope."""
    # the kVp is the patient scan's (settings, header), not a property of the phantom's line
    given = {k: v for k, v in settings.as_dict().items() if k != "kvp"}
    from_file = read_phantom_file(settings.file) if settings.file else {}
    params = {**from_file, **{k: v for k, v in given.items() if k != "file"}}
    if params.get("slope") is None or params.get("intercept") is None:
        raise InputError(
            "calibration 'phantom' needs a slope and an intercept (--slope/--intercept or --calibration-file)"
        )
    slope, intercept = float(params["slope"]), float(params["intercept"])
    if not np.isfinite(slope) or slope <= 0 or not np.isfinite(intercept):
        raise InputError(f"phantom calibration slope {slope} / intercept {intercept}: need a finite positive slope")
    return slope, intercept, {k: v for k, v in params.items() if k not in ("slope", "intercept")}


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


def find_inserts(ct: Volume, n_expected: int) -> list[dict]:
    """Trabecular inserts inside bright shells: list of {mask, hu_mean, hu_sd, voxel_count, centroid_mm}."""
    shell = ct.array > SHELL_HU
    filled = np.zeros_like(shell)
    for k in range(shell.shape[0]):
        if shell[k].any():
            # close one-voxel gaps in the ring (noise, partial volume) before filling
            filled[k] = ndimage.binary_fill_holes(ndimage.binary_closing(shell[k], iterations=1))
    inside = filled & ~shell
    dist = ndimage.distance_transform_edt(inside, sampling=(1e6, ct.spacing_mm[1], ct.spacing_mm[2]))
    core = dist > INSERT_MARGIN_MM
    # keep slices away from the endplates: a core slice must have an inside slice above and below
    core[1:-1] &= inside[:-2] & inside[2:]
    core[0] = core[-1] = False
    components, n = ndimage.label(core)
    voxel_mm3 = float(np.prod(ct.spacing_mm))
    inserts = []
    for index in range(1, n + 1):
        mask = components == index
        count = int(mask.sum())
        if count * voxel_mm3 < MIN_INSERT_MM3:
            continue
        values = ct.array[mask]
        inserts.append({"mask": mask, "hu_mean": float(values.mean()), "hu_sd": float(values.std()),
                        "voxel_count": count, "volume_mm3": count * voxel_mm3,
                        "centroid_index": [float(c) for c in np.argwhere(mask).mean(axis=0)]})
    # the n_expected largest, in order of HU
    inserts.sort(key=lambda d: d["voxel_count"], reverse=True)
    inserts = inserts[:n_expected]
    inserts.sort(key=lambda d: d["hu_mean"])
    return inserts


def fit_phantom_line(ct: Volume, densities_mg_cm3: Sequence[float]) -> dict[str, Any]:
    """Least-squares line mg/cm3 = intercept + slope * HU through the inserts (what calib.json holds)."""
    densities = sorted(float(d) for d in densities_mg_cm3)
    inserts = find_inserts(ct, len(densities))
    if len(inserts) != len(densities):
        raise InputError(
            f"found {len(inserts)} phantom inserts inside bright shells, expected {len(densities)}: "
            "is this a scan of the calibration phantom?"
        )
    hu_values = np.array([d["hu_mean"] for d in inserts])
    slope, intercept = np.polyfit(hu_values, densities, 1)
    predicted = intercept + slope * hu_values
    if slope <= 0:
        raise InputError("phantom inserts do not increase in HU with density: check --densities")
    return {
        "method": "phantom",
        "slope": float(slope),
        "intercept": float(intercept),
        "slope_mg_cm3_per_hu": float(slope),
        "intercept_mg_cm3": float(intercept),
        "inserts": [
            {"density_mg_cm3": d, "hu_mean": ins["hu_mean"], "hu_sd": ins["hu_sd"], "voxel_count": ins["voxel_count"],
             "volume_mm3": ins["volume_mm3"], "residual_mg_cm3": float(d - p)}
            for d, ins, p in zip(densities, inserts, predicted, strict=True)
        ],
        "max_residual_mg_cm3": float(np.max(np.abs(np.asarray(densities) - predicted))),
        "source": str(ct.metadata.get("path", "")),
        "kvp": ct.metadata.get("kvp"),
    }
