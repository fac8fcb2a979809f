"""Hologic-style DXA hip regions on the projection, all built in millimetres.

Conventions (side-normalised so left and right hips share the code; ``m`` = +1 when the medial
direction is +u, i.e. the right hip):

* Femoral neck box: a rectangle at right angles to the (projected) neck axis, centred on its
  narrowest section, ``NECK_BOX_WIDTH_MM`` along the axis and ``NECK_BOX_LENGTH_MM`` across it.
  Hologic's default neck box is 49 x 15 pixels (ISCD DXA atlas, "Incorrect femoral neck box size",
  https://iscd.org/dxaatlas/incorrect-femoral-neck-box-size); we use 15 mm x 49 mm. Offset 0: the
  box is centred on the narrowest section (the brief's convention; Hologic's own placement abuts
  the greater trochanter, Lunar's seeks minimum BMD), but never reaches into the femoral head (its
  medial edge stays at least one head radius from the head centre).
* Total hip: femur pixels lateral to the neck box's medial edge (the head is excluded) and above a
  distal border 10 mm below the lesser trochanter (ISCD DXA atlas, "Total hip region of interest
  incorrect/Hologic": the bottom line lies 10 pixels below the lesser trochanter).
* Trochanter / intertrochanter: split by a line from the neck axis at the neck box's lateral edge
  (where Ward's search area starts) to the base of the greater trochanter (Radiology 2003;228:620,
  Fig. 4 legend); we draw it at 45 deg distal-lateral. Total hip = neck + trochanter + intertrochanter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .geometry import FemurGeometry
from .projection import Projection

NECK_BOX_WIDTH_MM = 15.0
NECK_BOX_LENGTH_MM = 49.0
DISTAL_BORDER_BELOW_LT_MM = 10.0
TROCH_LINE_ANGLE_DEG = 45.0  # below the horizontal, running distal-lateral
# Without a visible lesser-trochanter bump, its lower edge is put 2.6 head radii below the head
# centre (about 57 mm for a 22 mm head, typical adult proximal-femur proportions).
LT_FALLBACK_HEAD_RADII = 2.6
# The lesser trochanter is searched 1.8-4 head radii below the head centre (its lower edge lies
# ~2.5 radii below in adult femurs), never in the neck itself.
LT_SEARCH_HEAD_RADII = (1.8, 4.0)
FOV_GUARD_MM = 2.0  # a bone run ending this close to the field-of-view edge is taken as cut by it
# The narrowest neck section is searched between the head surface and 1.9 head radii from its centre
# (the neck-trochanter junction lies beyond ~2 radii in adult femurs).
NECK_SEARCH_HEAD_RADII = (0.9, 1.9)
REGION_NAMES = ("neck", "trochanter", "intertrochanter", "total_hip")


@dataclass
class HipRegions:
    masks: dict[str, np.ndarray]  # 2D bool masks (geometric region, before the bone footprint)
    neck_t_mm: float  # neck box centre along the projected neck axis from the head centre
    neck_axis_2d: np.ndarray  # (du, dv) unit, head -> trochanter
    neck_box_corners_uv: np.ndarray  # (4, 2) mm
    troch_line_uv: np.ndarray  # (2, 2) mm
    distal_border_v_mm: float
    lesser_trochanter_v_mm: float | None
    width_profile: tuple[np.ndarray, np.ndarray]  # (t_mm, width_mm)
    notes: list[str] = field(default_factory=list)
    distal_border_in_view: bool = True
    neck_in_view: bool = True
    total_in_view: bool = True  # no bone of the total hip region within FOV_GUARD_MM of a cutting FOV face


def _run_width(fp: np.ndarray, proj: Projection, centre: np.ndarray, perp: np.ndarray, half_len: float,
               check_fov: bool = True) -> float:
    """Length (mm) of the contiguous bone run through ``centre`` along ``perp``; NaN when the run
    reaches pixels outside the field of view (the width is then unknown)."""
    px = proj.pixel_mm
    s = np.arange(-half_len, half_len + px / 2, px)
    pts = centre[None, :] + s[:, None] * perp[None, :]
    row, col = proj.pixel_of_uv(pts[:, 0], pts[:, 1])
    ok = (row >= 0) & (row < fp.shape[0]) & (col >= 0) & (col < fp.shape[1])
    inside = np.zeros(len(s), bool)
    inside[ok] = fp[row[ok], col[ok]]
    mid = len(s) // 2
    if not inside[mid]:
        return 0.0
    lo = mid
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = mid
    while hi < len(s) - 1 and inside[hi + 1]:
        hi += 1
    safe = _safe_fov(proj) if check_fov else None
    if safe is not None:
        r_run, c_run = row[lo : hi + 1], col[lo : hi + 1]
        if not (ok[lo : hi + 1].all() and safe[r_run, c_run].all()):
            return float("nan")
    return (hi - lo + 1) * px


def _safe_fov(proj: Projection) -> np.ndarray | None:
    """Pixels at least FOV_GUARD_MM inside the field of view (bone there is not cut by its edge)."""
    if proj.in_fov is None:
        return None
    if not hasattr(proj, "_safe_fov"):
        dist = ndimage.distance_transform_edt(np.pad(proj.in_fov, 1), sampling=proj.pixel_mm)[1:-1, 1:-1]
        proj._safe_fov = dist > FOV_GUARD_MM  # type: ignore[attr-defined]
    return proj._safe_fov  # type: ignore[attr-defined]


def _component_at(region: np.ndarray, proj: Projection, point_uv: np.ndarray) -> np.ndarray:
    """The part of ``region`` connected (through bone) to the bone at ``point_uv``, plus the
    region's non-bone pixels: other bone crossing the box (e.g. the greater trochanter) is left out."""
    bone = region & proj.mineral_footprint
    comp, _ = ndimage.label(bone)
    row, col = proj.pixel_of_uv(point_uv[0], point_uv[1])
    keep = comp[int(row), int(col)]
    if keep == 0:
        return region
    return (region & ~bone) | (comp == keep)


