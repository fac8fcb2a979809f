"""Vertebrae (body with cortical shell, trabecular core and endplates; pedicles, laminae, spinous,
transverse and articular processes), intervertebral discs, the spinal canal and the lower ribs."""

from __future__ import annotations

import numpy as np

from ..labels import LABELS, vertebra_label
from .context import Ctx
from .grid import Field, Prim, build
from .layout import VertebraFrame
from .shapes import capsule, ellipse_distance, polyline, to_local

TRAB_TEXTURE_SD = 0.08  # relative SD of the trabecular density texture (zero mean)
RIB_LEVELS = {"T7": "ribs_other", "T8": "ribs_other", "T9": "ribs_other", "T10": "ribs_other",
              "T11": "rib_{side}_11", "T12": "rib_{side}_12"}
# Rib arc: end angle from the back (deg) and drop along the rib (mm): the 12th rib is short (floating).
RIB_SHAPE = {"T7": (158, 95), "T8": (155, 92), "T9": (150, 88), "T10": (140, 80), "T11": (112, 62),
             "T12": (72, 32)}


def body_prim(vf: VertebraFrame, extra_mm: float = 0.0) -> Prim:
    """Vertebral body: elliptic section, posterior wall concave, waisted sides, shallow endplate
    concavity; a fracture lowers the anterior (wedge) or central (biconcave) height."""
    a0 = vf.width_mm / 2 + extra_mm
    b0 = vf.depth_mm / 2 + extra_mm
    hh0 = vf.height_mm / 2 + extra_mm
    frac = vf.fracture
    center, rot = vf.center, vf.rot
    ext = np.abs(rot) @ np.array([a0, b0 + 2, hh0]) + 2.0
    r_edge = 1.5

    def fn(x, y, z):
        u, v, w = to_local(x, y, z, center, rot)
        uu = (u / a0) ** 2
        v = v + np.float32(0.12 * b0) * np.clip(1.0 - uu, 0, None) * (v > 0)  # posterior concavity
        t = np.clip(w / hh0, -1.0, 1.0)
        shrink = 1.0 - 0.06 * (1.0 - t * t)
        a, b = (a0 - r_edge) * shrink, (b0 - r_edge) * shrink
        k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
        d_xy = ellipse_distance(k0, k1, min(a0, b0) * 0.8)
        rr = np.clip(uu + (v / b0) ** 2, 0, 1)
        hh = hh0 - r_edge - 0.8 * (1.0 - rr)
        if frac:
            loss = frac["height_loss"] * vf.height_mm
            if frac["type"] == "wedge":
                hh = hh - loss * np.clip(0.5 - v / (2 * b0), 0, 1)
            else:
                hh = hh - loss * (1.0 - rr)
        d_z = np.abs(w) - hh
        out = np.sqrt(np.maximum(d_xy, 0) ** 2 + np.maximum(d_z, 0) ** 2)
        return out + np.minimum(np.maximum(d_xy, d_z), 0) - r_edge

    return Prim(center - ext, center + ext, fn)


def posterior_prims(vf: VertebraFrame) -> list[Prim]:
    w, d, h = vf.width_mm, vf.depth_mm, vf.height_mm
    s = w / 44.0  # scale with the body
    lumbar = vf.level.startswith("L")
    P = vf.point
    prims: list[Prim] = []
    back = d / 2
    r_ped = (4.5 if lumbar else 3.8) * s
    for side in (-1.0, 1.0):
        u_ped = side * 14.5 * s
        for dw in (2.5 * s, -2.5 * s):
            prims.append(capsule(P(u_ped * 0.95, back - 4, dw + 0.1 * h), P(u_ped, back + 15 * s, dw + 0.05 * h),
                                 r_ped))
        # lamina, sloping down towards the spinous base
        for dw in (4.0 * s, -5.0 * s):
            prims.append(capsule(P(u_ped, back + 15 * s, dw), P(side * 2.0, back + 23 * s, dw - 2.0 * s), 3.6 * s))
        # transverse process
        if lumbar:
            tp_len = {"L1": 18, "L2": 22, "L3": 27, "L4": 23, "L5": 18}[vf.level] * s
            tip = P(side * (w / 2 + tp_len), back + 11 * s, 0.0)
            prims.append(capsule(P(u_ped, back + 14 * s, 0.0), tip, 4.2 * s, 3.2 * s))
        else:
            tip = P(side * (w / 2 + (6 if vf.level == "T12" else 12) * s), back + 26 * s, 0.1 * h)
            prims.append(capsule(P(u_ped, back + 14 * s, 0.1 * h), tip, 4.5 * s, 4.5 * s))
        # articular processes (superior lateral, inferior medial)
        sup_a, sup_b = P(side * 17.5 * s, back + 17 * s, 0.05 * h), P(side * 18 * s, back + 17 * s, h / 2 + 6 * s)
        prims.append(capsule(sup_a, sup_b, 4.6 * s))
        inf_a, inf_b = P(side * 12.5 * s, back + 22 * s, -0.05 * h), P(side * 12.5 * s, back + 21 * s, -h / 2 - 6 * s)
        prims.append(capsule(inf_a, inf_b, 4.2 * s))
    # spinous process: a plate (stacked capsules); thoracic ones slope steeply down
    tip_v, tip_w = (back + 50 * s, -8 * s) if lumbar else (back + 44 * s, -22 * s)
    for dw in (5 * s, 0.0, -5 * s):
        prims.append(capsule(P(0.0, back + 22 * s, dw - 2 * s), P(0.0, tip_v, tip_w + dw * 0.8), 4.0 * s, 3.6 * s))
    return prims


