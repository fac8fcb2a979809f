"""Hip truth for digital phantoms: areal BMD "as a DXA would see it", from the phantom's TRUE
density map (mg/cm^3 HA, 0 outside bone) and its TRUE femur axes (truth.json
``hip.<side>.geometry``), with exactly the projection and region definitions of the measurement."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..volume import Volume
from .analysis import FEMUR_LABELS, HipOptions, _crop_box, measure_side
from .geometry import FemurGeometry, unit
from .regions import REGION_NAMES


def _lps_point_to_grid_mm(vol: Volume, xyz: Any) -> np.ndarray:
    return vol.lps_mm_to_index(np.asarray(xyz, float)) * np.asarray(vol.spacing_mm)


def _lps_dir_to_grid(vol: Volume, direction: Any) -> np.ndarray:
    origin = np.asarray(vol.origin_lps_mm, float)
    return unit(_lps_point_to_grid_mm(vol, origin + np.asarray(direction, float)) - _lps_point_to_grid_mm(vol, origin))


def geometry_from_truth(vol: Volume, side: str, geometry: dict, crop_start_mm: np.ndarray) -> FemurGeometry:
    """FemurGeometry (grid mm of the crop) from truth.json ``hip.<side>.geometry`` (LPS mm)."""
    head = _lps_point_to_grid_mm(vol, geometry["head_center_lps_mm"]) - crop_start_mm
    neck = _lps_dir_to_grid(vol, geometry["neck_axis_lps"])  # head -> shaft
    shaft = _lps_dir_to_grid(vol, geometry["shaft_axis_lps"])  # distal -> proximal
    base = geometry.get("neck_shaft_base_lps_mm")
    shaft_point = (_lps_point_to_grid_mm(vol, base) - crop_start_mm) if base is not None else head
    return FemurGeometry(side, head, float(geometry["head_radius_mm"]), neck, shaft, shaft_point, True)


def hip_truth(density_mg_cm3: Volume, labels: Volume, geometry: dict, options: HipOptions | None = None) -> dict:
    """``{side: {region: {abmd_g_cm2, area_cm2, bmc_g, t_score}, category, ...}}`` for each femur in
    ``geometry`` (``{side: {"geometry": {...}}}`` or ``{side: {...geometry keys...}}``)."""
    opts = options or HipOptions()
    spacing = tuple(float(s) for s in density_mg_cm3.spacing_mm)
    out: dict[str, Any] = {}
    for side, entry in geometry.items():
        geo = entry.get("geometry", entry)
        if side not in FEMUR_LABELS or "head_center_lps_mm" not in geo:
            continue
        if entry.get("metal"):
            out[side] = {"excluded_reason": "metal (hip prosthesis)"}
            continue
        mask = labels.array == FEMUR_LABELS[side]
        if not mask.any():
            continue
        margin = np.ceil(12.0 / np.asarray(spacing)).astype(int)
        crop = _crop_box(mask, margin)
        start_mm = np.array([c.start for c in crop], float) * np.asarray(spacing)
        geom = geometry_from_truth(density_mg_cm3, side, geo, start_mm)
        res, _, regions, _, _ = measure_side(
            density_mg_cm3.array[crop], labels.array[crop], side, spacing, None, opts, density_mg_cm3.shape, crop,
            density_is_mineral=True, geometry=geom)
        side_out = {r: res[r] for r in REGION_NAMES}
        side_out.update(category=res["category"], neck_box_centre_mm=round(regions.neck_t_mm, 2),
                        qc_codes=[q["code"] for q in res["qc"]])
        out[side] = side_out
    return out
