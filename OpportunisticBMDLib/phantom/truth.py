"""truth.json: keys mirror results.json (``spine.levels.<level>.vbmd_mg_cm3``, ``hip.<side>...``)."""

from __future__ import annotations

import numpy as np

from ..labels import vertebra_label
from .context import Ctx


def spine_truth(ctx: Ctx) -> dict:
    """True mean trabecular HA density of each vertebral body's core (cortex excluded), measured on the
    final density map over the voxels fully inside the core."""
    levels = {}
    g = ctx.grid
    z_lo, z_hi = g.origin_lps_mm[2], g.origin_lps_mm[2] + (g.shape[0] - 1) * g.spacing_mm[0]
    values = []
    for lvl, items in ctx.core_masks.items():
        total, count = 0.0, 0
        lab = vertebra_label(lvl)
        for box, mask in items:
            sel = mask & (ctx.canvas.labels[box.slices] == lab)
            total += float(ctx.canvas.density[box.slices][sel].sum(dtype=np.float64))
            count += int(sel.sum())
        if count == 0:
            continue
        vf = ctx.layout.vertebrae[lvl]
        half = vf.height_mm / 2 + 2.0
        complete = bool(vf.center[2] - half >= z_lo and vf.center[2] + half <= z_hi)
        frac = ctx.patient.fracture
        entry = {
            "vbmd_mg_cm3": round(total / count, 4),
            "nominal_vbmd_mg_cm3": round(ctx.patient.vbmd_level_mg_cm3[lvl], 4),
            "core_voxel_count": count,
            "core_volume_mm3": round(count * g.spacing_mm[0] * g.spacing_mm[1] * g.spacing_mm[2], 1),
            "complete_in_fov": complete,
            "center_lps_mm": [round(float(c), 2) for c in vf.center],
            "fractured": bool(frac and frac["level"] == lvl),
            "axial_rotation_deg": round(ctx.patient.axial_rotation_deg.get(lvl, 0.0), 2),
        }
        levels[lvl] = entry
        if lvl in ("L1", "L2") and complete:
            values.append(entry["vbmd_mg_cm3"])
    summary = {"vbmd_mg_cm3": round(float(np.mean(values)), 4) if values else None,
               "levels_used": [lv for lv in ("L1", "L2") if lv in levels and levels[lv]["complete_in_fov"]]}
    if summary["vbmd_mg_cm3"] is not None:
        v = summary["vbmd_mg_cm3"]
        # ACR-SPR-SSR QCT categories: > 120 normal, 80-120 low bone mass, < 80 osteoporosis
        summary["category"] = "normal" if v > 120 else ("osteopenia" if v >= 80 else "osteoporosis")
    return {"levels": levels, "summary": summary}


def hip_geometry(ctx: Ctx, femur_geometry: dict) -> dict:
    out = {}
    for side, ax in femur_geometry.items():
        fp = ctx.patient.femur[side]
        out[side] = {
            "geometry": {
                "head_center_lps_mm": [round(float(c), 3) for c in ax["head"]],
                "head_radius_mm": round(fp.head_radius_mm, 3),
                "neck_axis_lps": [round(float(c), 6) for c in ax["neck_axis"]],  # head -> shaft (lateral, down)
                "shaft_axis_lps": [round(float(c), 6) for c in ax["shaft_up"]],  # distal -> proximal
                "neck_shaft_base_lps_mm": [round(float(c), 3) for c in ax["p0"]],
                "neck_length_mm": round(fp.neck_length_mm, 3),
                "neck_radius_mm": round(fp.neck_radius_mm, 3),
                "neck_shaft_angle_deg": round(fp.neck_shaft_angle_deg, 3),
                "anteversion_deg": round(fp.anteversion_deg, 3),  # anatomical, before leg rotation
                "external_rotation_deg": round(fp.external_rotation_deg, 3),  # leg rotation in the scanner
            },
            "metal": ctx.patient.metal_side == side,
            "trabecular_mg_cm3": {"head": round(fp.trab_head_mg_cm3, 3), "neck": round(fp.trab_neck_mg_cm3, 3),
                                  "trochanter": round(fp.trab_troch_mg_cm3, 3)},
        }
    return out
