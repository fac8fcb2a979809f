"""``obmd bench muscle-substitution``: L1-L2 vBMD bias when the psoas is missing from the label map.

Without an iliopsoas label the muscle reference becomes the paraspinal muscles (``rois.muscle_roi``),
which hold more fat than the psoas the calibration's muscle density assumes. Each digital patient
(``obmd phantom --region spine``) and, with ``--real-ct``/``--real-seg``, a real CT is measured twice with
the same labels, once as given and once with the psoas labels set to background; the bias is the
difference of the spine summaries (L1-L2 vBMD), per calibration method.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..calibration.registry import LINE_FROM_TISSUES, methods_with_line_from
from ..labels import LABELS
from ..volume import Volume
from .common import add_json_option, peak_rss_mb, write_json

DEFAULT_SEEDS = tuple(range(3000, 3010))
DEFAULT_METHODS = methods_with_line_from(LINE_FROM_TISSUES)  # the phantomless methods


def without_psoas(labels: Volume) -> Volume:
    """``labels`` (our schema) with the psoas (TotalSegmentator iliopsoas) set to background."""
    array = labels.array.copy()
    array[np.isin(array, [LABELS["psoas_left"], LABELS["psoas_right"]])] = LABELS["background"]
    meta = {k: v for k, v in labels.metadata.items() if k != "_schema_checked_array"}
    return labels.like(array, **meta)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("muscle-substitution", help="vBMD bias of paraspinal instead of psoas muscle",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), metavar="SEED",
                        help="digital patients (default 3000-3009)")
    parser.add_argument("--calibration", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD")
    parser.add_argument("--real-ct", metavar="CT", help="also measure this real CT")
    parser.add_argument("--real-seg", metavar="LABELS", help="label map of --real-ct")
    add_json_option(parser)
    parser.set_defaults(func=run)


def case_rows(case, methods: list[str], log=print) -> list[dict]:
    """One row per method: the summary with and without the psoas label, and their difference."""
    from . import _qc_cases

    truth = _qc_cases.true_l1_l2(case.truth)
    stripped = without_psoas(case.labels)
    rows = []
    for method in methods:
        with_psoas = _qc_cases.spine_summary(case.ct, case.labels, method)
        paraspinal = _qc_cases.spine_summary(case.ct, stripped, method)
        a, b = with_psoas["vbmd_mg_cm3"], paraspinal["vbmd_mg_cm3"]
        flags = [q for q in paraspinal["qc"] if q["code"] == "muscle_not_psoas"]
        row = {"case": case.name, "method": method, "truth_mg_cm3": truth, "psoas_mg_cm3": a, "paraspinal_mg_cm3": b,
               "bias_mg_cm3": None if a is None or b is None else b - a,
               "psoas_muscle_hu": with_psoas["muscle_hu"], "paraspinal_muscle_hu": paraspinal["muscle_hu"],
               "muscle_source": paraspinal["muscle_roi_source"], "stated_sd_mg_cm3": with_psoas["stated_sd_mg_cm3"],
               "category_psoas": with_psoas["category"], "category_paraspinal": paraspinal["category"],
               "flag": flags[0] if flags else None}
        rows.append(row)
        hu = (f" (muscle {row['psoas_muscle_hu']:.0f} -> {row['paraspinal_muscle_hu']:.0f} HU)"
              if row["psoas_muscle_hu"] is not None and row["paraspinal_muscle_hu"] is not None else "")
        log(f"  {case.name} {method}: psoas {a:.1f}, paraspinal {b:.1f} mg/cm3{hu}: bias {row['bias_mg_cm3']:+.1f} "
            f"(stated SD {row['stated_sd_mg_cm3'] or float('nan'):.1f}); flag {flags[0]['severity'] if flags else '-'}")
    return rows


def run(args: argparse.Namespace) -> int:
    from . import _qc_cases

    t0 = time.perf_counter()
    methods = list(args.calibration)
    print(f"muscle-substitution benchmark: digital patients {' '.join(map(str, args.seeds))}; methods "
          f"{', '.join(methods)}")
    rows = []
    for seed in args.seeds:
        rows += case_rows(_qc_cases.digital_patient(seed, hip_truth=False), methods)
    real = []
    if args.real_ct and args.real_seg:
        real = case_rows(_qc_cases.real_case(args.real_ct, args.real_seg), methods)
    figures = {}
    print()
    print(f"{'method':<16}{'n':>4}{'mean bias':>11}{'SD':>7}{'min':>8}{'max':>8}{'muscle HU':>11}{'stated SD':>11}"
          f"{'real CT':>9}")
    for method in methods:
        sel = [r for r in rows if r["method"] == method and r["bias_mg_cm3"] is not None]
        f = _qc_cases.describe([r["bias_mg_cm3"] for r in sel])
        changes = [r["paraspinal_muscle_hu"] - r["psoas_muscle_hu"] for r in sel
                   if r["psoas_muscle_hu"] is not None and r["paraspinal_muscle_hu"] is not None]
        f["muscle_hu_change_mean"] = float(np.mean(changes)) if changes else None
        f["stated_sd_mean"] = float(np.mean([r["stated_sd_mg_cm3"] for r in sel if r["stated_sd_mg_cm3"] is not None]
                                            or [np.nan]))
        f["real_bias_mg_cm3"] = next((r["bias_mg_cm3"] for r in real if r["method"] == method), None)
        figures[method] = f
        real_text = f"{f['real_bias_mg_cm3']:>+9.1f}" if f["real_bias_mg_cm3"] is not None else f"{'-':>9}"
        print(f"{method:<16}{f['n']:>4}{f['mean']:>+11.1f}{f['sd']:>7.1f}{f['min']:>+8.1f}{f['max']:>+8.1f}"
              f"{f['muscle_hu_change_mean'] or float('nan'):>+11.1f}{f['stated_sd_mean']:>11.1f}{real_text}")
    elapsed = time.perf_counter() - t0
    print(f"{elapsed:.0f} s, peak memory {peak_rss_mb():.0f} MB")
    write_json(args.json, {"seeds": list(args.seeds), "methods": figures, "rows": rows, "real": real,
                           "seconds": elapsed, "peak_rss_mb": peak_rss_mb()})
    return 0 if rows else 1
