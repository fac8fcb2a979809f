"""Sacrum, hip bones (ilium, acetabulum, pubis, ischium) and the proximal femurs, with an optional
metal hip prosthesis. The femur geometry (head centre and radius, neck and shaft axes, neck-shaft
angle, anteversion) is returned for truth.json."""

from __future__ import annotations

import numpy as np

from ..labels import LABELS
from .context import Ctx
from .grid import Field, Prim, build
from .layout import VertebraFrame, smoothstep
from .shapes import capsule, ellipsoid, halfspace, polyline, rot_about, rotation, sphere, triangle_plate, unit
from .spine import body_prim


def femur_axes(ctx: Ctx, side: str) -> dict:
    """Head centre, unit neck axis (head -> shaft), shaft axis (distal -> proximal), base point P0."""
    fp = ctx.patient.femur[side]
    sign = 1.0 if side == "left" else -1.0
    head = ctx.layout.hip_center[side]
    tilt = np.deg2rad(fp.shaft_tilt_deg)
    d_up = unit([sign * np.sin(tilt), 0.0, np.cos(tilt)])  # shaft leans laterally going up (knee medial)
    m = np.array([-sign, 0.0, 0.0])
    medial = unit(m - (m @ d_up) * d_up)  # coronal plane, towards the midline, perpendicular to the shaft
    anterior = np.array([0.0, -1.0, 0.0])
    alpha = np.deg2rad(fp.neck_shaft_angle_deg)
    beta = np.deg2rad(fp.anteversion_deg)
    to_head = np.cos(alpha) * (-d_up) + np.sin(alpha) * (np.cos(beta) * medial + np.sin(beta) * anterior)
    # positioning: external rotation of the leg about the shaft axis (supine patients lie so)
    ext = rot_about(d_up, sign * np.deg2rad(fp.external_rotation_deg))
    to_head = ext @ to_head
    anterior = ext @ anterior
    p0 = head - fp.neck_length_mm * to_head
    medial = ext @ medial
    return {"head": head, "neck_axis": unit(-to_head), "to_head": unit(to_head), "shaft_up": d_up, "p0": p0,
            "anterior": unit(anterior), "medial": unit(medial)}


def paint_sacrum(ctx: Ctx) -> None:
    lay = ctx.layout
    p = ctx.patient
    t = ctx.tissues
    rot = lay.s1_rot
    c = lay.s1_center
    w5, d5, _ = p.body_size_mm["L5"]
    s = p.spine_scale
    s1 = VertebraFrame("S1", c + rot @ np.array([0, 0, -13.0 * s]), rot, w5 * 1.02, d5 * 0.95, 26.0 * s)
    prims: list[Prim] = [body_prim(s1)]
    for sign in (-1.0, 1.0):  # alae
        prims.append(ellipsoid(c + rot @ np.array([sign * 38 * s, 4 * s, -18 * s]), np.array([24, 18, 19]) * s, rot))
        prims.append(ellipsoid(c + rot @ np.array([sign * 30 * s, 8 * s, -45 * s]), np.array([20, 14, 18]) * s, rot))
    # S2..coccyx: flattened segments along the sacral curve, bending forwards
    pos = c + rot @ np.array([0, 2.0 * s, -26.0 * s])
    direction = -rot[:, 2]
    for n, (half_w, half_t, length) in enumerate(((40, 13, 22), (30, 11, 19), (20, 9, 16), (13, 7, 13), (7, 5, 18))):
        bend = rot_about([1.0, 0, 0], np.deg2rad(-11.0 - 3 * n))
        direction = bend @ direction
        center = pos + direction * length * s / 2
        seg_rot = rotation(-direction, [1.0, 0, 0])
        prims.append(ellipsoid(center, np.array([half_w, half_t, length / 2 + 4]) * s, seg_rot))
        pos = pos + direction * length * s
    field = Field(ctx.grid, prims, margin_mm=ctx.grid.ramp_mm + 2.0)
    for prim in prims:
        field.union(prim, 5.0)
    dens = 0.75 * p.vbmd_mean_mg_cm3
    tex = 1.0 + 0.08 * ctx.texture(field.box, 3) if not field.empty else 1.0
    ctx.canvas.paint_bone(field, t.hu["cortical"], t.cortical_density_mg_cm3, t.trabecular_hu(dens * tex), dens * tex,
                          LABELS["sacrum"], 1.0)


