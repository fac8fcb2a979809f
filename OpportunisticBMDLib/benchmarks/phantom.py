"""``obmd bench phantom``: seconds and peak memory to generate digital patients.

Each case runs in a fresh child process (so its peak memory is its own): a first patient (cold: includes
the X-ray spectrum computation, cached afterwards) and then ``--repeat`` more (warm, as in a cohort).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .common import add_json_option, peak_rss_mb, write_json

# name -> (PhantomOptions fields); spacing per array axis (z, y, x) mm
CASES: dict[str, dict] = {
    "spine": {"region": "spine", "spacing_mm": (2.0, 1.25, 1.25)},
    "spine-1mm": {"region": "spine", "spacing_mm": (1.0, 1.0, 1.0)},
    "torso-3mm": {"region": "torso", "spacing_mm": (3.0, 3.0, 3.0), "hip_truth": False},
    "torso-3mm-hip-truth": {"region": "torso", "spacing_mm": (3.0, 3.0, 3.0)},
    "realistic-512x512x300": {"region": "torso", "spacing_mm": (1.25, 0.78, 0.78), "shape": (300, 512, 512),
                              "hip_truth": False},
}


def register(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser("phantom", help="time and memory of digital patient generation")
    p.add_argument("--cases", default="spine,torso-3mm,realistic-512x512x300",
                   help=f"comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--repeat", type=int, default=3, help="warm patients per case after the first")
    p.add_argument("--seed", type=int, default=100)
    add_json_option(p)
    p.set_defaults(func=run)


def _child(case: str, seed: int, repeat: int) -> dict:
    from ..phantom import PhantomOptions, generate_phantom

    options = PhantomOptions(**CASES[case])
    out: dict = {"case": case, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in CASES[case].items()}}
    t0, c0 = time.perf_counter(), time.process_time()
    ph = generate_phantom(seed, options)
    out["cold_s"] = round(time.perf_counter() - t0, 3)
    out["cold_cpu_s"] = round(time.process_time() - c0, 3)
    out["shape_kji"] = list(ph.ct.shape)
    del ph
    walls, cpus = [], []
    for n in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        generate_phantom(seed + 1 + n, options)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if walls:
        out["warm_mean_s"] = round(sum(walls) / len(walls), 3)
        out["warm_max_s"] = round(max(walls), 3)
        out["warm_cpu_mean_s"] = round(sum(cpus) / len(cpus), 3)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run(args: argparse.Namespace) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    results = {}
    print(f"{'case':24s} {'grid (z,y,x)':16s} {'cold s':>7s} {'warm s':>7s} {'warm cpu s':>10s} {'peak MB':>8s}")
    for case in cases:
        code = (f"import json; from OpportunisticBMDLib.benchmarks.phantom import _child; "
                f"print('RESULT' + json.dumps(_child({case!r}, {args.seed}, {args.repeat})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
        if proc.returncode != 0 or not line:
            print(f"{case}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(line[-1][len("RESULT"):])
        results[case] = r
        shape = "x".join(str(n) for n in r["shape_kji"])
        print(f"{case:24s} {shape:16s} {r['cold_s']:7.2f} {r.get('warm_mean_s', float('nan')):7.2f} "
              f"{r.get('warm_cpu_mean_s', float('nan')):10.2f} {r['peak_rss_mb']:8.0f}")
    write_json(args.json, {"cases": results, "cpu_count_note": "wall times depend on the load of this machine"})
    return 0
