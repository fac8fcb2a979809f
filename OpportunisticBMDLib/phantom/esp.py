"""ESP-like calibration phantom (``--region esp``).

The European Spine Phantom (QRM; Kalender et al., Eur J Radiol 1995;20:83-92) holds three vertebrae of
trabecular density 50, 100 and 200 mg HA/cm3 in a water-equivalent body. We model it with the same
physics as the digital patients: HA in a water-equivalent matrix (volume mixture), cortical shells of a
denser HA mixture, and three calibration rods (water, 100 and 200 mg HA/cm3) for asynchronous
calibration, as a calibration pad would provide.
"""

from __future__ import annotations

import time

import numpy as np

from .. import __version__
from .. import materials as m
from ..labels import LABELS, vertebra_label
from ..materials import Beam
from ..progress import Progress
from ..volume import Volume
from .grid import Canvas, Grid
from .layout import VertebraFrame, smoothstep
from .options import Phantom, PhantomOptions
from .scanner import add_noise_and_blur, apply_offset_field, draw_scanner_settings, quantise
from .shapes import capsule, ellipse_distance
from .soft_tissue import TABLE_HALF_WIDTH_MM, TABLE_THICKNESS_MM
from .spine import body_prim

ESP_TRABECULAR_MG_CM3 = {"L1": 50.0, "L2": 100.0, "L3": 200.0}  # Kalender et al. 1995 (QRM ESP)
ESP_CORTICAL_MG_CM3 = 800.0  # dense shell; the ESP's cortical inserts are of this order (check QRM spec)
ESP_CORTEX_MM = 2.0
ROD_MG_CM3 = (0.0, 100.0, 200.0)
ROD_RADIUS_MM = 10.0
BODY_HALF_AXES_MM = (130.0, 90.0)


def ha_in_water_hu(ha_mg_cm3: float, beam: Beam) -> float:
    v = ha_mg_cm3 / m.HA_DENSITY_MG_CM3
    return m.hu(m.mix({"hydroxyapatite": v, "water": 1 - v}), beam) if v > 0 else m.hu("water", beam)


