"""Body outline, skin, subcutaneous and visceral fat, muscles, organs, vessels, bowel and the table.

The trunk cross-section at each height is a superellipse flattened at the back (the patient lies
supine on the table); fat and muscle layers are offsets of that outline whose thickness varies with the
angle (thicker fat at the flanks, thinner at the back) and with height (gluteal muscles in the pelvis).
"""

from __future__ import annotations

import numpy as np

from ..labels import LABELS
from .context import Ctx
from .grid import build
from .layout import Y_BACK_MM, smoothstep
from .shapes import capsule, ellipse_distance, ellipsoid, halfspace, polyline, rotation, unit

SKIN_MM = 2.0
TABLE_HALF_WIDTH_MM = 225.0
TABLE_THICKNESS_MM = 45.0


def paint_table(ctx: Ctx, shift_mm: float = 0.0) -> None:
    """The patient table; ``shift_mm`` moves it down (+y) under a calibration pad."""
    g = ctx.grid
    y0 = Y_BACK_MM + 1.5 + shift_mm
    box = g.box((-TABLE_HALF_WIDTH_MM - 5, y0 - 5, -1e4), (TABLE_HALF_WIDTH_MM + 5, y0 + TABLE_THICKNESS_MM + 5, 1e4))
    if box is None:
        return
    # slightly curved top (concave), foam core between 2 mm carbon skins
    top = y0 + 0.00025 * box.x**2
    dx = np.abs(box.x) - TABLE_HALF_WIDTH_MM
    slab = np.maximum(dx, np.maximum(top - box.y, box.y - (top + TABLE_THICKNESS_MM)))
    ctx.canvas.paint_sdf(box, slab, ctx.hu("table_skin"), LABELS["table"])
    core = np.maximum(dx + 2.0, np.maximum(top + 2.0 - box.y, box.y - (top + TABLE_THICKNESS_MM - 2.0)))
    ctx.canvas.paint_sdf(box, core, ctx.hu("table_foam"), None)


