"""Local calibration check at the hip: is the spine's HU -> mg/cm^3 line valid at the femur's slices?

A phantomless (or asynchronous) calibration holds where its reference tissues were measured: for
``muscle-fat`` and ``internal-multi`` the psoas ROI and the subcutaneous fat ROI at T11-L4
(``rois["muscle_roi"]``, ``rois["fat_roi"]``). CT numbers drift across the field of view with beam
hardening (cupping: the body centre reads low), scatter and the wider pelvis, so muscle at the hip may
read several HU away from muscle at L1 on the same scan. An HU offset ``d`` at the femur moves every
bone voxel by ``slope * d`` mg/cm^3, i.e. the femoral neck aBMD by ~0.3-0.5 % per HU.

The check reads the muscle wrapping the proximal femur (the labelled iliopsoas and gluteal/thigh
muscles, :data:`MUSCLE_SHELL_MM` from the femur surface, over the head-to-lesser-trochanter slices),
fits it as one level per muscle group plus one smooth second-order offset field (the scanner's
offset varies smoothly across the hip -- cupping is bowl-shaped; muscles differ in fat content) and
takes the iliopsoas level at the centre of the proximal femur (:func:`local_tissue_hu`). The
iliopsoas is the same muscle as the calibration site's psoas ROI, so the difference between the two
is the scanner's HU offset between the sites, not a composition difference; the gluteal and thigh
muscles (often fattier than the psoas: reading them directly over-corrects by up to ~10 HU in older
digital patients) only inform the offset field. The hip then uses the spine's line shifted by that
many HU, i.e. the same calibration made valid at its own slice range. Only the offset (intercept) is
transferred: the slope stays the spine's.

Why muscle and not fat: muscle wraps the femur, so it sees the same offset (cupping is largest in the
body centre, where the femur lies); subcutaneous fat lies at the body surface, where cupping vanishes,
so it is reported as a check but not used for the shift.

Limitations (stated in results.json): the second-order field is a model of the scanner's offset
over ~10 cm (on 24 digital-patient hips the muscle level at the femur centre was found within
1.4 HU, RMS 0.6 HU, of the femur's own mean offset; a first-order field left up to 5 HU on the steepest
field, the plain mean of all muscle up to 9 HU from fattier gluteal muscle); without iliopsoas
near the femur the other muscles' level is used and their extra fat reads as offset (flagged in
``muscle_anchor``). A shift larger than :data:`MAX_SHIFT_HU` is not applied (muscle segmentation or
contrast problem, flagged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, stats

from ..labels import LABELS
from ..rois import MUSCLE_HU_MAX, MUSCLE_HU_MIN

# Muscle this far (mm) from the femur surface: beyond the cortex's partial volume and the capsule,
# close enough to share the femur's low-frequency HU offset.
MUSCLE_SHELL_MM = (3.0, 25.0)
# Proximal femur slices (mm below the top of the femoral head): head, neck, trochanters and the
# total hip's distal border (10 mm below the lesser trochanter, up to ~4.7 head radii + 10 mm below the
# top), i.e. where the DXA regions lie: the fitted offset field is applied there without extrapolation.
PROXIMAL_FEMUR_MM = 130.0
MIN_MUSCLE_VOXELS = 500
MIN_GROUP_VOXELS = 200  # a muscle group with fewer voxels in the shell gets no level of its own
FIELD_SCALE_MM = 50.0
# Tissue level: mean of the central 80 % of the voxels (robust to a few mislabelled voxels, and unlike
# a median not quantised to the integer HU of the CT).
TRIM_FRACTION = 0.1
# Lean soft tissue window used only when no muscle is labelled (any label map without muscles).
LEAN_HU = (-30.0, 150.0)
# Second pass of the muscle fit: voxels within SYMMETRIC_WINDOW_SD robust SDs of the first fit's
# prediction, taken from WIDE_HU. The first pass's fixed muscle window cuts the low tail of noisy muscle
# that a negative offset has moved towards its edge (noise 24 HU, offset -16 HU: the level read 1.8 HU
# high on a digital patient); a window symmetric about the prediction does not bias the level.
SYMMETRIC_WINDOW_SD = 3.5
WIDE_HU = (-200.0, 300.0)
# Beyond this the two sites cannot be the same tissue under a smooth scanner offset: not applied.
MAX_SHIFT_HU = 25.0
LARGE_SHIFT_HU = 8.0  # flagged (info below this, warning above)
MUSCLE_LABELS = ("psoas_left", "psoas_right", "other_muscle")


def reference_tissue_hu(ct_hu: np.ndarray, rois: dict[str, np.ndarray] | None) -> dict[str, Any] | None:
    """Mean HU of the calibration site's reference tissues (the spine ROIs ``muscle_roi``/``fat_roi``,
    means as the calibrations use them), or None when there is no muscle ROI."""
    rois = rois or {}
    muscle = rois.get("muscle_roi")
    if muscle is None or not np.any(muscle):
        return None
    out: dict[str, Any] = {"muscle_hu": float(ct_hu[muscle].mean()), "muscle_voxels": int(muscle.sum()),
                           "site": "spine reference ROIs (psoas muscle_roi, subcutaneous fat_roi)"}
    fat = rois.get("fat_roi")
    if fat is not None and np.any(fat):
        out.update(fat_hu=float(ct_hu[fat].mean()), fat_voxels=int(fat.sum()))
    return out


def _proximal_slab(femur: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Bool per k (axis 0, inferior -> superior): the femur's top PROXIMAL_FEMUR_MM."""
    ks = np.nonzero(femur.any(axis=(1, 2)))[0]
    top = int(ks.max())
    lo = max(int(ks.min()), top - int(round(PROXIMAL_FEMUR_MM / spacing[0])))
    slab = np.zeros(femur.shape[0], bool)
    slab[lo:top + 1] = True
    return slab


