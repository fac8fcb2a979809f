"""``generate_phantom(seed, options)``: a digital patient with known truth; ``write_phantom`` to disk."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..hip.phantom_truth import hip_abmd_truth
from ..labels import LABELS
from ..materials import Beam
from ..progress import Progress, no_progress
from ..volume import Volume
from . import pad, pelvis, soft_tissue, spine
from .context import Ctx
from .grid import Canvas, Grid
from .layout import Y_BACK_MM, Layout, build_layout
from .options import REGIONS, Phantom, PhantomOptions
from .patient import LEVELS, sample_patient
from .scanner import (
    ScannerSettings,
    add_noise_and_blur,
    apply_offset_field,
    draw_scanner_settings,
    metal_streaks,
    quantise,
)
from .tissues import tissue_table
from .truth import hip_geometry, spine_truth

MARGIN_MM = 12.0


def _z_range(layout: Layout, options: PhantomOptions) -> tuple[float, float]:
    V = layout.vertebrae
    disc = layout.disc_below

    def top_of(lvl: str) -> float:  # middle of the disc above ``lvl``
        vf = V[lvl]
        above = LEVELS[LEVELS.index(lvl) - 1] if LEVELS.index(lvl) > 0 else "T9"
        return float(vf.center[2] + vf.height_mm / 2 + disc[above] / 2)

    def bottom_of(lvl: str) -> float:
        if lvl in ("femur", "hip"):
            return float(min(h[2] for h in layout.hip_center.values()) - 120.0)
        if lvl in ("S1", "sacrum"):
            return -60.0
        vf = V[lvl]
        return float(vf.center[2] - vf.height_mm / 2 - disc[lvl] / 2)

    if options.fov_levels:
        top, bottom = options.fov_levels
        if top not in LEVELS or bottom not in LEVELS + ("S1", "sacrum", "femur", "hip"):
            raise ValueError(f"fov levels {top!r}, {bottom!r}: top one of {', '.join(LEVELS)}; bottom also S1 or femur")
        z0, z1 = bottom_of(bottom), top_of(top)
        if z1 <= z0:
            raise ValueError(f"fov levels {top!r} to {bottom!r}: the top level must lie above the bottom one")
        return z0, z1
    if options.region == "spine":
        return bottom_of("L3"), top_of("T11")
    if options.region == "hip":
        return bottom_of("femur"), layout.z_crest_mm + 15.0
    return bottom_of("femur"), top_of("T10")


def make_grid(layout: Layout, options: PhantomOptions) -> Grid:
    sz, sy, sx = (float(s) for s in options.spacing_mm)
    z0, z1 = _z_range(layout, options)
    zs = np.linspace(z0, z1, 32)
    half_w = float(np.max(layout.body_half_width(zs)))
    front = float(np.min(layout.body_center_y(zs) - layout.body_half_depth(zs)))
    x0, x1 = -half_w - MARGIN_MM, half_w + MARGIN_MM
    y0, y1 = front - MARGIN_MM, Y_BACK_MM + soft_tissue.TABLE_THICKNESS_MM + 8.0
    y1 += pad.table_shift_mm(options.calibration_pad)
    if options.fov_mm:
        cy = (y0 + y1) / 2
        x0, x1 = -options.fov_mm / 2, options.fov_mm / 2
        y0, y1 = cy - options.fov_mm / 2, cy + options.fov_mm / 2
    shape = [int(np.ceil((z1 - z0) / sz)) + 1, int(np.ceil((y1 - y0) / sy)) + 1, int(np.ceil((x1 - x0) / sx)) + 1]
    if options.shape:
        cz, cy, cx = (z0 + z1) / 2, (y0 + y1) / 2, (x0 + x1) / 2
        shape = [int(n) for n in options.shape]
        z0, y0, x0 = cz - (shape[0] - 1) * sz / 2, cy - (shape[1] - 1) * sy / 2, cx - (shape[2] - 1) * sx / 2
    dx, dy, dz = options.grid_shift_mm
    return Grid(tuple(shape), (sz, sy, sx), (x0 + dx, y0 + dy, z0 + dz))


def generate_phantom(seed: int, options: PhantomOptions | None = None, progress: Progress = no_progress) -> Phantom:
    """Build digital patient ``seed`` (reproducible: same seed and options give the same arrays)."""
    options = options or PhantomOptions()
    if options.region not in REGIONS:
        raise ValueError(f"unknown region {options.region!r}; choose one of {', '.join(REGIONS)}")
    if options.region == "esp":
        from .esp import generate_esp

        return generate_esp(seed, options, progress)
    t_start = time.perf_counter()
    streams = np.random.SeedSequence(int(seed)).spawn(6)
    rng_patient, rng_opt, rng_layout, rng_paint, rng_scan = (np.random.default_rng(s) for s in streams[:5])
    rng_noise = np.random.default_rng(streams[5] if options.noise_seed is None else
                                      np.random.SeedSequence([int(seed), int(options.noise_seed)]))
    patient = sample_patient(rng_patient, rng_opt, int(seed), bmd_mg_cm3=options.bmd_mg_cm3,
                             marrow_fat_fraction=options.marrow_fat_fraction,
                             muscle_fat_infiltration=options.muscle_fat_infiltration,
                             fracture_level=options.fracture, metal_side=options.metal, contrast=options.contrast,
                             contrast_phase=options.contrast_phase)
    if options.fracture and options.fracture not in LEVELS:
        raise ValueError(f"fracture level must be one of {', '.join(LEVELS)}")
    if options.leg_rotation_deg is not None:  # positioning only: the same femurs, rotated about their shafts
        for fp in patient.femur.values():
            fp.external_rotation_deg = float(options.leg_rotation_deg)
    layout = build_layout(patient, rng_layout)
    scanner = draw_scanner_settings(options, rng_scan, options.spacing_mm)
    # Beam hardening depends on the patient: water path ~ the mean body diameter (quantised to 2 cm so
    # spectra are cached across a cohort).
    water_cm = options.patient_water_cm
    if water_cm is None:
        water_cm = float(np.clip(2 * round((patient.body_half_width_mm + patient.body_half_depth_mm) / 20.0), 16, 40))
    beam = Beam(float(options.kvp), patient_water_cm=float(water_cm))
    progress(0.05, "tissue physics")
    overrides = dict(options.hu_overrides)
    tissues = tissue_table(beam, marrow_fat_fraction=patient.marrow_fat_fraction,
                           femur_marrow_fat_fraction=patient.femur_marrow_fat_fraction, muscle_fat=patient.muscle_fat,
                           cortical_porosity=patient.cortical_porosity, iodine_mg_ml=patient.iodine_mg_ml,
                           overrides=overrides)
    if options.intensity_jitter_hu > 0:
        jit = np.random.default_rng(np.random.SeedSequence([int(seed), 99]))
        for name in sorted(tissues.hu):
            if name not in overrides and name not in ("air", "titanium", "cobalt_chrome"):
                tissues.hu[name] += float(jit.normal(0, options.intensity_jitter_hu))
        marrow_shift = float(jit.normal(0, options.intensity_jitter_hu))  # same marrow shift in all bones
        tissues.trab_hu0 += marrow_shift
        tissues.femur_trab_hu0 += marrow_shift
    if options.random_fov and not options.fov_levels:
        rng_fov = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
        top = str(rng_fov.choice(["T10", "T11", "T12", "L1"]))
        bottom = str(rng_fov.choice(["L3", "L4", "L5", "S1", "femur", "femur"]))
        options = replace(options, fov_levels=(top, bottom))
    grid = make_grid(layout, options)
    canvas = Canvas(grid, background_hu=tissues.hu["air"])
    ctx = Ctx(grid=grid, canvas=canvas, tissues=tissues, patient=patient, layout=layout, rng=rng_paint,
              options=options)
    progress(0.1, "body")
    soft_tissue.paint_table(ctx, pad.table_shift_mm(options.calibration_pad))
    pad_truth = pad.paint_calibration_pad(ctx) if options.calibration_pad else None
    soft_tissue.paint_body(ctx)
    progress(0.3, "organs")
    soft_tissue.paint_organs(ctx)
    soft_tissue.paint_vessels(ctx)
    soft_tissue.paint_muscles(ctx)
    soft_tissue.paint_paraspinal(ctx)
    progress(0.5, "bones")
    spine.paint_canal(ctx)
    spine.paint_discs(ctx)
    spine.paint_vertebrae(ctx)
    spine.paint_ribs(ctx)
    pelvis.paint_sacrum(ctx)
    pelvis.paint_hip_bones(ctx)
    femur_geometry = pelvis.paint_femurs(ctx)
    ctx.notes.clear()  # free the body-layer distance maps
    t_anatomy = time.perf_counter() - t_start
    progress(0.7, "truth")
    truth = _truth(ctx, seed, options, scanner, beam, femur_geometry)
    if pad_truth is not None:
        truth["calibration_pad"] = pad_truth
    progress(0.75, "scanner")
    hu = canvas.hu
    zc = float(layout.vertebrae["L2"].center[2])
    inside = (canvas.labels != 0) & (canvas.labels != LABELS["table"])
    apply_offset_field(hu, inside, grid, (0.0, float(layout.body_center_y(zc))),
                       (float(layout.body_half_width(zc)), float(layout.body_half_depth(zc))), scanner, rng_scan)
    del inside
    metal_streaks(hu, canvas.labels, LABELS["metal"], grid.spacing_mm, scanner, rng_scan)
    add_noise_and_blur(hu, grid.spacing_mm, scanner, rng_noise)
    quantise(hu, scanner)
    canvas.hu = None
    truth["timing_s"] = {"anatomy": round(t_anatomy, 3), "total": round(time.perf_counter() - t_start, 3)}
    meta = {"phantom_seed": int(seed), "region": options.region}
    ct = Volume(hu, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta))
    labels = Volume(canvas.labels, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta))
    density = Volume(canvas.density, grid.spacing_mm, grid.origin_lps_mm, metadata=dict(meta))
    if options.hip_truth and any(h.get("head_in_fov") for h in truth["hip"].values()):
        # the true neck / total hip aBMD from the phantom's own density map and axes (hip/truth.py)
        for side, regions in hip_abmd_truth(density, labels, truth).items():
            truth.setdefault("hip", {}).setdefault(side, {}).update(regions)
    progress(1.0, "done")
    return Phantom(ct=ct, labels=labels, density_mg_cm3=density, truth=truth)


def _truth(ctx: Ctx, seed: int, options: PhantomOptions, scanner: ScannerSettings, beam: Beam,
           femur_geometry: dict) -> dict:
    p = ctx.patient
    t = ctx.tissues
    g = ctx.grid
    in_fov = {}
    for side, ax in femur_geometry.items():
        k = (ax["head"][2] - g.origin_lps_mm[2]) / g.spacing_mm[0]
        in_fov[side] = bool(0 <= k < g.shape[0])
    hip = hip_geometry(ctx, femur_geometry)
    for side in hip:
        hip[side]["head_in_fov"] = in_fov[side]
    patient = p.summary()
    patient.update({"vertebral_body_size_mm": {lv: [round(v, 2) for v in p.body_size_mm[lv]] for lv in LEVELS},
                    "sacral_slope_deg": round(ctx.layout.extras["sacral_slope_deg"], 2)})
    return {
        "seed": int(seed),
        "generator": {"name": "OpportunisticBMD digital patient", "version": __version__},
        "region": options.region,
        "fov_levels": list(options.fov_levels) if options.fov_levels else None,
        "grid": {"shape_kji": list(g.shape), "spacing_mm": [g.spacing_mm[2], g.spacing_mm[1], g.spacing_mm[0]],
                 "origin_lps_mm": [round(float(c), 4) for c in g.origin_lps_mm]},
        "spine": spine_truth(ctx),
        "hip": hip,
        "scanner": {**scanner.as_dict(g.spacing_mm), "effective_kev": round(beam.effective_kev, 3),
                    "patient_water_cm": beam.patient_water_cm},
        "patient": patient,
        "tissue_hu": {k: round(float(v), 3) for k, v in sorted(t.hu.items())},
        # The exact HU -> mg/cm3 line of this patient's trabecular bone (its marrow; contrast included):
        # vBMD = (HU - intercept_hu) / slope. With options.ideal it recovers truth to rounding.
        "exact_calibration": {
            "trabecular_hu_at_0_mg_cm3": round(t.trab_hu0, 4),
            "hu_per_mg_cm3": round(t.trab_slope, 6),
            "slope_mg_cm3_per_hu": round(1.0 / t.trab_slope, 6),
            "intercept_mg_cm3": round(-t.trab_hu0 / t.trab_slope, 4),
        },
        "cortical_density_mg_cm3": round(t.cortical_density_mg_cm3, 2),
        "fracture": dict(p.fracture) if p.fracture else None,
        "metal": {"side": p.metal_side, "head": "cobalt_chrome", "stem": "titanium"} if p.metal_side else None,
        "contrast": {"phase": p.contrast_phase, "iodine_mg_ml": {k: round(v, 3) for k, v in p.iodine_mg_ml.items()}}
        if p.contrast_phase else None,
        "label_ids": dict(LABELS),
    }


def write_phantom(phantom: Phantom, out_dir) -> dict[str, Path]:
    """Write ct.nii.gz (int16 HU) with its header sidecar ct.json (kVp, age, sex), labels.nii.gz,
    density_mg_cm3.nii.gz and truth.json to ``out_dir``."""
    from ..io import write_volume

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "ct": write_volume(phantom.ct.like(phantom.ct.array.astype(np.int16)), out / "ct.nii.gz"),
        "labels": write_volume(phantom.labels, out / "labels.nii.gz"),
        "density_mg_cm3": write_volume(phantom.density_mg_cm3, out / "density_mg_cm3.nii.gz"),
    }
    truth_path = out / "truth.json"
    truth_path.write_text(json.dumps(phantom.truth, indent=2) + "\n")
    paths["truth"] = truth_path
    paths["ct_sidecar"] = out / "ct.json"  # what a scanner's header would say (io.SIDECAR_KEYWORDS)
    paths["ct_sidecar"].write_text(json.dumps(header_of(phantom.truth), indent=2) + "\n")
    return paths


def header_of(truth: dict) -> dict:
    """The acquisition header a real scan of this patient would carry (DICOM keywords): no truth beyond it."""
    header = {"Modality": "CT", "Manufacturer": "OpportunisticBMD digital patient",
              "KVP": (truth.get("scanner") or {}).get("kvp")}
    patient = truth.get("patient") or {}
    if patient.get("age") is not None:
        header["PatientAge"] = f"{int(patient['age']):03d}Y"  # DICOM AS: whole years
    if patient.get("sex") in ("F", "M"):
        header["PatientSex"] = patient["sex"]
    return header
