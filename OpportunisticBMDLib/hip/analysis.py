"""``analyze_hips``: CTXA-like areal BMD of each femur in view (see :mod:`OpportunisticBMDLib.hip`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from ..labels import LABELS
from ..volume import Volume
from . import tscores
from .density import femur_mineral_mg_cm3
from .geometry import FemurGeometry, femur_geometry
from .local_calibration import MUSCLE_SHELL_MM, decide_shift, local_tissue_hu, offset_field_on_grid
from .projection import DEFAULT_PIXEL_MM, DEFAULT_STEP_MM, Projection, project
from .regions import REGION_NAMES, HipRegions, build_regions, region_stats

FEMUR_LABELS = {"left": LABELS["femur_left"], "right": LABELS["femur_right"]}
# Cortical bone stays below ~2000 HU at 80-140 kVp; stainless steel, Co-Cr and titanium implants read
# > 3000 HU (often saturating at 3071). 2500 HU separates them with margin.
METAL_HU = 2500.0
METAL_NEAR_MM = 10.0
METAL_MIN_VOLUME_MM3 = 50.0  # a few voxels of streak are not an implant
# Mineral outside the femur label but inside this distance is counted (cortex partial volume, blur).
MINERAL_DILATION_MM = 3.0
BASELINE_SHELL_MM = (4.0, 10.0)  # soft tissue around the femur that sets the DXA "zero"
SOFT_TISSUE_HU = (-20.0, 120.0)  # lean soft tissue (muscle, tendon, capsule), not fat
MIN_FEMUR_VOLUME_MM3 = 20_000.0  # less than a femoral head (~45 cm^3): not a measurable hip
NECK_SHAFT_RANGE_DEG = (110.0, 150.0)  # adult range ~120-140 deg; outside 110-150 is implausible
OTHER_BONE_LABELS = tuple(
    v for k, v in LABELS.items() if k.startswith(("vertebra_", "rib", "hip_")) or k in ("sacrum", "metal")
)


class HasToMgCm3(Protocol):
    def to_mg_cm3(self, hu: np.ndarray) -> np.ndarray: ...


@dataclass
class HipPicture:
    """What a viewer needs to draw one hip: the projection, its regions and the numbers."""

    side: str
    projection: Projection
    regions: HipRegions
    geometry: FemurGeometry
    results: dict[str, Any]
    patient_age: float | None = None
    patient_sex: str | None = None


@dataclass
class HipOptions:
    pixel_mm: float = DEFAULT_PIXEL_MM
    step_mm: float = DEFAULT_STEP_MM
    mineral_dilation_mm: float = MINERAL_DILATION_MM
    subtract_soft_tissue: bool = True
    cortical_correction: bool = True  # cortical bone is not HA in marrow (see hip/density.py)
    kvp: float | None = None  # tube voltage of the scan (DICOM); None: 120 kVp
    patient_age: float | None = None  # years, for the Z-scores (AnalysisOptions, header resolved)
    patient_sex: str | None = None  # "F" | "M", for the Z-scores
    slope_relative_sd: float | None = None  # 1 SD of the line's slope at the hip (relative); None: none stated
    # Transfer the calibration to the hip's slices from the muscle around the femur (hip/local_calibration.py)
    local_calibration: bool = True
    z_reference: dict | None = None  # age/sex reference table for Z-scores (tscores.load_age_reference)
    extra: dict[str, Any] = field(default_factory=dict)


def _qc(code: str, severity: str, message: str) -> dict[str, str]:
    return {"code": code, "severity": severity, "message": message}


def _crop_box(mask: np.ndarray, margin_vox: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin_vox`` per axis (from per-axis projections: no index list
    of a whole-scan mask)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo = max(int(hit[0]) - int(margin_vox[axis]), 0)
        hi = min(int(hit[-1]) + 1 + int(margin_vox[axis]), mask.shape[axis])
        box.append(slice(lo, hi))
    return tuple(box)


def _empty_side(reason: str) -> dict[str, Any]:
    out: dict[str, Any] = {r: None for r in REGION_NAMES}
    out.update(category=None, neck_axis_angle_deg=None, neck_shaft_angle_deg=None, excluded_reason=reason, qc=[])
    return out


# Pelvis-labelled voxels this close to the femur label are candidates; the neck is the stretch of the neck
# axis from the head's surface to 2.2 head radii (the trochanters), in 2 mm slabs whose radius is the 95th
# percentile of the femur label's own distance from the axis. On digital patients the true labels gain no
# voxel; the shipped model's labels regain 72-253 voxels of neck cortex (neck aBMD -10.7 / -9.3 % ->
# -2.5 / -5.6 %, docs/hip-method.md). (A mirrored-sector envelope recovered less and took true pelvis.)
RECLAIM_NEAR_MM = 4.0
RECLAIM_SLAB_MM = 2.0
RECLAIM_RADIUS_PERCENTILE = 95.0
RECLAIM_NECK_START_HEAD_RADII = 1.0
RECLAIM_NECK_END_HEAD_RADII = 2.2


def reclaim_neck(mask: np.ndarray, label_arr: np.ndarray, geom: FemurGeometry,
                 spacing: tuple[float, ...]) -> np.ndarray:
    """Pelvis-labelled voxels inside the femoral neck belong to the femur: a segmentation may give the
    inferior neck's cortex, which lies close to the ischium, to the pelvis. The neck is taken as the femur
    label's own extent around the neck axis (per slab, see :data:`RECLAIM_RADIUS_PERCENTILE`) between the
    head and the trochanters; the acetabulum and ischium lie outside it (joint space, capsule). Returns
    the voxels to add to the femur mask."""
    out = np.zeros_like(mask)
    near = np.isin(label_arr, (LABELS["hip_left"], LABELS["hip_right"])) & within_mm(mask, RECLAIM_NEAR_MM, spacing)
    if not near.any():
        return out
    axis = geom.neck_axis / np.linalg.norm(geom.neck_axis)

    def axial_radial(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = points * np.asarray(spacing) - geom.head_centre_mm
        t = rel @ axis
        return t, np.linalg.norm(rel - np.outer(t, axis), axis=1)

    t_f, r_f = axial_radial(np.argwhere(mask))
    cand = np.argwhere(near)
    t_p, r_p = axial_radial(cand)
    lo = RECLAIM_NECK_START_HEAD_RADII * geom.head_radius_mm
    hi = RECLAIM_NECK_END_HEAD_RADII * geom.head_radius_mm
    keep = np.zeros(len(cand), bool)
    for a in np.arange(lo, hi, RECLAIM_SLAB_MM):
        in_f = (t_f >= a) & (t_f < a + RECLAIM_SLAB_MM)
        if in_f.any():
            radius = np.percentile(r_f[in_f], RECLAIM_RADIUS_PERCENTILE)
            keep |= (t_p >= a) & (t_p < a + RECLAIM_SLAB_MM) & (r_p <= radius)
    out[tuple(cand[keep].T)] = True
    return out


# Segmentation check: dense bone (> LABEL_CHECK_DENSE_HU) within LABEL_CHECK_NEAR_MM outside the femur label,
# relative to the dense bone inside it. With reference labels this is the acetabulum's share, 0.24-0.31 on
# digital patients; a femur label missing much of the bone reads higher (1.9 on a patient whose model
# labels read the neck 19 % low).
LABEL_CHECK_DENSE_HU = 500.0
LABEL_CHECK_NEAR_MM = 4.0
LABEL_CHECK_MAX_RATIO = 0.6


def dense_bone_outside_ratio(ct_hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...],
                             distance_mm: np.ndarray | None = None) -> float:
    """Dense voxels just outside ``mask`` over dense voxels inside it (see :data:`LABEL_CHECK_MAX_RATIO`).
    ``distance_mm``: :func:`distance_outside_mm` of ``mask``, when the caller has it."""
    dense = ct_hu > LABEL_CHECK_DENSE_HU
    inside = int((dense & mask).sum())
    outside = int((dense & within_mm(mask, LABEL_CHECK_NEAR_MM, spacing, distance_mm) & ~mask).sum())
    return outside / max(inside, 1)


def distance_outside_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance (mm, exact under anisotropic spacing) of each voxel from ``mask`` (0 inside)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing)


def within_mm(mask: np.ndarray, distance_mm: float, spacing: tuple[float, ...],
              distance_map_mm: np.ndarray | None = None) -> np.ndarray:
    """Voxels within ``distance_mm`` of ``mask`` (``distance_map_mm``: its :func:`distance_outside_mm`,
    computed here when not given)."""
    if not mask.any():
        return mask.copy()
    if distance_map_mm is None:
        distance_map_mm = distance_outside_mm(mask, spacing)
    return distance_map_mm <= distance_mm + 1e-6


def metal_near(ct_hu: np.ndarray, label_arr: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...],
               distance_mm: np.ndarray | None = None) -> float:
    """Volume (mm^3) of metal (label 60 or CT > METAL_HU) in or within METAL_NEAR_MM of ``mask``."""
    near = within_mm(mask, METAL_NEAR_MM, spacing, distance_mm)
    metal = near & ((ct_hu > METAL_HU) | (label_arr == LABELS["metal"]))
    return float(metal.sum() * np.prod(spacing))


def measure_side(
    hu: np.ndarray, label_arr: np.ndarray, side: str, spacing: tuple[float, float, float],
    to_mg_cm3, opts: HipOptions, fov_shape: tuple[int, int, int], crop: tuple[slice, ...],
    density_is_mineral: bool = False, geometry: FemurGeometry | None = None,
) -> tuple[dict[str, Any], Projection, HipRegions, FemurGeometry, np.ndarray]:
    """Measure one femur on a cropped grid. ``hu`` is CT (or, with ``density_is_mineral``, the true
    mineral density in mg/cm^3). Returns results, projection, regions, geometry, mineral mask."""
    mask = label_arr == FEMUR_LABELS[side]
    qc: list[dict[str, str]] = []
    geom = geometry or femur_geometry(mask, spacing, side)
    if not density_is_mineral:  # the truth's labels are exact
        extra = reclaim_neck(mask, label_arr, geom, spacing)
        if extra.any():
            label_arr = np.where(extra, FEMUR_LABELS[side], label_arr)
            mask = mask | extra
            qc.append(_qc("hip_neck_relabelled", "info", f"{side} hip: {int(extra.sum())} voxels labelled pelvis "
                          "inside the femoral neck were counted as femur (check the femur/pelvis labels)"))
    dist_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    dil = dist_out <= max(opts.mineral_dilation_mm, max(spacing)) + 1e-6
    other_bone = np.isin(label_arr, OTHER_BONE_LABELS)
    mineral_mask = dil & ~other_bone
    if density_is_mineral:
        density = hu.astype(np.float32)
    else:
        density = np.asarray(to_mg_cm3(hu), dtype=np.float32)
        baseline = 0.0
        if opts.subtract_soft_tissue:
            # DXA measures mineral over the adjacent soft tissue: in the rim around the cortex only the
            # excess over lean soft tissue (the local muscle level) is mineral (cortex blurred out of
            # the label); fat or muscle there is not, so the excess is clipped at zero.
            inner, outer = BASELINE_SHELL_MM
            shell = (dist_out > inner) & (dist_out <= outer)
            shell &= ~other_bone & (hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1]) & ~np.isin(
                label_arr, tuple(FEMUR_LABELS.values()))
            baseline = float(np.median(density[shell])) if shell.sum() > 20 else 0.0
            rim = mineral_mask & ~mask
            density = np.where(rim, np.maximum(density - baseline, 0.0), density)
        if opts.cortical_correction:
            depth_mm = ndimage.distance_transform_edt(mask, sampling=spacing)  # 0 outside the femur
            density = femur_mineral_mg_cm3(density, depth_mm, opts.kvp, getattr(to_mg_cm3, "__self__", None) and
                                           getattr(to_mg_cm3.__self__, "slope_mg_cm3_per_hu", None), spacing,
                                           rim_baseline_mg_cm3=baseline)
    start = np.array([c.start for c in crop], float) * np.asarray(spacing)
    fov_lo = -start - 0.5 * np.asarray(spacing)
    fov_hi = (np.asarray(fov_shape) - 0.5) * np.asarray(spacing) - start
    # Only the faces of the field of view that cut the femur matter: a ray that leaves the scanned
    # volume through soft tissue misses no bone.
    idx_full = np.argwhere(mask) + np.array([c.start for c in crop])
    fov_lo = np.where(idx_full.min(0) == 0, fov_lo, -np.inf)
    fov_hi = np.where(idx_full.max(0) == np.asarray(fov_shape) - 1, fov_hi, np.inf)
    fov = (fov_lo, fov_hi)
    proj = project(density, mask, mineral_mask, spacing, geom, opts.pixel_mm, opts.step_mm, fov_mm=fov)
    regions = build_regions(proj, geom)
    out: dict[str, Any] = {}
    for name in REGION_NAMES:
        stats = region_stats(proj, regions.masks[name])
        stats["t_score"] = tscores.t_score(stats["abmd_g_cm2"], name)
        out[name] = stats
    if not regions.neck_in_view:
        qc.append(_qc("hip_neck_cut_fov", "warning", f"{side} hip: the femoral neck box is partly outside the field of "
                      "view; the neck aBMD is unreliable"))
    withheld = None  # the total hip region's bone is not all in the image: no total hip, trochanter, intertrochanter
    if not regions.distal_border_in_view:
        withheld = _qc("hip_lesser_trochanter_outside_fov", "warning",
                       f"{side} hip: the total hip region's distal border (10 mm below the lesser trochanter) is "
                       "outside the field of view; ISCD: QCT hip acquisition must extend from the femoral head to "
                       "the proximal shaft. Total hip, trochanter and intertrochanter not reported.")
    elif not regions.total_in_view:
        withheld = _qc("hip_total_hip_cut_fov", "warning",
                       f"{side} hip: the femur is cut by the field of view within the total hip region (trochanter "
                       "or shaft at the image edge, e.g. a large patient in a small field of view); total hip, "
                       "trochanter and intertrochanter not reported.")
    if withheld:
        qc.append(withheld)
        for name in ("trochanter", "intertrochanter", "total_hip"):
            out[name] = None
    t_values = {k: (out[k] or {}).get("t_score") for k in ("neck", "total_hip")}
    if not regions.neck_in_view:
        t_values.pop("neck")  # a cut neck gives no diagnosis
    out["category"] = tscores.hip_category(t_values)
    out["neck_axis_angle_deg"] = round(geom.anteversion_deg, 1)
    out["neck_shaft_angle_deg"] = round(geom.neck_shaft_angle_deg, 1)
    out["head_radius_mm"] = round(geom.head_radius_mm, 1)
    out["excluded_reason"] = None
    out["reference"] = tscores.REFERENCE_NAME
    out["pixel_mm"] = opts.pixel_mm
    out["neck_box_mm"] = {"width_along_axis": 15.0, "length_across_axis": 49.0,
                          "centre_from_head_centre": round(regions.neck_t_mm, 1)}
    lo_ns, hi_ns = NECK_SHAFT_RANGE_DEG
    if not lo_ns <= geom.neck_shaft_angle_deg <= hi_ns:
        qc.append(_qc("hip_neck_shaft_angle_implausible", "warning",
                      f"{side} hip: neck-shaft angle {geom.neck_shaft_angle_deg:.0f} deg outside "
                      f"{lo_ns:.0f}-{hi_ns:.0f} deg: check the femur segmentation"))
    if not geom.shaft_from_data:
        qc.append(_qc("hip_shaft_not_in_view", "warning",
                      f"{side} hip: too little femoral shaft in view to find its axis; a vertical shaft was assumed"))
    # Field of view: femoral head and the femur's cut.
    c_idx = (geom.head_centre_mm / np.asarray(spacing)) + [s.start for s in crop]
    r_vox = geom.head_radius_mm / np.asarray(spacing)
    if np.any(c_idx - r_vox < -0.5) or np.any(c_idx + r_vox > np.asarray(fov_shape) - 0.5):
        qc.append(_qc("hip_head_outside_fov", "warning", f"{side} hip: the femoral head is partly outside the field "
                      "of view"))
    full_lo = np.array([s.start for s in crop])
    idx = np.argwhere(mask) + full_lo
    touches = [ax for ax in range(3) if idx[:, ax].min() == 0 or idx[:, ax].max() == fov_shape[ax] - 1]
    if touches:
        qc.append(_qc("hip_femur_cut_fov", "warning" if withheld else "info",
                      f"{side} hip: the femur is cut by the field of view "
                      f"({', '.join('kji'[a] for a in touches)} edge)"))
    out["qc"] = qc
    out["notes"] = geom.notes + regions.notes
    return out, proj, regions, geom, mineral_mask


def _roi_masks(proj: Projection, regions: HipRegions, mineral_mask: np.ndarray, spacing, crop, full_shape, side,
               reported: dict[str, Any] | None = None):
    """3D masks: mineral-mask voxels whose projection falls in each region (region 'columns')."""
    rois: dict[str, np.ndarray] = {}
    pts_idx = np.argwhere(mineral_mask)
    uvw = proj.frame.to_frame(pts_idx * np.asarray(spacing))
    row, col = proj.pixel_of_uv(uvw[:, 0], uvw[:, 1])
    ok = (row >= 0) & (row < proj.shape[0]) & (col >= 0) & (col < proj.shape[1])
    for name, reg in regions.masks.items():
        if reported is not None and reported.get(name) is None:
            continue
        sel = np.zeros(len(pts_idx), bool)
        sel[ok] = (reg & proj.mineral_footprint)[row[ok], col[ok]]
        full = np.zeros(full_shape, bool)
        p = pts_idx[sel] + [s.start for s in crop]
        full[p[:, 0], p[:, 1], p[:, 2]] = True
        rois[f"hip_{name}_roi_{side}"] = full
    return rois


def calibration_uncertainty(abmd_g_cm2: float, region: str, slope_relative_sd: float | None) -> dict[str, Any]:
    """1 SD of a region's aBMD and T-score from the calibration line's slope (an areal BMD is mineral
    over soft tissue: it scales with the slope); None when the calibration states no uncertainty."""
    if slope_relative_sd is None or not np.isfinite(abmd_g_cm2):
        return {"abmd_calibration_sd_g_cm2": None, "t_score_calibration_sd": None}
    sd = float(slope_relative_sd * abmd_g_cm2)
    t0, t1 = tscores.t_score(abmd_g_cm2, region), tscores.t_score(abmd_g_cm2 + sd, region)
    return {"abmd_calibration_sd_g_cm2": sd, "t_score_calibration_sd": None if t0 is None or t1 is None else t1 - t0}


def _calibration_block(calibration: Any, check: dict[str, Any] | None, local: dict[str, Any] | None,
                       slope_relative_sd: float | None, reference_hu: dict[str, Any] | None) -> dict[str, Any]:
    """results.json ``hip.<side>.calibration``: the line the hip used and the local check behind it (with an
    in-scan pad, ``pad_anchor``: the iliopsoas reference the check used, :mod:`.pad_anchor`)."""
    slope = getattr(calibration, "slope_mg_cm3_per_hu", None)
    intercept = getattr(calibration, "intercept_mg_cm3", None)
    shift = float(check["hu_shift"]) if check and check.get("applied") else 0.0
    out: dict[str, Any] = {
        "method": getattr(calibration, "method", None), "slope": slope, "intercept": intercept,
        "hu_shift_applied": shift,
        "slope_relative_sd": slope_relative_sd,
        "effective_intercept": None if slope is None or intercept is None else intercept - slope * shift,
        "used": "calibration line shifted to the hip's slices (local muscle check)" if shift
        else "calibration line unchanged",
        "local_check": None if check is None else {**check, **{k: v for k, v in (local or {}).items()
                                                               if k not in ("muscle_hu", "fat_hu")}},
    }
    if reference_hu is not None and "psoas_fat_source" in reference_hu:
        out["pad_anchor"] = reference_hu
    marrow = (getattr(calibration, "details", None) or {}).get("marrow_fat")
    if marrow is not None:
        out["marrow_fat"] = marrow
    return out


def _local_check_qc(side: str, check: dict[str, Any]) -> list[dict[str, str]]:
    from .local_calibration import LARGE_SHIFT_HU

    if check.get("applied"):
        d = check["hu_shift"]
        if abs(d) >= LARGE_SHIFT_HU:
            return [_qc("hip_calibration_offset", "warning", f"{side} hip: muscle around the femur reads {d:+.1f} HU "
                        "from the calibration site's muscle (scanner non-uniformity or a fattier/leaner muscle); the "
                        f"hip used the spine's line shifted by {d:+.1f} HU")]
        return []
    if check.get("muscle_hu_reference") is not None:
        return [_qc("hip_calibration_not_checked", "warning", f"{side} hip: {check['reason']}")]
    return []


def analyze_hips(
    ct: Volume, labels: Volume, calibration: HasToMgCm3, hip_options: HipOptions | None = None,
    reference_hu: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, HipPicture]]:
    """Areal BMD per Hologic-style region for each femur (labels 20/21 of our schema).

    ``reference_hu`` (:func:`.local_calibration.reference_tissue_hu`): the calibration site's muscle (and
    fat) HU; with it and ``hip_options.local_calibration`` each hip uses the calibration shifted by the
    HU difference between the muscle around its femur and that muscle (see :mod:`.local_calibration`).

    Returns ``(results, rois, pictures)``: ``results = {"left": {...}, "right": {...}}`` (see the
    package docstring), 3D ROI masks ``hip_<region>_roi_<side>`` on the CT grid, and per measured
    side a :class:`HipPicture` for display (:mod:`.pictures` renders it)."""
    opts = hip_options or HipOptions()
    spacing = tuple(float(s) for s in ct.spacing_mm)
    age, sex, rel_sd = opts.patient_age, opts.patient_sex, opts.slope_relative_sd
    results: dict[str, Any] = {}
    rois: dict[str, np.ndarray] = {}
    pictures: dict[str, HipPicture] = {}
    for side, label_id in FEMUR_LABELS.items():
        mask_full = labels.array == label_id
        volume_mm3 = float(mask_full.sum() * ct.voxel_volume_mm3)
        if volume_mm3 < MIN_FEMUR_VOLUME_MM3:
            reason = "femur not in the field of view" if volume_mm3 == 0 else (
                f"too little femur in view ({volume_mm3 / 1000:.0f} cm^3 segmented)")
            results[side] = _empty_side(reason)
            continue
        margin = np.ceil((METAL_NEAR_MM + BASELINE_SHELL_MM[1] + 2) / np.asarray(spacing)).astype(int)
        crop = _crop_box(mask_full, margin)
        hu = ct.array[crop]
        lab = labels.array[crop]
        femur_distance_mm = distance_outside_mm(lab == label_id, spacing)  # the metal and label checks share it
        metal_mm3 = metal_near(hu, lab, lab == label_id, spacing, femur_distance_mm)
        if metal_mm3 >= METAL_MIN_VOLUME_MM3:
            reason = (f"metal in or near the {side} femur ({metal_mm3 / 1000:.1f} cm^3 above {METAL_HU:.0f} HU or "
                      "labelled metal, e.g. a hip prosthesis): areal BMD not measurable")
            results[side] = _empty_side(reason)
            results[side]["qc"] = [_qc("hip_metal", "warning", f"{side} hip excluded: {reason}")]
            continue
        check = local = None
        if opts.local_calibration:
            mcrop = _crop_box(mask_full, np.ceil((MUSCLE_SHELL_MM[1] + 2.0) / np.asarray(spacing)).astype(int))
            local = local_tissue_hu(ct.array[mcrop], labels.array[mcrop], mask_full[mcrop], spacing)
            check = decide_shift(local, reference_hu)
            if check["applied"]:
                hu = hu.astype(np.float32) - np.float32(check["hu_shift"])
                # the offset varies across the femur (~5 HU SD on digital patients): the fitted field too
                origin = np.array([c.start - m.start for c, m in zip(crop, mcrop, strict=True)]) * np.asarray(spacing)
                field = offset_field_on_grid(local, hu.shape, origin, spacing)
                if field is not None:
                    hu -= field
                    femur_field = field[lab == label_id]
                    check["field_applied_hu_range_over_femur"] = [round(float(femur_field.min()), 2),
                                                                  round(float(femur_field.max()), 2)]
        try:
            out, proj, regions, geom, mineral = measure_side(
                hu, lab, side, spacing, calibration.to_mg_cm3, opts, ct.shape, crop)
        except ValueError as exc:  # e.g. no neck found: report, never crash the whole analysis
            results[side] = _empty_side(f"hip geometry failed: {exc}")
            continue
        ratio = dense_bone_outside_ratio(ct.array[crop], lab == label_id, spacing, femur_distance_mm)
        out["dense_bone_outside_label_ratio"] = round(ratio, 3)
        if ratio > LABEL_CHECK_MAX_RATIO:
            out["qc"].insert(0, _qc("hip_femur_label_incomplete", "warning", (
                f"{side} hip: dense bone just outside the femur label (within {LABEL_CHECK_NEAR_MM:.0f} mm) is "
                f"{ratio:.0%} of that inside it (reference labels: ~30 %, the acetabulum): the femur "
                "segmentation likely misses bone; no WHO category until the labels are checked")))
            out["category"] = None  # a diagnosis needs a trustworthy femur; the numbers stay for review
        out["calibration_method"] = getattr(calibration, "method", None)
        out["calibration"] = _calibration_block(calibration, check, local, rel_sd, reference_hu)
        if check is not None:
            out["qc"] = _local_check_qc(side, check) + out["qc"]
        for name in REGION_NAMES:
            if out.get(name):
                z, _ = tscores.z_score(out[name]["abmd_g_cm2"], name, age, sex, opts.z_reference)
                out[name]["z_score"] = z
                out[name].update(calibration_uncertainty(out[name]["abmd_g_cm2"], name, rel_sd))
        notes = {r: tscores.z_score(None, r, age, sex, opts.z_reference)[1] for r in ("neck", "total_hip")}
        out["z_score_note"] = notes["neck"] if notes["neck"] == notes["total_hip"] else "; ".join(
            f"{r}: {n}" for r, n in notes.items())
        out["patient_age"] = age
        out["patient_sex"] = sex
        results[side] = out
        rois.update(_roi_masks(proj, regions, mineral, spacing, crop, ct.shape, side, out))
        pictures[side] = HipPicture(side, proj, regions, geom, out, age, sex)
    return results, rois, pictures