def fit_muscle_at_centre(hu: np.ndarray, group: np.ndarray, xyz_mm: np.ndarray) -> dict[str, Any]:
    """Least-squares ``HU = c[group] + f(xyz)``: one level per muscle group and one smooth offset field
    ``f`` shared by all, a second-order polynomial (beam-hardening cupping is bowl-shaped; scatter adds a
    slow tilt) with ``f(0) = 0``; refitted once without voxels beyond 3.5 robust SDs. ``xyz_mm`` is
    relative to the point of interest, so ``c[g]`` is group ``g``'s level there. Groups: 0 iliopsoas,
    1 other muscle."""
    present = [g for g in (0, 1) if int((group == g).sum()) >= MIN_GROUP_VOXELS]
    if not present:
        return {}
    keep = np.isin(group, present)
    hu, group, xyz_mm = hu[keep].astype(np.float64), group[keep], xyz_mm[keep]
    # One group alone lies on one side of the femur (e.g. a segmentation with the iliopsoas only): a field
    # fitted there extrapolates to the femur centre by 10-60 HU (seen with the shipped model's labels), so
    # there is no field, only the group's robust level.
    two = len(present) > 1
    terms = [field_terms(xyz_mm)] if two else []
    design = np.column_stack([(group == g).astype(np.float64) for g in present] + terms)
    use = np.ones(len(hu), bool)
    for _ in range(3):
        coef = _least_squares(design[use], hu[use])
        res = hu - design @ coef
        centre = float(np.median(res[use]))
        mad = float(np.median(np.abs(res[use] - centre))) * 1.4826
        keep_next = np.abs(res - centre) <= 3.5 * max(mad, 1.0)
        if int(keep_next.sum()) < design.shape[1] + MIN_GROUP_VOXELS:
            break  # too few left to refit: keep this fit
        use = keep_next
    n = len(present)
    levels = {g: float(coef[i]) for i, g in enumerate(present)}
    return {"levels": levels, "field": "second-order polynomial in k, j, i (mm), zero at the femur centre" if two
            else "none (one muscle group only: its robust level)",
            "gradient_hu_per_mm": [round(float(v) / FIELD_SCALE_MM, 4) for v in coef[n:n + 3]] if two else None,
            "field_coefficients_hu": [float(v) for v in coef[n:]] if two else None,
            "rms_residual_hu": round(float(np.sqrt(np.mean(res[use] ** 2))), 2),
            "voxels": {("iliopsoas", "other_muscle")[g]: int((group == g).sum()) for g in present}}


