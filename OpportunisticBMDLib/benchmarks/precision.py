"""``obmd bench precision``: repeat-scan precision of vBMD per calibration method (RMSCV %).

Each of N digital patients is scanned several times: the same anatomy and densities (same phantom
seed) with a new noise realisation and a repositioning (shift of up to 5 mm per axis; the generator
has no rotation option) per rescan, rescan 2 at another kVp and rescan 3 with another kernel
(in-plane blur). The per-patient value is the L1-L2 mean vBMD (as in the accuracy benchmark);
precision is the root-mean-square coefficient of variation over patients (Glüer et al., Osteoporos
Int 5:262 (1995)). Published anchor: automated vBMD 1.3 % RMSCV across reconstruction kernels
(Sollmann 2024, Eur Radiol Exp).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..calibration.registry import LINE_FROM_TISSUES, methods_with_line_from
from .common import add_json_option, peak_rss_mb, write_json

DEFAULT_METHODS = methods_with_line_from(LINE_FROM_TISSUES)  # the phantomless methods


KVP_SWITCH = {80.0: 100.0, 100.0: 120.0, 120.0: 140.0, 140.0: 120.0}


def rescan_options(index: int, base_kvp: float, rng: np.random.Generator) -> dict:
    """Phantom options of scan ``index`` (0 = baseline): a new noise realisation and a repositioning of
    up to +-5 mm for every rescan; rescan 2 changes the kVp, rescan 3 the kernel (in-plane blur)."""
    if index == 0:
        return {"kvp": base_kvp}
    options = {"kvp": base_kvp, "noise_seed": 1000 + index,
               "grid_shift_mm": tuple(float(v) for v in rng.uniform(-5.0, 5.0, 3))}
    if index % 3 == 2:
        options["kvp"] = KVP_SWITCH.get(base_kvp, 120.0)
    if index % 3 == 0:
        options["blur_fwhm_mm"] = float(rng.choice([0.6, 1.8]))  # sharp / smooth kernel
    return options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("precision", help="repeat-scan precision (RMSCV %%) per calibration method",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5, help="number of digital patients (default 5)")
    parser.add_argument("--scans", type=int, default=4, help="scans per patient (default 4)")
    parser.add_argument("--seed", type=int, default=2000, help="first phantom seed (default 2000)")
    parser.add_argument("--calibration", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD")
    parser.add_argument("--blind", action="store_true", help="withhold the scan's kVp and the patient's age")
    parser.add_argument("--keep-scans", metavar="DIR", help="keep the generated phantoms in DIR")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run_precision(n: int, scans: int, seed: int, methods: list[str], blind: bool = False,
                  keep_scans: str | None = None, log=print) -> dict:
    from .. import stats
    from . import _cohort

    values: dict[str, list[list[float]]] = {m: [] for m in methods}
    failures: list[dict] = []
    with _cohort.temp_dir(keep_scans) as scratch:
        for p in range(n):
            patient_seed = seed + p
            rng = np.random.default_rng(patient_seed)
            base_kvp = float(rng.choice((80.0, 100.0, 120.0, 140.0)))
            per_method: dict[str, list[float]] = {m: [] for m in methods}
            for s in range(scans):
                options = rescan_options(s, base_kvp, rng)
                keep = Path(scratch) / f"p{patient_seed}_scan{s}" if keep_scans else None
                try:
                    scan = _cohort.generate(patient_seed, keep, **options)
                except Exception as exc:
                    failures.append({"seed": patient_seed, "scan": s, "error": f"phantom: {exc}"})
                    log(f"  seed {patient_seed} scan {s}: phantom failed: {exc}")
                    continue
                truth_levels = _cohort.true_levels(scan.truth)
                for method, outcome in _cohort.measure_methods(scan, methods, header_known=not blind).items():
                    if isinstance(outcome, str):
                        failures.append({"seed": patient_seed, "scan": s, "method": method, "error": outcome})
                        continue
                    pair = _cohort.paired_patient_value(outcome, truth_levels)
                    if pair is not None:
                        per_method[method].append(pair[0])
                described = ", ".join(f"{k}={v if not isinstance(v, tuple) else tuple(round(x, 1) for x in v)}"
                                      for k, v in options.items())
                log(f"  patient {p + 1}/{n} scan {s + 1}/{scans} ({described}): " + "  ".join(
                    f"{m} {per_method[m][-1]:.1f}" if per_method[m] else f"{m} -" for m in methods))
            for method in methods:
                if len(per_method[method]) >= 2:
                    values[method].append(per_method[method])
    figures = {}
    for method, groups in values.items():
        if not groups:
            continue
        sds = [float(np.std(g, ddof=1)) for g in groups]
        figures[method] = {
            "rmscv_percent": stats.rmscv_percent(groups),
            "rms_sd_mg_cm3": float(np.sqrt(np.mean(np.square(sds)))),
            "n_patients": len(groups),
            "scans_per_patient": float(np.mean([len(g) for g in groups])),
        }
    return {"methods": figures, "values": values, "failures": failures}


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    print(f"precision benchmark: {args.n} digital patients x {args.scans} scans (new noise and repositioning "
          f"each; rescan 2 another kVp, rescan 3 another kernel); methods: {', '.join(args.calibration)}")
    result = run_precision(args.n, args.scans, args.seed, list(args.calibration), args.blind, args.keep_scans)
    print()
    print(f"{'method':<22}{'RMSCV %':>9}{'RMS SD (mg/cm3)':>18}{'patients':>10}")
    for method, f in result["methods"].items():
        print(f"{method:<22}{f['rmscv_percent']:>9.2f}{f['rms_sd_mg_cm3']:>18.2f}{f['n_patients']:>10}")
    print("published anchor: automated vBMD RMSCV 1.3 % across kernels (Sollmann 2024)")
    if result["failures"]:
        print(f"{len(result['failures'])} failures: " + "; ".join(str(f) for f in result["failures"][:5]))
    elapsed = time.perf_counter() - t0
    print(f"{elapsed:.0f} s, peak memory {peak_rss_mb():.0f} MB")
    write_json(args.json, {"methods": result["methods"], "n": args.n, "scans": args.scans, "seed": args.seed,
                           "failures": result["failures"], "seconds": elapsed, "peak_rss_mb": peak_rss_mb()})
    return 0 if result["methods"] else 1
