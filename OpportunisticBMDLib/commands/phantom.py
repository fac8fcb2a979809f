"""``obmd phantom``: write a digital patient (CT, labels, true density map, truth.json) from a seed."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantom", help="generate a digital patient with known BMD (ct.nii.gz, labels.nii.gz, truth.json)",
        description="Generate a physics-based digital patient, reproducibly from --seed. Writes ct.nii.gz (int16 HU), "
                    "labels.nii.gz (OpportunisticBMD label schema), density_mg_cm3.nii.gz (true HA density) and "
                    "truth.json (true vBMD per vertebra, hip geometry, scanner and patient parameters).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--region", choices=("torso", "spine", "hip", "esp"), default="torso",
                   help="torso: T10 to proximal femurs; spine: T11-L3; hip: pelvis, femurs; esp: calibration phantom")
    p.add_argument("--spacing-mm", nargs=3, type=float, metavar=("X", "Y", "Z"), default=(1.5, 1.5, 2.0),
                   help="voxel size in x (right-left), y (anterior-posterior), z (slice spacing)")
    p.add_argument("--shape", nargs=3, type=int, metavar=("X", "Y", "Z"), help="force the grid size (voxels)")
    p.add_argument("--fov-mm", type=float, help="square in-plane field of view (default: fit the body)")
    p.add_argument("--fov-levels", nargs=2, metavar=("TOP", "BOTTOM"),
                   help="field of view from level TOP to level BOTTOM (e.g. T12 L3; BOTTOM may be 'femur')")
    p.add_argument("--fracture", metavar="LEVEL", help="compression fracture at LEVEL (e.g. L1)")
    p.add_argument("--metal", choices=("left", "right"), help="total hip prosthesis on that side")
    p.add_argument("--leg-rotation-deg", type=float, help="external rotation of both legs (default: drawn, 0-12)")
    p.add_argument("--contrast", action="store_true", help="iodine contrast (portal venous unless --phase arterial)")
    p.add_argument("--phase", choices=("portal", "arterial"), default="portal")
    p.add_argument("--kvp", type=float, default=120.0, help="tube potential, 80-140 kVp")
    p.add_argument("--bmd", type=float, metavar="MG_CM3", help="trabecular vBMD of every vertebra (mg/cm3 HA)")
    p.add_argument("--marrow-fat", type=float, help="marrow fat volume fraction (0-1)")
    p.add_argument("--muscle-fat", type=float, help="fat infiltration of muscle (adipose volume fraction, 0-1)")
    p.add_argument("--noise-hu", type=float, help="noise SD (HU)")
    p.add_argument("--noise-seed", type=int, help="rescan: same patient, new noise")
    p.add_argument("--blur-mm", type=float, help="in-plane PSF FWHM (mm)")
    p.add_argument("--slice-thickness-mm", type=float)
    p.add_argument("--cupping-hu", type=float)
    p.add_argument("--offset-hu", type=float, help="amplitude of the smooth scatter offset field (HU)")
    p.add_argument("--ideal", action="store_true", help="no noise, blur, offsets or streaks")
    p.add_argument("--extended-hu", action="store_true", help="do not clip metal at 3071 HU")
    p.add_argument("--calibration-pad", action="store_true",
                   help="an in-scan calibration pad (water-equivalent base, HA rods) under the patient")
    p.add_argument("--no-hip-truth", action="store_true", help="skip the hip areal-BMD truth (faster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..phantom import PhantomOptions, generate_phantom, write_phantom
    from ..progress import TerminalProgress

    if not 80.0 <= args.kvp <= 140.0:
        raise InputError(f"--kvp {args.kvp:g}: choose 80-140")
    sx, sy, sz = args.spacing_mm
    options = PhantomOptions(
        region=args.region, spacing_mm=(sz, sy, sx),
        shape=tuple(args.shape[::-1]) if args.shape else None, fov_mm=args.fov_mm,
        fov_levels=tuple(args.fov_levels) if args.fov_levels else None, fracture=args.fracture, metal=args.metal,
        leg_rotation_deg=args.leg_rotation_deg,
        contrast=args.contrast, contrast_phase=args.phase, kvp=args.kvp, bmd_mg_cm3=args.bmd,
        marrow_fat_fraction=args.marrow_fat, muscle_fat_infiltration=args.muscle_fat, noise_hu=args.noise_hu,
        noise_seed=args.noise_seed, blur_fwhm_mm=args.blur_mm, slice_thickness_mm=args.slice_thickness_mm,
        cupping_hu=args.cupping_hu, offset_field_hu=args.offset_hu, ideal=args.ideal, extended_hu=args.extended_hu,
        calibration_pad=args.calibration_pad, hip_truth=not args.no_hip_truth,
    )
    t0 = time.perf_counter()
    try:
        phantom = generate_phantom(args.seed, options, progress=TerminalProgress())
    except ValueError as exc:
        raise InputError(str(exc)) from None
    paths = write_phantom(phantom, args.out)
    seconds = time.perf_counter() - t0
    levels = phantom.truth.get("spine", {}).get("levels", {})
    print(f"digital patient seed {args.seed} ({args.region}), grid {phantom.ct.shape[::-1]} (x, y, z) "
          f"in {seconds:.1f} s")
    for level, entry in levels.items():
        print(f"  {level}: true vBMD {entry['vbmd_mg_cm3']:.1f} mg/cm3")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0