def neck_width_profile(proj: Projection, n2: np.ndarray, head_radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    perp = np.array([-n2[1], n2[0]])
    ts = np.arange(NECK_SEARCH_HEAD_RADII[0] * head_radius_mm, NECK_SEARCH_HEAD_RADII[1] * head_radius_mm,
                   proj.pixel_mm)
    widths = np.array([_run_width(proj.footprint, proj, t * n2, perp, 2.5 * head_radius_mm) for t in ts])
    if not np.isfinite(widths).any():  # the whole neck is cut by the field of view: use what is visible
        widths = np.array([_run_width(proj.footprint, proj, t * n2, perp, 2.5 * head_radius_mm, False) for t in ts])
    return ts, widths


def narrowest_t(ts: np.ndarray, widths: np.ndarray, pixel_mm: float) -> float:
    """Centre of the narrowest stretch (all positions within one pixel of the minimum width)."""
    valid = np.isfinite(widths) & (widths > 0)
    if not valid.any():
        valid = np.nan_to_num(widths) > 0
    if not valid.any():
        raise ValueError("no femoral neck found along the neck axis")
    wmin = widths[valid].min()
    near = valid & (widths <= wmin + pixel_mm)
    return float(np.median(ts[near]))


def find_lesser_trochanter(proj: Projection, m: float, v_top_mm: float, head_radius_mm: float) -> float | None:
    """Lower edge (v, mm) of the lesser trochanter: a medial bump of the bone outline below the
    neck, where the medial extent exceeds the mean of its neighbours +-10 mm by over 1 mm."""
    ug, vg = proj.uv_grid()
    fp = proj.footprint
    rows = np.where(fp.any(axis=1))[0]
    med = np.full(fp.shape[0], np.nan)
    for r in rows:
        med[r] = (m * ug[r][fp[r]]).max()
    v = vg[:, 0]
    delta = int(round(10.0 / proj.pixel_mm))
    bump = np.full_like(med, np.nan)
    bump[delta:-delta] = med[delta:-delta] - 0.5 * (med[: -2 * delta] + med[2 * delta :])
    search = (v < min(v_top_mm, -LT_SEARCH_HEAD_RADII[0] * head_radius_mm)) & (
        v > -LT_SEARCH_HEAD_RADII[1] * head_radius_mm) & np.isfinite(bump)
    safe = _safe_fov(proj)
    if safe is not None:  # the bump and its +-10 mm neighbours must be inside the field of view
        row_safe = np.array([safe[r][fp[r]].all() if fp[r].any() else False for r in range(fp.shape[0])])
        window = np.convolve(~row_safe, np.ones(2 * delta + 1), mode="same") == 0
        search &= window
    if not search.any() or np.nanmax(np.where(search, bump, np.nan)) < 1.0:
        return None
    b = np.where(search, bump, -np.inf)
    peak = int(np.argmax(b))
    below = peak
    while below + 1 < len(b) and b[below + 1] > 0.5 * b[peak]:
        below += 1
    return float(v[below])


def build_regions(proj: Projection, geom: FemurGeometry) -> HipRegions:
    frame = proj.frame
    n2 = np.array([np.dot(geom.neck_axis, frame.u), np.dot(geom.neck_axis, frame.v)])
    n2 /= np.linalg.norm(n2)
    m = 1.0 if np.dot(geom.medial, frame.u) > 0 else -1.0
    r = geom.head_radius_mm
    ts, widths = neck_width_profile(proj, n2, r)
    # The box stays lateral of the head: its medial edge at least one head radius from the centre.
    t_n = max(narrowest_t(ts, widths, proj.pixel_mm), r + NECK_BOX_WIDTH_MM / 2)
    perp = np.array([-n2[1], n2[0]])
    ug, vg = proj.uv_grid()
    t_map = ug * n2[0] + vg * n2[1]
    s_map = ug * perp[0] + vg * perp[1]
    w2, l2 = NECK_BOX_WIDTH_MM / 2, NECK_BOX_LENGTH_MM / 2
    neck = (np.abs(t_map - t_n) <= w2) & (np.abs(s_map) <= l2)
    neck = _component_at(neck, proj, t_n * n2)
    corners = np.array([(t_n + a) * n2 + b * perp for a, b in ((-w2, -l2), (w2, -l2), (w2, l2), (-w2, l2))])
    notes: list[str] = []

    neck_centre = t_n * n2
    v_top = neck_centre[1] - 0.5 * NECK_BOX_WIDTH_MM
    lt = find_lesser_trochanter(proj, m, v_top, r)
    if lt is None:
        lt_edge = -LT_FALLBACK_HEAD_RADII * r
        notes.append(f"lesser trochanter not identified on the projection; assumed {LT_FALLBACK_HEAD_RADII} head radii "
                     "below the head centre")
    else:
        lt_edge = lt
    v_bottom = lt_edge - DISTAL_BORDER_BELOW_LT_MM
    fp_rows = np.where(proj.footprint.any(axis=1))[0]
    lowest_bone_v = vg[fp_rows.max(), 0] if len(fp_rows) else 0.0
    in_view = lowest_bone_v <= v_bottom + proj.pixel_mm
    total = (t_map >= t_n - w2) & (vg >= v_bottom)
    safe = _safe_fov(proj)
    neck_in_view = safe is None or bool(safe[neck & proj.footprint].all())
    total_in_view = safe is None or bool(safe[total & proj.footprint].all())

    start = (t_n + w2) * n2
    ang = np.radians(TROCH_LINE_ANGLE_DEG)
    d = np.array([-m * np.cos(ang), -np.sin(ang)])  # lateral and distal
    up = np.array([-d[1], d[0]])
    if up[1] < 0:
        up = -up
    above_line = (ug - start[0]) * up[0] + (vg - start[1]) * up[1] > 0
    troch = total & ~neck & above_line & (t_map > t_n + w2)
    inter = total & ~neck & ~troch
    line_end = start + d * 3.0 * r
    return HipRegions(
        {"neck": neck, "trochanter": troch, "intertrochanter": inter, "total_hip": total},
        t_n, n2, corners, np.array([start, line_end]), float(v_bottom), lt, (ts, widths), notes, bool(in_view),
        neck_in_view, total_in_view,
    )


def region_stats(proj: Projection, region: np.ndarray) -> dict[str, float]:
    """Area (cm^2) of bone pixels, BMC (g) of all mineral in the region, aBMD = BMC / area."""
    px_cm2 = (proj.pixel_mm / 10.0) ** 2
    bone = region & proj.footprint
    area_cm2 = float(bone.sum() * px_cm2)
    bmc_g = float(proj.abmd_g_cm2[region & proj.mineral_footprint].sum() * px_cm2)
    abmd = bmc_g / area_cm2 if area_cm2 > 0 else float("nan")
    return {"abmd_g_cm2": abmd, "area_cm2": area_cm2, "bmc_g": bmc_g}