def paint_hip_bones(ctx: Ctx) -> None:
    lay = ctx.layout
    p = ctx.patient
    t = ctx.tissues
    s = p.spine_scale
    c1 = lay.s1_center
    for side, sign in (("left", 1.0), ("right", -1.0)):
        H = lay.hip_center[side]
        R = p.femur[side].head_radius_mm
        pw = abs(H[0])
        crest_z = lay.z_crest_mm
        si = np.array([sign * 52 * s, c1[1] + 14 * s, c1[2] - 20 * s])
        psis = np.array([sign * 42 * s, c1[1] + 44 * s, c1[2] + 2])
        apex = np.array([sign * (pw + 42 * s), float(lay.spine_xy(crest_z)[1]) + 8, crest_z])
        asis = np.array([sign * (pw + 28 * s), H[1] - 62 * s, H[2] + 62 * s])
        aiis = np.array([sign * (pw + 10 * s), H[1] - 42 * s, H[2] + 30 * s])
        post_crest = (psis + apex) / 2 + np.array([sign * -5, 10, 8])
        ant_crest = (apex + asis) / 2 + np.array([sign * 12, -8, 6])
        # the ilium rises from a broad supra-acetabular base (anterior and posterior roof points)
        roof_a = H + np.array([-sign * 2, -R * 0.75, R + 6])
        roof_p = H + np.array([-sign * 7, R * 0.85, R + 4])
        prims = [
            triangle_plate(roof_p, psis, post_crest, 5.0), triangle_plate(roof_p, post_crest, apex, 4.0),
            triangle_plate(roof_a, roof_p, apex, 4.5), triangle_plate(roof_a, apex, ant_crest, 4.0),
            triangle_plate(roof_a, ant_crest, asis, 4.5),
            ellipsoid(H + np.array([-sign * 3, 0.0, R + 10]), np.array([14, 26, 14]) * s),
            # the body of the ilium thins from the acetabulum up into the wing
            capsule(H + np.array([-sign * 3, 4.0, R + 10]), (roof_p + post_crest) / 2, 12 * s, 5 * s),
            capsule(H + np.array([-sign * 2, -6.0, R + 10]), (roof_a + apex) / 2, 11 * s, 4.5 * s),
            capsule(si, roof_p, 13 * s, 12 * s), capsule(psis, si, 10 * s, 11 * s), capsule(roof_a, roof_p, 9 * s),
            capsule(asis, aiis, 6 * s, 7 * s), capsule(aiis, H + np.array([sign * 2, -R - 4, 8.0]), 7 * s, 9 * s),
        ]
        prims += polyline([psis, post_crest, apex, ant_crest, asis], [8 * s, 7 * s, 7.5 * s, 7 * s, 7 * s])
        sym = np.array([sign * 9.0, H[1] - 58 * s, H[2] - 22 * s])
        tub = np.array([sign * (pw - 38 * s), H[1] + 22 * s, H[2] - 55 * s])
        prims += [
            capsule(H + np.array([-sign * (R * 0.5), -R * 0.75, -6.0]), sym, 9.5 * s, 8 * s),
            ellipsoid(sym + np.array([sign * 8, 2, -10]), np.array([10, 9, 18]) * s),
            capsule(H + np.array([0.0, R * 0.6, -R * 0.8]), tub, 12 * s, 13 * s),
            capsule(tub, sym + np.array([sign * 4, 4, -24 * s]), 6.5 * s, 6 * s),
            # acetabular rim mass around the joint
            sphere(H, R + 10.0),
        ]
        field = Field(ctx.grid, prims, margin_mm=ctx.grid.ramp_mm + 2.0)
        if field.empty:
            continue
        for prim in prims[:-1]:
            field.union(prim, 6.0)
        box = field.box
        # the acetabular shell: a ball of R+10 around the head, open laterally-inferiorly-anteriorly
        opening = unit([sign * 0.72, -0.32, -0.62])
        ball = prims[-1].fn(box.x, box.y, box.z)
        ball = np.maximum(ball, halfspace(H + opening * (0.2 * R), opening)(box.x, box.y, box.z))
        field.d = np.minimum(field.d, ball)
        # the socket: carve the head's ball plus the joint space (cartilage, ~2-3 mm)
        socket = sphere(H, R + 2.5).fn(box.x, box.y, box.z)
        field.d = np.maximum(field.d, -socket)
        dens = 0.7 * p.vbmd_mean_mg_cm3
        tex = 1.0 + 0.08 * ctx.texture(box, 11 if sign > 0 else 13)
        ctx.canvas.paint_bone(field, t.hu["cortical"], t.cortical_density_mg_cm3, t.trabecular_hu(dens * tex),
                              dens * tex, LABELS[f"hip_{side}"], 1.3)
        # joint cartilage on the head (painted under the femur, which covers the inner part)
        cart = sphere(H, R + 2.0)
        cfield = build(ctx.grid, [cart])
        ctx.canvas.paint_field(cfield, t.hu["cartilage"], LABELS["body"])


