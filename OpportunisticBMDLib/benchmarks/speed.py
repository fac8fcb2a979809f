"""``obmd bench speed``: end-to-end seconds and peak memory of model-based analysis on a realistic-size scan.

A torso-like CT of 512x512x300 voxels at 0.78x0.78x1.25 mm (generated: body, fat, muscles, a spine
of vertebrae and discs) is written to a temporary NIfTI and analysed in a child process exactly as a
user would run it (``obmd analyze CT --out DIR`` with no ``--seg``; segmentation only if that command
is missing), so the peak memory is that of the analysis alone. CPU always; CUDA too when present.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import add_json_option, write_json

SHAPE_KJI = (300, 512, 512)
SPACING_KJI_MM = (1.25, 0.78, 0.78)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("speed", help="end-to-end seconds and peak memory on a realistic-size scan",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda when present)")
    p.add_argument("--shape", type=int, nargs=3, default=list(SHAPE_KJI), metavar=("Z", "Y", "X"))
    add_json_option(p)
    p.set_defaults(func=run)


def torso_ct(shape: tuple[int, int, int] = SHAPE_KJI, spacing_mm: tuple[float, float, float] = SPACING_KJI_MM,
             seed: int = 0) -> np.ndarray:
    """A simple torso in HU (int16, k j i): skin/fat/muscle/organs, lumbar-like spine with discs."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    y = (np.arange(ny) - ny / 2) * spacing_mm[1]
    x = (np.arange(nx) - nx / 2) * spacing_mm[2]
    yy, xx = np.meshgrid(y, x, indexing="ij")
    r_body = (xx / 160.0) ** 2 + (yy / 115.0) ** 2
    r_inner = (xx / 140.0) ** 2 + (yy / 95.0) ** 2
    sl = np.full((ny, nx), -1000, np.int16)
    sl[r_body <= 1] = -100
    sl[r_inner <= 1] = 40
    for side in (-1, 1):  # psoas and paraspinal muscles
        sl[((xx - side * 40) / 22) ** 2 + ((yy - 20) / 20) ** 2 <= 1] = 50
        sl[((xx - side * 30) / 25) ** 2 + ((yy - 75) / 18) ** 2 <= 1] = 50
    body_ring = ((xx / 28) ** 2 + ((yy - 10) / 22) ** 2) <= 1
    canal = ((xx / 9) ** 2 + ((yy - 40) / 8) ** 2) <= 1
    arch = (((xx / 20) ** 2 + ((yy - 42) / 16) ** 2) <= 1) & ~canal
    out = np.empty(shape, np.int16)
    z = np.arange(nz) * spacing_mm[0]
    period_mm = 36.0  # vertebra (~27 mm) + disc (~9 mm)
    for k in range(nz):
        s = sl.copy()
        if (z[k] % period_mm) < 27.0:
            s[body_ring] = 200
            s[arch] = 400
        else:
            s[body_ring] = 80
        out[k] = s
    out += rng.normal(0, 12, size=shape).astype(np.int16)
    return out


def phantom_scan(shape: tuple[int, int, int] = SHAPE_KJI, seed: int = 1000) -> Any:
    """Digital patient (built at 2.5 mm, then resampled onto the realistic-size grid centred on it)."""
    import SimpleITK as sitk

    try:
        from ..io import to_sitk
        from ..phantom.generator import generate_phantom
        from ..phantom.options import PhantomOptions
    except ImportError:
        return None
    try:
        phantom = generate_phantom(seed, PhantomOptions(region="torso", spacing_mm=(2.5, 2.5, 2.5)))
    except Exception as exc:  # the generator is not this benchmark's subject: fall back, say so
        print(f"phantom generation failed ({exc}); using the procedural torso")
        return None
    src = to_sitk(phantom.ct.array.astype(np.int16), phantom.ct)
    centre = src.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in src.GetSize()])
    spacing_xyz = SPACING_KJI_MM[::-1]
    size_xyz = shape[::-1]
    origin = [c - (n - 1) / 2 * s for c, n, s in zip(centre, size_xyz, spacing_xyz, strict=True)]
    ref = sitk.Image([int(n) for n in size_xyz], sitk.sitkInt16)
    ref.SetSpacing([float(s) for s in spacing_xyz])
    ref.SetOrigin(origin)
    return sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)


def _write_scan(path: Path, shape: tuple[int, int, int]) -> str:
    import SimpleITK as sitk

    image = phantom_scan(shape)
    kind = "digital patient (phantom seed 1000)"
    if image is None:
        image = sitk.GetImageFromArray(torso_ct(shape))
        image.SetSpacing(tuple(float(s) for s in SPACING_KJI_MM[::-1]))
        kind = "procedural torso"
    sitk.WriteImage(image, str(path), useCompression=False)
    return kind


def _child_command(scan: Path, out_dir: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "OpportunisticBMDLib.cli", "analyze", str(scan), "--out", str(out_dir),
            "--device", device]


def measure(scan: Path, device: str, work: Path) -> dict[str, Any]:
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = usage0.ru_maxrss
    cmd = _child_command(scan, work / f"out_{device}", device)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    # ru_maxrss of children is the largest child so far: the only child here is this one
    result = {"device": device, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
              "peak_memory_mb": round(max(usage.ru_maxrss, before) / 1024, 1),
              "command": " ".join(c if " " not in c else repr(c) for c in cmd[1:4]) + " …",
              "returncode": proc.returncode}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout)[-500:]
    return result


def run(args: argparse.Namespace) -> int:
    import torch

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    shape = tuple(args.shape)
    figures: dict[str, Any] = {"scan": {"shape_kji": list(shape), "spacing_kji_mm": list(SPACING_KJI_MM)},
                               "cpu_threads": torch.get_num_threads(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scan = work / "torso.nii"
        print(f"generating a {shape[2]}x{shape[1]}x{shape[0]} scan at "
              f"{SPACING_KJI_MM[2]}x{SPACING_KJI_MM[1]}x{SPACING_KJI_MM[0]} mm …")
        figures["scan"]["content"] = _write_scan(scan, shape)
        for device in devices:
            r = measure(scan, device, work)
            figures["runs"].append(r)
            status = "ok" if r["returncode"] == 0 else f"FAILED: {r.get('error', '')[-200:]}"
            print(f"{device}: {r['seconds']:.1f} s end to end (CPU time {r['cpu_seconds']:.1f} s), "
                  f"peak memory {r['peak_memory_mb']:.0f} MB ({status})")
    write_json(args.json, figures)
    return 0 if all(r["returncode"] == 0 for r in figures["runs"]) else 1