def paint_discs(ctx: Ctx) -> None:
    verts = ctx.layout.vertebrae
    order = [lv for lv in ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")]
    hu = ctx.hu("cartilage")
    for upper, lower in zip(order[:-1], order[1:], strict=True):
        _paint_disc(ctx, verts[upper], verts[lower], hu)
    # L5/S1 disc between L5 and the sacral endplate
    lay = ctx.layout
    vf = verts["L5"]
    s1 = VertebraFrame("S1", lay.s1_center + lay.s1_rot @ np.array([0, 0, -12.0]), lay.s1_rot, vf.width_mm * 1.02,
                       vf.depth_mm, 24.0)
    _paint_disc(ctx, vf, s1, hu)


def _paint_disc(ctx: Ctx, up: VertebraFrame, low: VertebraFrame, hu: float) -> None:
    top = up.point(0, 0, -up.height_mm / 2 + 2.0)
    bottom = low.point(0, 0, low.height_mm / 2 - 2.0)
    center = (top + bottom) / 2
    axis = top - bottom
    rot = up.rot.copy()
    vf = VertebraFrame("disc", center, _frame_along(rot, axis), (up.width_mm + low.width_mm) / 2 + 2.0,
                       (up.depth_mm + low.depth_mm) / 2 + 1.5, float(np.linalg.norm(axis)))
    field = build(ctx.grid, [body_prim(vf)])
    ctx.canvas.paint_field(field, hu, LABELS["intervertebral_disc"])


def _frame_along(rot: np.ndarray, axis: np.ndarray) -> np.ndarray:
    from .shapes import rotation

    return rotation(axis, rot[:, 0])


def paint_canal(ctx: Ctx) -> None:
    """Spinal canal (CSF and cord, water-like) behind the bodies: painted before the bones."""
    verts = ctx.layout.vertebrae
    pts = [verts[lv].point(0, verts[lv].depth_mm / 2 + 8.0, 0) for lv in ("T8", "T9", "T10", "T11", "T12", "L1",
                                                                         "L2", "L3", "L4", "L5")]
    pts.append(ctx.layout.s1_center + ctx.layout.s1_rot @ np.array([0, 22.0, -10.0]))
    prims = polyline(pts[::-1], 10.0)
    field = build(ctx.grid, prims)
    ctx.canvas.paint_field(field, ctx.hu("csf"), LABELS["body"])


def paint_vertebrae(ctx: Ctx) -> None:
    p = ctx.patient
    t = ctx.tissues
    for lvl in ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"):  # T9 and above: only rib anchors
        vf = ctx.layout.vertebrae[lvl]
        label = vertebra_label(lvl)
        vbmd = p.vbmd_level_mg_cm3[lvl]
        body = body_prim(vf)
        prims = [body] + posterior_prims(vf)
        field = Field(ctx.grid, prims, margin_mm=ctx.grid.ramp_mm + 2.0)
        if field.empty:
            continue
        field.union(body)
        for prim in prims[1:]:
            field.union(prim, 2.5)
        box = field.box
        density = vbmd * (1.0 + TRAB_TEXTURE_SD * ctx.texture(box, offset=len(lvl) + ord(lvl[-1])))
        core = ctx.canvas.paint_bone(field, t.hu["cortical"], t.cortical_density_mg_cm3, t.trabecular_hu(density),
                                     density, label, p.vertebral_cortex_mm)
        d_body = body.fn(box.x, box.y, box.z)
        inside = (d_body + p.vertebral_cortex_mm) <= -0.5 * ctx.grid.ramp_mm  # fully in the body's core
        ctx.core_masks.setdefault(lvl, []).append((box, inside & (core >= 0.999)))


def paint_ribs(ctx: Ctx) -> None:
    p = ctx.patient
    t = ctx.tissues
    lay = ctx.layout
    for lvl, template in RIB_LEVELS.items():
        vf = lay.vertebrae[lvl]
        end_deg, drop = RIB_SHAPE[lvl]
        for side, sign in (("left", 1.0), ("right", -1.0)):
            label = LABELS[template.format(side=side)]
            w, d, h = vf.width_mm, vf.depth_mm, vf.height_mm
            head = vf.point(sign * (w / 2 + 3.0), d / 2 - 4.0, 0.35 * h)
            tubercle = vf.point(sign * (w / 2 + 14.0), d / 2 + 20.0, 0.2 * h)
            # arc around the trunk, just inside the body wall
            zc = tubercle[2]
            a_body = float(lay.body_half_width(zc))
            b_body = float(lay.body_half_depth(zc))
            yc = float(lay.body_center_y(zc)) + 0.1 * b_body
            inset = p.fat_sc_mm + p.muscle_wall_mm + 8.0
            ra, rb = a_body - inset * 1.1, b_body - inset * 0.8 - 0.1 * b_body
            th0 = np.arctan2(abs(tubercle[0]), (tubercle[1] - yc) / rb * ra)
            th1 = np.deg2rad(end_deg) * (1.0 + 0.05 * ctx.rng.normal())
            n = 9
            ths = np.linspace(th0 + 0.15, th1, n)
            frac = np.linspace(0, 1, n) ** 1.3
            pts = [head, tubercle] + [np.array([sign * ra * np.sin(th), yc + rb * np.cos(th),
                                                zc - drop * f]) for th, f in zip(ths, frac, strict=True)]
            thick = 3.4 if lvl != "T12" else 2.8
            prims = []
            for dz in (2.6, -2.6):
                prims += polyline([q + np.array([0, 0, dz]) for q in pts], thick)
            field = build(ctx.grid, prims, smooth_mm=1.0)
            if field.empty:
                continue
            dens = 0.8 * p.vbmd_mean_mg_cm3
            ctx.canvas.paint_bone(field, t.hu["cortical"], t.cortical_density_mg_cm3, t.trabecular_hu(dens), dens,
                                  label, 1.0)