def paint_femurs(ctx: Ctx) -> dict:
    p = ctx.patient
    t = ctx.tissues
    geometry = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        fp = p.femur[side]
        ax = femur_axes(ctx, side)
        geometry[side] = ax
        H, P0, up, to_head = ax["head"], ax["p0"], ax["shaft_up"], ax["to_head"]
        lateral = -ax["medial"]
        post = -ax["anterior"]
        R = fp.head_radius_mm
        metal = p.metal_side == side
        gt = P0 + 12 * up + lateral * (R * 0.72) + post * 6  # tip about level with the head centre
        lt = P0 - 42 * up - lateral * (fp.shaft_radius_mm + 4) + post * 8
        prims = [
            capsule(H + to_head * 0.0, P0 + to_head * 6, fp.neck_radius_mm, fp.neck_radius_mm * 1.25),
            capsule(P0 + 8 * up, P0 - 65 * up, R * 0.88, fp.shaft_radius_mm * 1.05),
            capsule(P0 - 65 * up, P0 - 330 * up, fp.shaft_radius_mm * 1.05, fp.shaft_radius_mm * 0.95),
            ellipsoid(gt, np.array([R * 0.6, R * 0.7, R * 1.05]), rotation(up, lateral)),
            capsule(P0 - 35 * up, lt, 7.0, 6.0),
        ]
        if not metal:
            prims.insert(0, sphere(H, R))
        field = Field(ctx.grid, prims, margin_mm=ctx.grid.ramp_mm + 2.0)
        if field.empty:
            continue
        for prim in prims:
            field.union(prim, 5.0)
        box = field.box
        if metal:  # neck osteotomy: bone removed above a plane across the neck
            cut = P0 + to_head * (fp.neck_length_mm * 0.45)
            field.intersect_with(halfspace(cut, to_head))
        # distances along the axes: cortex thickens and the marrow turns fatty down the shaft
        rx, ry, rz = box.x - np.float32(P0[0]), box.y - np.float32(P0[1]), box.z - np.float32(P0[2])
        s_up = rx * np.float32(up[0]) + ry * np.float32(up[1]) + rz * np.float32(up[2])
        s_neck = rx * np.float32(to_head[0]) + ry * np.float32(to_head[1]) + rz * np.float32(to_head[2])
        shaft_w = smoothstep(-30.0, -80.0, s_up).astype(np.float32)
        cortex = 1.6 + (fp.shaft_cortex_mm - 1.6) * shaft_w
        neck_w = np.clip(s_neck / fp.neck_length_mm, 0.0, 1.0)
        head_w = smoothstep(fp.neck_length_mm - R * 0.9, fp.neck_length_mm - R * 0.3, s_neck).astype(np.float32)
        dens = fp.trab_troch_mg_cm3 + (fp.trab_neck_mg_cm3 - fp.trab_troch_mg_cm3) * neck_w
        dens = dens + (fp.trab_head_mg_cm3 - dens) * head_w
        dens = dens * (1.0 - smoothstep(-55.0, -100.0, s_up).astype(np.float32))
        dens = dens * (1.0 + 0.08 * ctx.texture(box, 17 if sign > 0 else 19))
        ctx.canvas.paint_bone(field, t.hu["cortical"], t.cortical_density_mg_cm3, t.femur_trabecular_hu(dens), dens,
                              LABELS[f"femur_{side}"], cortex)
        if metal:
            _paint_prosthesis(ctx, side, ax)
    return geometry


def _paint_prosthesis(ctx: Ctx, side: str, ax: dict) -> None:
    """Total hip: Co-Cr head in a titanium cup, titanium stem down the canal (label: metal)."""
    fp = ctx.patient.femur[side]
    H, P0, up, to_head = ax["head"], ax["p0"], ax["shaft_up"], ax["to_head"]
    R = fp.head_radius_mm
    sign = 1.0 if side == "left" else -1.0
    cup = sphere(H, R + 1.5)
    opening = unit([sign * 0.72, -0.32, -0.62])
    cfield = build(ctx.grid, [cup])
    if not cfield.empty:
        b = cfield.box
        inner = sphere(H, R - 2.0).fn(b.x, b.y, b.z)
        cfield.d = np.maximum(np.maximum(cfield.d, -inner), halfspace(H + opening * 2.0, opening)(b.x, b.y, b.z))
        ctx.canvas.paint_field(cfield, ctx.hu("titanium"), LABELS["metal"])
    head = build(ctx.grid, [sphere(H, R * 0.62)])
    ctx.canvas.paint_field(head, ctx.hu("cobalt_chrome"), LABELS["metal"])
    stem = build(ctx.grid, [capsule(H - to_head * 4, P0 + 4 * up, 6.0, 8.0),
                            capsule(P0 + 4 * up, P0 - 140 * up, 8.5, 5.0)], smooth_mm=4.0)
    ctx.canvas.paint_field(stem, ctx.hu("titanium"), LABELS["metal"])
