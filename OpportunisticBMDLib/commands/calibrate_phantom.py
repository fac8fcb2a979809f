"""``obmd calibrate-phantom CT --out calib.json``: asynchronous calibration from a scan of an ESP-like
calibration phantom (three vertebrae of known HA density in a water-equivalent body).

The scan is analysed once per scanner and protocol; ``obmd analyze --calibration phantom
--calibration-file calib.json`` then applies its line to patients scanned with that protocol (ISCD:
asynchronous calibration may replace the in-scan phantom if scanner stability is maintained).

Inserts are found without labels: the vertebrae's cortical shells are bright (> ``SHELL_HU``); filling
the holes of each axial slice gives the vertebral bodies, whose inside minus a margin is the trabecular
insert. Inserts are matched to the nominal densities by rank of their mean HU (denser insert, higher HU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# European Spine Phantom (QRM): trabecular inserts of 50, 100 and 200 mg HA/cm3.
ESP_DENSITIES_MG_CM3 = (50.0, 100.0, 200.0)
# Shell threshold: an ~800 mg HA/cm3 shell reads > 900 HU at 80-140 kVp (~700 HU after blur), while a
# 200 mg/cm3 insert stays below ~400 HU even at 80 kVp.
SHELL_HU = 550.0
INSERT_MARGIN_MM = 2.0  # away from the shell: partial volume and blur
MIN_INSERT_MM3 = 300.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate-phantom",
        help="derive an asynchronous HU -> mg/cm3 HA calibration from a scan of an ESP-like phantom",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("ct", help="CT of the calibration phantom (NIfTI/NRRD/MHA/DICOM folder)")
    parser.add_argument("--out", required=True, help="calibration JSON to write (for analyze --calibration-file)")
    parser.add_argument("--densities", type=float, nargs="+", default=list(ESP_DENSITIES_MG_CM3),
                        metavar="MG_CM3", help="nominal insert densities (default: ESP 50 100 200)")
    parser.set_defaults(func=run)


def find_inserts(ct, n_expected: int) -> list[dict]:
    """Trabecular inserts inside bright shells: list of {mask, hu_mean, hu_sd, voxel_count, centroid_mm}."""
    from scipy import ndimage

    shell = ct.array > SHELL_HU
    filled = np.zeros_like(shell)
    for k in range(shell.shape[0]):
        if shell[k].any():
            # close one-voxel gaps in the ring (noise, partial volume) before filling
            filled[k] = ndimage.binary_fill_holes(ndimage.binary_closing(shell[k], iterations=1))
    inside = filled & ~shell
    dist = ndimage.distance_transform_edt(inside, sampling=(1e6, ct.spacing_mm[1], ct.spacing_mm[2]))
    core = dist > INSERT_MARGIN_MM
    # keep slices away from the endplates: a core slice must have an inside slice above and below
    core[1:-1] &= inside[:-2] & inside[2:]
    core[0] = core[-1] = False
    components, n = ndimage.label(core)
    voxel_mm3 = float(np.prod(ct.spacing_mm))
    inserts = []
    for index in range(1, n + 1):
        mask = components == index
        count = int(mask.sum())
        if count * voxel_mm3 < MIN_INSERT_MM3:
            continue
        values = ct.array[mask]
        inserts.append({"mask": mask, "hu_mean": float(values.mean()), "hu_sd": float(values.std()),
                        "voxel_count": count, "volume_mm3": count * voxel_mm3,
                        "centroid_index": [float(c) for c in np.argwhere(mask).mean(axis=0)]})
    # the n_expected largest, in order of HU
    inserts.sort(key=lambda d: d["voxel_count"], reverse=True)
    inserts = inserts[:n_expected]
    inserts.sort(key=lambda d: d["hu_mean"])
    return inserts


def calibrate(ct, densities_mg_cm3) -> dict:
    """Least-squares line mg/cm3 = intercept + slope * HU through the inserts."""
    from ..errors import InputError

    densities = sorted(float(d) for d in densities_mg_cm3)
    inserts = find_inserts(ct, len(densities))
    if len(inserts) != len(densities):
        raise InputError(
            f"found {len(inserts)} phantom inserts inside bright shells, expected {len(densities)}: "
            "is this a scan of the calibration phantom?"
        )
    hu_values = np.array([d["hu_mean"] for d in inserts])
    slope, intercept = np.polyfit(hu_values, densities, 1)
    predicted = intercept + slope * hu_values
    if slope <= 0:
        raise InputError("phantom inserts do not increase in HU with density: check --densities")
    return {
        "method": "phantom",
        "slope": float(slope),
        "intercept": float(intercept),
        "slope_mg_cm3_per_hu": float(slope),
        "intercept_mg_cm3": float(intercept),
        "inserts": [
            {"density_mg_cm3": d, "hu_mean": ins["hu_mean"], "hu_sd": ins["hu_sd"], "voxel_count": ins["voxel_count"],
             "volume_mm3": ins["volume_mm3"], "residual_mg_cm3": float(d - p)}
            for d, ins, p in zip(densities, inserts, predicted, strict=True)
        ],
        "max_residual_mg_cm3": float(np.max(np.abs(np.asarray(densities) - predicted))),
        "source": str(ct.metadata.get("path", "")),
        "kvp": ct.metadata.get("kvp"),
    }


def load_calibration_file(path: str | Path) -> dict:
    """``{"slope", "intercept"}`` (mg/cm3 per HU, mg/cm3) from a calib.json written by this command."""
    from ..errors import InputError

    try:
        data = json.loads(Path(path).read_text())
        return {"slope": float(data["slope"]), "intercept": float(data["intercept"]), "source_file": str(path)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a calibration file from obmd calibrate-phantom ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    from ..io import read_ct

    ct = read_ct(args.ct)
    result = calibrate(ct, args.densities)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for ins in result["inserts"]:
        print(f"insert {ins['density_mg_cm3']:6.1f} mg/cm3: {ins['hu_mean']:7.1f} HU "
              f"(SD {ins['hu_sd']:.1f}, {ins['voxel_count']} voxels, residual {ins['residual_mg_cm3']:+.2f})")
    print(f"vBMD = {result['intercept']:.3f} + {result['slope']:.5f} x HU   (mg/cm3 HA)")
    print(f"calibration written to {out}; use: obmd analyze CT --seg LABELS --calibration phantom "
          f"--calibration-file {out}")
    return 0