def body_layers(ctx: Ctx, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On ``box``: signed distance to the skin surface (mm, radial estimate), the subcutaneous fat
    thickness and the muscle-wall thickness at each voxel's angle and height."""
    lay, p = ctx.layout, ctx.patient
    z = box.z
    a = lay.body_half_width(z).astype(np.float32)
    b = lay.body_half_depth(z).astype(np.float32)
    yc = lay.body_center_y(z).astype(np.float32)
    u = box.x
    v = box.y - yc
    r = np.sqrt(u * u + v * v)
    uq = (u / a) ** 2
    vq = (v / b) ** 2
    s = np.where(v > 0, np.sqrt(np.sqrt(uq * uq + vq * vq)), np.sqrt(uq + vq))  # flat back (n=4), round front
    d0 = r - np.where(s > 1e-4, r / np.maximum(s, 1e-4), b)  # radial distance to the outline r - R(theta)
    del uq, vq, s
    r = r + np.float32(1e-3)
    sin_lat = np.abs(u) / r
    cos_post = v / r
    pelvis = smoothstep(lay.z_crest_mm + 20, lay.z_crest_mm - 70, z).astype(np.float32)
    wave = 1.0 + 0.12 * np.sin(z / 55.0 + p.seed % 7).astype(np.float32)
    fat = p.fat_sc_mm * wave * (1.0 + 0.3 * sin_lat - 0.5 * np.clip(cos_post, 0, None) + 0.35 * pelvis * sin_lat)
    muscle = p.muscle_wall_mm * (0.8 + 0.5 * sin_lat) * (1.0 - 0.5 * np.clip(cos_post, 0, None))
    muscle = muscle + 38.0 * p.muscle_size * pelvis * np.clip(0.9 * cos_post + 0.5 * sin_lat, 0, None)
    return d0, fat, muscle


def clip_to_cavity(ctx: Ctx, field, margin_mm: float = 1.0):
    """Keep ``field`` inside the abdominal cavity (within the muscle wall), ``margin_mm`` from it."""
    if field.empty:
        return field
    cavity = ctx.notes["cavity_sdf"][field.box.slices]
    field.d = np.maximum(field.d, cavity + np.float32(margin_mm))
    return field


def paint_body(ctx: Ctx) -> None:
    """Skin, subcutaneous fat, muscle wall, visceral fat (in z slabs to bound memory). Keeps the distances
    to the inner surface of the fat and of the muscle wall (float16) for the structures painted later."""
    c = ctx.canvas
    under_fat = np.empty(ctx.grid.shape, np.float16)
    cavity = np.empty(ctx.grid.shape, np.float16)
    for box in ctx.grid.z_chunks():
        d0, fat, muscle = body_layers(ctx, box)
        c.paint_sdf(box, d0, ctx.hu("skin"), LABELS["body"])
        d0 += SKIN_MM
        c.paint_sdf(box, d0, ctx.hu("fat"), LABELS["subcutaneous_fat"])
        d0 += fat
        under_fat[box.slices] = d0
        c.paint_sdf(box, d0, ctx.hu("other_muscle"), LABELS["other_muscle"])
        d0 += muscle
        cavity[box.slices] = d0
        c.paint_sdf(box, d0, ctx.hu("fat"), LABELS["visceral_fat"])
    ctx.notes["under_fat_sdf"] = under_fat
    ctx.notes["cavity_sdf"] = cavity


def paint_paraspinal(ctx: Ctx) -> None:
    """Erector spinae + multifidus: fill the space behind the transverse processes, beside the spinous
    processes, up to the subcutaneous fat, about 70-85 mm to each side (example CT at L1)."""
    p, g = ctx.patient, ctx.grid
    z_top = g.origin_lps_mm[2] + g.shape[0] * g.spacing_mm[0]
    z_bot = -70.0
    x_half = 95.0
    whole = g.box((-x_half - 20, Y_BACK_MM - 2 * p.body_half_depth_mm, z_bot), (x_half + 20, Y_BACK_MM, z_top))
    if whole is None:
        return
    for box in g.z_chunks(whole):
        _paint_paraspinal_slab(ctx, box, z_bot)


def _paint_paraspinal_slab(ctx: Ctx, box, z_bot: float) -> None:
    lay, p = ctx.layout, ctx.patient
    under_fat = ctx.notes["under_fat_sdf"][box.slices].astype(np.float32)
    zz = box.z.ravel()
    xs, ys = lay.spine_xy(zz)
    depth = np.interp(zz, [-50, 0, 200], [22, 30, 26])
    y_front = (ys + depth / 2 + 7.0).astype(np.float32).reshape(-1, 1, 1)
    xs = xs.astype(np.float32).reshape(-1, 1, 1)
    thor = smoothstep(lay.vertebrae["L1"].center[2], lay.vertebrae["T11"].center[2], zz)
    sac = smoothstep(5.0, -60.0, zz)
    width = (78.0 * (1 - 0.2 * thor) * (1 - 0.75 * sac) * p.muscle_size ** 0.5).astype(np.float32).reshape(-1, 1, 1)
    dx = box.x - xs
    c = ctx.canvas
    ry = (np.float32(Y_BACK_MM) - y_front) * 0.62
    for side, sign in (("left", 1.0), ("right", -1.0)):
        u = (dx - sign * width * 0.47) / (width * 0.56)
        v = (box.y - (y_front + ry * 0.92)) / ry
        k0 = np.sqrt(u * u + v * v)
        k1 = np.sqrt((u / (width * 0.56)) ** 2 + (v / ry) ** 2)
        ell = ellipse_distance(k0, k1, 20.0)
        sdf = np.maximum(np.maximum(ell, under_fat), np.float32(z_bot + 5) - box.z)
        c.paint(box, c.fraction(sdf), ctx.hu("paraspinal"), LABELS[f"paraspinal_{side}"])


def paint_organs(ctx: Ctx) -> None:
    lay, p, c = ctx.layout, ctx.patient, ctx.canvas
    V = lay.vertebrae
    zt11, zt12, zl1, zl2 = (V[lv].center[2] for lv in ("T11", "T12", "L1", "L2"))
    z_mid = (zt12 + zl1) / 2
    A = float(lay.body_half_width(z_mid))
    B = float(lay.body_half_depth(z_mid))
    yc = float(lay.body_center_y(z_mid))
    inner = p.fat_sc_mm + p.muscle_wall_mm + SKIN_MM
    A_in, B_in = A - inner * 1.2, B - inner
    lean = 1.0 - 0.25 * p.fat_visceral
    seed = p.seed
    _paint_bowel(ctx, A_in, B_in)  # first: the solid organs cover any overlap
    # lung bases: the posterior costophrenic recesses reach down to about T12; the liver and spleen
    # (painted next) form the diaphragm domes under them
    zt10 = V["T10"].center[2]
    tilt = rotation([0.0, -0.45, 1.0], [1.0, 0.0, 0.0])  # lowest point posterior
    for sign in (-1.0, 1.0):
        lung = build(ctx.grid, [ellipsoid([sign * 0.5 * A_in, yc + 0.3 * B_in, zt10 + 62],
                                          [0.4 * A_in, 0.6 * B_in, 105], tilt, 3.0, seed + 11)])
        clip_to_cavity(ctx, lung, 2.0)
        if not lung.empty:
            c.paint_sdf(lung.box, lung.d, ctx.hu("lung") + 25.0 * ctx.texture(lung.box, 29), LABELS["body"])
    # liver: large right lobe plus a left lobe crossing the midline anteriorly
    liver = build(ctx.grid, [
        ellipsoid([-0.52 * A_in, yc + 0.05 * B_in, zt12 + 12], [0.5 * A_in * lean + 8, 0.72 * B_in, 88], None, 5.0,
                  seed + 1),
        ellipsoid([0.0, yc - 0.45 * B_in, zt11 + 20], [0.5 * A_in, 0.35 * B_in, 48], None, 4.0, seed + 2),
    ], smooth_mm=20.0)
    c.paint_field(clip_to_cavity(ctx, liver), ctx.hu("liver"), LABELS["liver"])
    # stomach (left upper quadrant, anterior), partly filled with gas
    st_c = np.array([0.35 * A_in, yc - 0.35 * B_in, zt12 + 15])
    stomach = build(ctx.grid, [ellipsoid(st_c, [0.3 * A_in, 0.3 * B_in, 55], rotation([0.3, 0.2, 1], [1, 0, 0]),
                                         4.0, seed + 3)])
    clip_to_cavity(ctx, stomach)
    c.paint_field(stomach, ctx.hu("bowel_wall"), LABELS["body"])
    if not stomach.empty:
        bx = stomach.box
        lumen = stomach.d + 3.0
        c.paint_sdf(bx, lumen, ctx.hu("bowel_fluid"), None)
        gas_y = st_c[1] - 0.3 * B_in * (0.3 + 0.7 * ctx.rng.random())  # air-fluid level, anterior
        gas = np.maximum(lumen, halfspace([0, gas_y, 0], [0, 1, 0])(bx.x, bx.y, bx.z))
        c.paint_sdf(bx, gas, ctx.hu("air"), LABELS["bowel_gas"])
    spleen = build(ctx.grid, [ellipsoid([0.66 * A_in, yc + 0.42 * B_in, zt11], [24, 0.38 * B_in, 52],
                                        rotation([0.4, -0.3, 1], [1, 1, 0]), 3.0, seed + 4)])
    c.paint_field(clip_to_cavity(ctx, spleen), ctx.hu("spleen"), LABELS["spleen"])
    # kidneys: beside L1-L2, upper pole medial and posterior, hilum anteromedial with sinus fat
    for side, sign in (("left", 1.0), ("right", -1.0)):
        vf = V["L1"]
        x0, y0 = lay.spine_xy(vf.center[2])
        zk = (zl1 + zl2) / 2 + (0.0 if side == "left" else -14.0) + 6.0
        kc = np.array([float(x0) + sign * (vf.width_mm / 2 + 46), float(y0) + 8.0, zk])
        rot = rotation([-sign * 0.22, 0.22, 1.0], [sign, -0.35, 0.0])
        perirenal = build(ctx.grid, [ellipsoid(kc, [27 + 7, 22 + 7, 54 + 6], rot, 2.0, seed + 7)])
        c.paint_field(perirenal, ctx.hu("fat"), LABELS["visceral_fat"])
        kid = build(ctx.grid, [ellipsoid(kc, [27, 22, 54], rot, 1.5, seed + 5)])
        c.paint_field(kid, ctx.hu("kidney"), LABELS[f"kidney_{side}"])
        sinus = build(ctx.grid, [ellipsoid(kc + rot @ np.array([-9.0, -7.0, 0]), [11, 9, 30], rot)])
        c.paint_field(sinus, ctx.hu("renal_sinus"), LABELS["visceral_fat"])
    # urinary bladder in the pelvis
    H = lay.hip_center["left"]
    fill = 0.6 + 0.5 * ctx.rng.random()
    bl = build(ctx.grid, [ellipsoid([0.0, H[1] - 42, H[2] + 12], np.array([38, 28, 30]) * fill, None, 2.0, seed + 6)])
    c.paint_field(clip_to_cavity(ctx, bl), ctx.hu("urine"), LABELS["body"])


def _paint_bowel(ctx: Ctx, A_in: float, B_in: float) -> None:
    lay, p, rng = ctx.layout, ctx.patient, ctx.rng
    V = lay.vertebrae
    H = lay.hip_center["left"]
    zl1, zl2, zl3, zl4 = (V[lv].center[2] for lv in ("L1", "L2", "L3", "L4"))
    yc = float(lay.body_center_y(zl2))
    jitter = lambda s: rng.normal(0, s, 3)  # noqa: E731
    colon = [
        [-0.68 * A_in, yc + 0.1 * B_in, H[2] + 35], [-0.66 * A_in, yc + 0.05 * B_in, zl3], [-0.6 * A_in, yc, zl1],
        [-0.3 * A_in, yc - 0.62 * B_in, zl2 - 10], [0.3 * A_in, yc - 0.62 * B_in, zl2 - 5],
        [0.65 * A_in, yc + 0.05 * B_in, V["T12"].center[2]], [0.7 * A_in, yc + 0.15 * B_in, zl2],
        [0.68 * A_in, yc + 0.15 * B_in, zl4], [0.35 * A_in, yc - 0.15 * B_in, H[2] + 45],
        [0.05 * A_in, yc + 0.45 * B_in, H[2] + 25], [0.0, yc + 0.6 * B_in, H[2] - 60],
    ]
    colon = [np.asarray(q) + jitter(5.0) for q in colon]
    radii = [24, 22, 22, 21, 21, 22, 20, 19, 17, 17, 15]
    scale = rng.uniform(0.75, 1.05)
    for n in range(len(colon) - 1):
        # supine: gas rises to the anterior part of the lumen; often none at all
        gas_level = rng.uniform(-0.95, 0.2) if rng.random() < 0.55 else -1.0
        _bowel_segment(ctx, colon[n], colon[n + 1], radii[n] * scale, radii[n + 1] * scale, "stool", gas_level)
    # small-bowel loops fill the anterior abdomen; fewer (more mesenteric fat between) in obese patients
    n_loops = int(18 + 22 * (1.0 - p.fat_visceral))
    for _ in range(n_loops):
        start = np.array([rng.uniform(-0.5, 0.5) * A_in, yc + rng.uniform(-0.75, 0.15) * B_in,
                          rng.uniform(H[2] + 25, zl1)])
        pts = [start]
        for _ in range(int(rng.integers(2, 6))):
            pts.append(pts[-1] + rng.normal(0, 18, 3))
        rad = rng.uniform(9, 14)
        content = "bowel_fluid" if rng.random() < 0.5 else "bowel_wall"
        gas = rng.uniform(-1.0, -0.5) if rng.random() < 0.25 else -1.0
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            _bowel_segment(ctx, a, b, rad, rad, content, gas)


def _keep_off_the_spine(ctx: Ctx, field) -> None:
    """Bowel stays intraperitoneal: out of the block from 3 mm in front of the vertebral bodies backwards,
    psoas-wide (the retroperitoneum and the spine)."""
    box = field.box
    zz = box.z.ravel()
    xs, ys = ctx.layout.spine_xy(zz)
    half_w = np.float32(ctx.patient.body_size_mm["L3"][0] / 2 + 28.0)
    front = (ys - ctx.patient.body_size_mm["L3"][1] / 2 - 3.0).astype(np.float32).reshape(-1, 1, 1)
    block = np.maximum(np.abs(box.x - xs.astype(np.float32).reshape(-1, 1, 1)) - half_w, front - box.y)
    field.d = np.maximum(field.d, -block)


def _bowel_segment(ctx: Ctx, a, b, ra: float, rb: float, content: str, gas_level: float) -> None:
    """A bowel tube: wall (label bowel), content, and gas above the fluid level (anterior, supine)."""
    c = ctx.canvas
    f = clip_to_cavity(ctx, build(ctx.grid, [capsule(a, b, ra, rb)]))
    if f.empty:
        return
    _keep_off_the_spine(ctx, f)
    c.paint_field(f, ctx.hu("bowel_wall"), LABELS["bowel"])
    box = f.box
    lumen = f.d + 2.5
    hu = ctx.hu(content)
    if content == "stool":  # mottled: gas bubbles in faeces
        hu = hu + 100.0 * ctx.texture(box, 23)
    c.paint_sdf(box, lumen, hu, None)
    if gas_level > -0.9:
        y_level = (a[1] + b[1]) / 2 + gas_level * (ra + rb) / 2
        gas = np.maximum(lumen, box.y - np.float32(y_level))
        c.paint_sdf(box, gas, ctx.hu("air"), LABELS["bowel_gas"])


def paint_vessels(ctx: Ctx) -> None:
    lay, p, c = ctx.layout, ctx.patient, ctx.canvas
    V = lay.vertebrae
    levels = ("T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4")
    r_ao = float(np.clip(9.5 + 0.06 * (p.age - 40) + 1.5 * (p.sex == "M"), 8, 15))
    ao = [V[lv].point(V[lv].width_mm * 0.3, -V[lv].depth_mm / 2 - r_ao - 2.5, 0) for lv in levels]
    ivc = [V[lv].point(-V[lv].width_mm * 0.42 - 4, -V[lv].depth_mm / 2 - 9.0, 0) for lv in levels + ("L5",)]
    ao[0] = ao[0] + np.array([0, 8.0, 0])  # aortic hiatus: nearer the spine
    c.paint_field(build(ctx.grid, polyline(ao, r_ao)), ctx.hu("blood_artery"), LABELS["aorta"])
    c.paint_field(build(ctx.grid, polyline(ivc, 11.0)), ctx.hu("blood_vein"), LABELS["inferior_vena_cava"])
    for side, sign in (("left", 1.0), ("right", -1.0)):
        H = lay.hip_center[side]
        R = p.femur[side].head_radius_mm
        art = [ao[-1], ao[-1] + np.array([sign * 25.0, 10.0, -35.0]),
               np.array([sign * (abs(H[0]) - 35), H[1] - 15, H[2] + 40]), H + np.array([-sign * 12, -R - 18, 0])]
        c.paint_field(build(ctx.grid, polyline(art, [7.0, 6.0, 5.0, 4.5])), ctx.hu("blood_artery"), LABELS["body"])
        vein = [ivc[-1], ivc[-1] + np.array([sign * 28.0, 14.0, -30.0]),
                np.array([sign * (abs(H[0]) - 40), H[1] - 5, H[2] + 40]), H + np.array([-sign * 24, -R - 14, 0])]
        c.paint_field(build(ctx.grid, polyline(vein, [8.0, 7.0, 6.0, 5.5])), ctx.hu("blood_vein"), LABELS["body"])


def paint_muscles(ctx: Ctx) -> None:
    lay, p, c = ctx.layout, ctx.patient, ctx.canvas
    V = lay.vertebrae
    ms = p.muscle_size
    from .pelvis import femur_axes

    for side, sign in (("left", 1.0), ("right", -1.0)):
        H = lay.hip_center[side]
        R = p.femur[side].head_radius_mm
        ax = femur_axes(ctx, side)
        lt = ax["p0"] - 42 * ax["shaft_up"] + ax["medial"] * 8 - ax["anterior"] * 6  # lesser trochanter
        # quadratus lumborum (other muscle), lateral to the psoas
        ql = [V[lv].point(sign * (V[lv].width_mm / 2 + 34), V[lv].depth_mm / 2 + 6, 0)
              for lv in ("T12", "L1", "L2", "L3", "L4")]
        c.paint_field(build(ctx.grid, polyline(ql, [5 * ms, 8 * ms, 10 * ms, 10 * ms, 8 * ms])), ctx.hu("other_muscle"),
                      LABELS["other_muscle"])
        # gluteus medius/minimus lateral to the iliac wing; thigh muscles around the shaft
        glut = build(ctx.grid, [ellipsoid(np.array([sign * (abs(H[0]) + 38), H[1] + 12, H[2] + 48]),
                                          np.array([22, 48, 45]) * ms, None, 3.0, p.seed + 9)])
        c.paint_field(glut, ctx.hu("other_muscle"), LABELS["other_muscle"])
        p0, up = ax["p0"], ax["shaft_up"]
        thigh = build(ctx.grid, [capsule(p0 - 20 * up, p0 - 320 * up, 55 * ms, 60 * ms)])
        c.paint_field(thigh, ctx.hu("other_muscle"), LABELS["other_muscle"])
        # psoas: thin at T12, thickening caudally beside the bodies, then over the hip joint to the lesser trochanter
        pts, radii = [], []
        for lv, r in (("T12", 4.0), ("L1", 8.0), ("L2", 12.0), ("L3", 16.0), ("L4", 19.0), ("L5", 21.0)):
            vf = V[lv]
            rr = r * ms
            pts.append(vf.point(sign * (vf.width_mm / 2 + 0.8 * rr - 1.0), -0.05 * vf.depth_mm, -vf.height_mm / 2))
            radii.append(rr)
        pts[0] = V["T12"].point(sign * (V["T12"].width_mm / 2 + 2.0), 0.0, 0.0)
        pts += [np.array([sign * (abs(H[0]) - 32), H[1] - 28, H[2] + 45]),
                H + np.array([-sign * 6, -R - 12, -5]), lt]
        radii += [20.0 * ms, 15.0 * ms, 7.0]
        ps = build(ctx.grid, polyline(pts, radii), smooth_mm=4.0)
        label = LABELS[f"psoas_{side}"]
        c.paint_field(ps, ctx.hu("psoas"), label)
        # iliacus (part of TotalSegmentator's iliopsoas) in the iliac fossa
        fossa = np.array([sign * (abs(H[0]) + 5), H[1] - 8, (lay.z_crest_mm + H[2]) / 2 + 8])
        il_rot = rotation([sign * 0.35, -0.3, 1.0], [sign, 0.4, 0])
        il = build(ctx.grid, [ellipsoid(fossa, np.array([13, 30, 42]) * ms, il_rot, 2.0, p.seed + 8)])
        c.paint_field(il, ctx.hu("psoas"), label)
    _ = unit