def generate_esp(seed: int, options: PhantomOptions, progress: Progress) -> Phantom:
    t0 = time.perf_counter()
    streams = np.random.SeedSequence(int(seed)).spawn(6)
    rng_scan = np.random.default_rng(streams[4])
    rng_noise = np.random.default_rng(streams[5] if options.noise_seed is None else
                                      np.random.SeedSequence([int(seed), int(options.noise_seed)]))
    scanner = draw_scanner_settings(options, rng_scan, options.spacing_mm)
    beam = Beam(float(options.kvp), patient_water_cm=float(options.patient_water_cm or 20.0))
    sz, sy, sx = options.spacing_mm
    a, b = BODY_HALF_AXES_MM
    y_back = b
    z0, z1 = -60.0, 60.0
    x0, x1, y0, y1 = -a - 10, a + 10, -b - 10, y_back + TABLE_THICKNESS_MM + 6
    shape = (int(np.ceil((z1 - z0) / sz)) + 1, int(np.ceil((y1 - y0) / sy)) + 1, int(np.ceil((x1 - x0) / sx)) + 1)
    if options.shape:
        shape = tuple(int(n) for n in options.shape)
        x0, y0, z0 = -(shape[2] - 1) * sx / 2, (y0 + y1) / 2 - (shape[1] - 1) * sy / 2, -(shape[0] - 1) * sz / 2
    dx, dy, dz = options.grid_shift_mm
    grid = Grid(shape, (sz, sy, sx), (x0 + dx, y0 + dy, z0 + dz))
    c = Canvas(grid, background_hu=m.hu("air", beam))
    # table
    tb = grid.box((-TABLE_HALF_WIDTH_MM, y_back + 1.5, -1e4),
                  (TABLE_HALF_WIDTH_MM, y_back + 1.5 + TABLE_THICKNESS_MM, 1e4))
    if tb is not None:
        c.paint(tb, np.ones(tb.shape, np.float32), m.hu(m.mix({"air": 0.93, "water": 0.07}), beam), LABELS["table"])
    # water-equivalent body: elliptic cylinder
    full = grid.full_box()
    u, v = full.x / a, full.y / b
    k0 = np.sqrt(u * u + v * v)
    k1 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    body = np.broadcast_to(ellipse_distance(k0, k1, b), grid.shape)
    c.paint_sdf(full, body, m.hu("water", beam), LABELS["body"])
    # three vertebrae stacked along z, posterior half of the body
    cortical_hu = ha_in_water_hu(ESP_CORTICAL_MG_CM3, beam)
    h, gap = 25.0, 10.0
    truth_levels = {}
    core_masks = {}
    for n, (level, ha) in enumerate(ESP_TRABECULAR_MG_CM3.items()):
        zc = (1 - n) * (h + gap)  # L1 on top
        vf = VertebraFrame(level, np.array([0.0, 20.0, zc]), np.eye(3), 44.0, 32.0, h)
        body_p = body_prim(vf)
        arch = [capsule(vf.point(s * 14, 14, 0), vf.point(s * 12, 32, 0), 4.0) for s in (-1, 1)]
        arch.append(capsule(vf.point(-12, 32, 0), vf.point(12, 32, 0), 4.0))
        arch.append(capsule(vf.point(0, 32, 0), vf.point(0, 55, 0), 4.0))
        from .grid import Field

        field = Field(grid, [body_p] + arch, margin_mm=grid.ramp_mm + 2)
        if field.empty:
            continue
        for prim in [body_p] + arch:
            field.union(prim, 2.0)
        core = c.paint_bone(field, cortical_hu, ESP_CORTICAL_MG_CM3, ha_in_water_hu(ha, beam), ha,
                            vertebra_label(level), ESP_CORTEX_MM)
        d_body = body_p.fn(field.box.x, field.box.y, field.box.z)
        core_masks[level] = (field.box, (d_body + ESP_CORTEX_MM <= -0.5 * grid.ramp_mm) & (core >= 0.999))
    # calibration rods along z, anterior part of the body
    rods = []
    for n, ha in enumerate(ROD_MG_CM3):
        center = np.array([(n - 1) * 60.0, -50.0])
        box = grid.box((center[0] - 15, center[1] - 15, z0), (center[0] + 15, center[1] + 15, z1))
        d = np.sqrt((box.x - center[0]) ** 2 + (box.y - center[1]) ** 2) - ROD_RADIUS_MM
        d = np.maximum(np.broadcast_to(d, box.shape), np.abs(box.z) - 55.0)
        label = LABELS[f"calibration_rod_{n + 1}"]
        c.paint_sdf(box, d, ha_in_water_hu(ha, beam), label, ha)
        rods.append({"label": label, "ha_mg_cm3": ha, "center_lps_mm": [float(center[0]), float(center[1]), 0.0],
                     "radius_mm": ROD_RADIUS_MM, "hu_ideal": round(ha_in_water_hu(ha, beam), 3)})
    for level, (box, mask) in core_masks.items():
        sel = mask & (c.labels[box.slices] == vertebra_label(level))
        vals = c.density[box.slices][sel]
        nominal = ESP_TRABECULAR_MG_CM3[level]
        truth_levels[level] = {
            "vbmd_mg_cm3": round(float(vals.mean()), 4) if vals.size else None, "nominal_vbmd_mg_cm3": nominal,
            "core_voxel_count": int(sel.sum()), "complete_in_fov": True,
            "hu_ideal": round(ha_in_water_hu(nominal, beam), 3),
            "center_lps_mm": [0.0, 20.0, (1 - list(ESP_TRABECULAR_MG_CM3).index(level)) * (h + gap)]}
    hu0 = m.hu("water", beam)
    slope = (ha_in_water_hu(200.0, beam) - hu0) / 200.0
    truth = {
        "seed": int(seed), "region": "esp",
        "generator": {"name": "OpportunisticBMD ESP-like calibration phantom", "version": __version__},
        "grid": {"shape_kji": list(grid.shape), "spacing_mm": [sx, sy, sz],
                 "origin_lps_mm": [round(float(v), 4) for v in grid.origin_lps_mm]},
        "spine": {"levels": truth_levels, "summary": {"vbmd_mg_cm3": None, "levels_used": []}},
        "esp": {"reference": "European Spine Phantom (QRM), Kalender et al. Eur J Radiol 1995;20:83-92",
                "inserts_mg_cm3": dict(ESP_TRABECULAR_MG_CM3), "cortical_mg_cm3": ESP_CORTICAL_MG_CM3,
                "matrix": "water-equivalent", "rods": rods},
        "exact_calibration": {"trabecular_hu_at_0_mg_cm3": round(hu0, 4), "hu_per_mg_cm3": round(slope, 6),
                              "slope_mg_cm3_per_hu": round(1 / slope, 6), "intercept_mg_cm3": round(-hu0 / slope, 4)},
        "scanner": {**scanner.as_dict(grid.spacing_mm), "effective_kev": round(beam.effective_kev, 3),
                    "patient_water_cm": beam.patient_water_cm},
        "label_ids": dict(LABELS),
    }
    hu = c.hu
    apply_offset_field(hu, (c.labels != 0) & (c.labels != LABELS["table"]), grid, (0.0, 0.0), (a, b), scanner,
                       rng_scan)
    add_noise_and_blur(hu, grid.spacing_mm, scanner, rng_noise)
    ct = quantise(hu, scanner)
    truth["timing_s"] = {"total": round(time.perf_counter() - t0, 3)}
    meta = {"phantom_seed": int(seed), "region": "esp"}
    _ = smoothstep
    progress(1.0, "done")
    return Phantom(ct=Volume(ct, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta)),
                   labels=Volume(c.labels, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta)),
                   density_mg_cm3=Volume(c.density, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta)),
                   truth=truth)