def _least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares coefficients through the normal equations (tens of thousands of voxels, <= 11 well-scaled
    columns: an SVD of the whole design is ~10x slower for the same numbers); lstsq if they are singular."""
    try:
        return np.linalg.solve(design.T @ design, design.T @ values)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(design, values, rcond=None)[0]


def field_terms(xyz_mm: np.ndarray) -> np.ndarray:
    """(N, 9) terms of the second-order offset field (zero at xyz = 0): u, and u_a * u_b for a <= b,
    u = xyz / FIELD_SCALE_MM (conditioning only)."""
    u = np.asarray(xyz_mm, np.float64) / FIELD_SCALE_MM
    return np.column_stack([u] + [u[:, a] * u[:, b] for a in range(3) for b in range(a, 3)])


def offset_field_on_grid(local: dict[str, Any], shape: tuple[int, ...], origin_mm: np.ndarray,
                         spacing: tuple[float, float, float]) -> np.ndarray | None:
    """The fitted offset field (HU, zero at the femur centre) on a grid whose voxel (0, 0, 0) lies at
    ``origin_mm`` in the grid-mm frame of ``local`` (:func:`local_tissue_hu`): each coordinate is clipped
    to the extent of the muscle that was fitted, so the field is never extrapolated. None without a field."""
    fit = local.get("muscle_fit") or {}
    coef = fit.get("field_coefficients_hu")
    if coef is None or local.get("centre_mm") is None:
        return None
    lo, hi = (np.asarray(v, float) for v in local["field_extent_mm"])
    # the terms are products of per-axis coordinates: evaluated by broadcasting (same sum as field_terms)
    u = [np.clip(origin_mm[a] + np.arange(shape[a]) * spacing[a] - local["centre_mm"][a], lo[a], hi[a])
         .reshape([-1 if b == a else 1 for b in range(3)]) / FIELD_SCALE_MM for a in range(3)]
    terms = u + [u[a] * u[b] for a in range(3) for b in range(a, 3)]
    field = np.zeros(shape, np.float64)
    for c, term in zip(coef, terms, strict=True):
        field += c * term
    return field.astype(np.float32)


def local_tissue_hu(ct_hu: np.ndarray, labels: np.ndarray, femur: np.ndarray,
                    spacing: tuple[float, float, float]) -> dict[str, Any]:
    """Muscle HU at the proximal femur's centre and subcutaneous fat at the same slices.

    The muscle wrapping the proximal femur (shell :data:`MUSCLE_SHELL_MM`, top
    :data:`PROXIMAL_FEMUR_MM`) is fitted as one level per muscle group plus a smooth second-order
    offset field (:func:`fit_muscle_at_centre`), evaluated at the centre of the proximal femur. The
    level reported is the iliopsoas' -- the same muscle as the calibration site's psoas ROI, so the
    two compare like with like; the gluteal/thigh muscles, which may hold more fat, only help find
    the offset field. Without iliopsoas near the femur the other muscles' level is used
    (``muscle_anchor`` says so). Fat: trimmed mean (:data:`TRIM_FRACTION`).

    ``ct_hu``/``labels``/``femur`` are on one grid (a crop reaching at least ``MUSCLE_SHELL_MM[1]``
    beyond the femur for the muscle; fat is taken wherever the crop holds it)."""
    slab = _proximal_slab(femur, spacing)[:, None, None]
    dist = ndimage.distance_transform_edt(~femur, sampling=spacing)
    shell = (dist > MUSCLE_SHELL_MM[0]) & (dist <= MUSCLE_SHELL_MM[1]) & slab
    # the calibration site's muscle window (rois.muscle_roi): compare like with like, and keep fat that a
    # segmentation left inside a muscle label out of the level
    lean = (ct_hu >= MUSCLE_HU_MIN) & (ct_hu <= MUSCLE_HU_MAX)
    psoas = np.isin(labels, (LABELS["psoas_left"], LABELS["psoas_right"]))
    other = labels == LABELS["other_muscle"]
    # one voxel off each muscle's boundary: no partial volume with fat or bone
    wide = (ct_hu >= WIDE_HU[0]) & (ct_hu <= WIDE_HU[1])
    groups = np.full(labels.shape, -1, np.int8)  # candidates (wide window); the first pass keeps the lean ones
    groups[ndimage.binary_erosion(other) & shell & wide] = 1
    groups[ndimage.binary_erosion(psoas) & shell & wide] = 0
    source = "labelled muscle (iliopsoas level; gluteal/thigh muscle for the offset field)"
    if int(((groups == 1) & lean).sum()) < MIN_GROUP_VOXELS and int(((groups == 0) & lean).sum()) >= MIN_GROUP_VOXELS:
        # the segmentation labels the iliopsoas but not the other muscles (the shipped model): the unlabelled
        # lean tissue around the femur (gluteal/thigh muscle, tendon) informs the offset field instead
        unlabelled = ndimage.binary_erosion(np.isin(labels, (0, LABELS["body"]))) & shell & wide
        groups[unlabelled & (groups < 0)] = 1
        source = "labelled iliopsoas (level); unlabelled lean tissue around the femur (offset field)"
    if int(((groups >= 0) & lean).sum()) < MIN_MUSCLE_VOXELS:
        bone = np.isin(labels, [v for k, v in LABELS.items() if k.startswith(("femur", "hip_", "vertebra", "sacrum"))])
        groups[:] = -1
        lean = (ct_hu > LEAN_HU[0]) & (ct_hu < LEAN_HU[1])
        groups[shell & ~bone & wide] = 1
        source = f"lean soft tissue {LEAN_HU[0]:.0f}..{LEAN_HU[1]:.0f} HU (no muscle labels)"
    sel = (groups >= 0) & lean
    centre_mm = np.argwhere(femur & slab).mean(axis=0) * np.asarray(spacing)
    out: dict[str, Any] = {"muscle_hu": None, "muscle_voxels": int(sel.sum()), "muscle_source": source,
                           "muscle_anchor": None, "muscle_fit": None, "fat_hu": None, "fat_voxels": 0,
                           "shell_mm": list(MUSCLE_SHELL_MM), "slices_mm_below_femur_top": PROXIMAL_FEMUR_MM,
                           "centre_mm": [float(c) for c in centre_mm]}
    if int(sel.sum()) >= MIN_MUSCLE_VOXELS:
        xyz = np.argwhere(sel) * np.asarray(spacing) - centre_mm
        fit = fit_muscle_at_centre(ct_hu[sel], groups[sel], xyz)
        if fit:
            fit, sel = _refit_symmetric(ct_hu, groups, spacing, centre_mm, fit, sel)
            out["muscle_voxels"] = int(sel.sum())
            xyz = np.argwhere(sel) * np.asarray(spacing) - centre_mm
            out["field_extent_mm"] = [xyz.min(axis=0).tolist(), xyz.max(axis=0).tolist()]
            anchor = 0 if 0 in fit["levels"] else 1
            out["muscle_hu"] = round(fit["levels"][anchor], 2)
            out["muscle_anchor"] = "iliopsoas" if anchor == 0 else (
                "gluteal/thigh muscle (no iliopsoas near the femur: composition not matched to the psoas)"
                if "labelled" in source else "lean soft tissue")
            if len(fit["levels"]) == 2:
                fit["other_minus_iliopsoas_hu"] = round(fit["levels"][1] - fit["levels"][0], 2)
            fit["levels"] = {("iliopsoas", "other_muscle")[g]: round(v, 2) for g, v in fit["levels"].items()}
            out["muscle_fit"] = fit
    fat = labels == LABELS["subcutaneous_fat"]
    if fat.any():
        fat = ndimage.binary_erosion(fat) & slab
        if int(fat.sum()) >= MIN_MUSCLE_VOXELS:
            out.update(fat_hu=float(stats.trim_mean(ct_hu[fat], TRIM_FRACTION)), fat_voxels=int(fat.sum()))
    return out


def _refit_symmetric(ct_hu: np.ndarray, groups: np.ndarray, spacing: tuple[float, ...], centre_mm: np.ndarray,
                     first: dict[str, Any], first_sel: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Second pass (see :data:`SYMMETRIC_WINDOW_SD`): the candidates within a window symmetric about the
    first fit's prediction, refitted."""
    cand = groups >= 0
    xyz = np.argwhere(cand) * np.asarray(spacing) - centre_mm
    levels = np.array([first["levels"].get(0, np.nan), first["levels"].get(1, np.nan)])
    predicted = levels[groups[cand]]
    if first.get("field_coefficients_hu") is not None:
        predicted = predicted + field_terms(xyz) @ np.asarray(first["field_coefficients_hu"])
    half = SYMMETRIC_WINDOW_SD * max(float(first["rms_residual_hu"]), 1.0)
    near = np.isfinite(predicted) & (np.abs(ct_hu[cand] - predicted) <= half)
    sel = cand.copy()
    sel[cand] = near
    second = fit_muscle_at_centre(ct_hu[sel], groups[sel], xyz[near])
    return (second, sel) if second else (first, first_sel)


