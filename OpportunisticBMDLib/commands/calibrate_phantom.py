"""``obmd calibrate-phantom CT --out calib.json``: asynchronous calibration from a scan of an ESP-like
calibration phantom (three vertebrae of known HA density in a water-equivalent body).

The scan is analysed once per scanner and protocol; ``obmd analyze --calibration phantom
--calibration-file calib.json`` then applies its line to patients scanned with that protocol (ISCD:
asynchronous calibration may replace the in-scan phantom if scanner stability is maintained).
The fit and the reading of calib.json: :mod:`OpportunisticBMDLib.calibration.phantom`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..calibration.phantom import ESP_DENSITIES_MG_CM3, fit_phantom_line
from ..io import read_ct


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


def run(args: argparse.Namespace) -> int:
    ct = read_ct(args.ct)
    result = fit_phantom_line(ct, args.densities)
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