def decide_shift(local: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """The HU shift the hip applies (``hu_shift``: subtracted from the CT before the calibration line)
    and why. Pure arithmetic on the two sites' tissue readings."""
    out: dict[str, Any] = {"applied": False, "hu_shift": 0.0, "reason": None,
                           "muscle_hu_hip": local.get("muscle_hu"), "fat_hu_hip": local.get("fat_hu"),
                           "muscle_hu_reference": None, "fat_hu_reference": None,
                           "muscle_difference_hu": None, "fat_difference_hu": None}
    if reference is None or reference.get("muscle_hu") is None:
        out["reason"] = "no reference muscle HU from the calibration site: the spine's line is used unchanged"
        return out
    out["muscle_hu_reference"] = reference["muscle_hu"]
    out["fat_hu_reference"] = reference.get("fat_hu")
    if local.get("fat_hu") is not None and reference.get("fat_hu") is not None:
        out["fat_difference_hu"] = round(float(local["fat_hu"] - reference["fat_hu"]), 2)
    if local.get("muscle_hu") is None:
        out["reason"] = (f"too little muscle around the femur (< {MIN_MUSCLE_VOXELS} voxels): the spine's line "
                         "is used unchanged")
        return out
    diff = round(float(local["muscle_hu"] - reference["muscle_hu"]), 2)
    out["muscle_difference_hu"] = diff
    if abs(diff) > MAX_SHIFT_HU:
        out["reason"] = (f"muscle at the hip reads {diff:+.1f} HU from the calibration site's, more than a "
                         f"scanner offset ({MAX_SHIFT_HU:.0f} HU): not applied (check the muscle labels, contrast)")
        return out
    out.update(applied=True, hu_shift=diff,
               reason=f"muscle around the femur reads {diff:+.1f} HU from the calibration site's muscle: the hip "
                      f"uses the spine's line shifted by {diff:+.1f} HU (same slope)")
    return out
