"""``obmd bench accuracy``: agreement of measured vBMD with the digital patients' truth, per calibration.

A cohort of N digital patients (the generator behind ``obmd phantom --region spine``, seeds S..S+N-1)
with vBMD drawn uniformly in 30-250 mg/cm3, kVp drawn from 80/100/120/140, and the phantom's own
variability (fat infiltration, marrow fat, body size, noise, blur, cupping and offset fields) is
analysed with the phantom's labels (``pipeline.analyze``, once; every further method recalibrates the
same ROIs). Per patient, the compared value is the mean vBMD of L1 and L2 (the clinical pair; the two
nearest measured levels when one is missing), measured vs truth.json. With the header known (default)
methods get the scan's kVp and the patient's age, as DICOM provides them.
Figures, in the layout of the reference study (Radiologic Practice
2024, doi:10.13609/j.cnki.1000-0313.2024.02.019): Spearman r, ICC(2,1) (two-way random, absolute
agreement, single measure; Shrout & Fleiss 1979), Bland-Altman bias and 95 % limits, RMSE, and for
osteoporosis (truth < 80 mg/cm3) AUC, sensitivity and specificity of measured < 80.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from .. import stats
from ..calibration.phantom import ESP_DENSITIES_MG_CM3, fit_phantom_line
from ..calibration.registry import LINE_FROM_TISSUES, methods_with_line_from
from . import _cohort
from .common import add_json_option, peak_rss_mb, write_json

DEFAULT_METHODS = methods_with_line_from(LINE_FROM_TISSUES)  # the phantomless methods
KVP_CHOICES = (80.0, 100.0, 120.0, 140.0)  # clinical tube potentials, one drawn per patient
BMD_RANGE_MG_CM3 = (30.0, 250.0)  # uniform, so the osteoporotic (< 80) group is well populated
# The reference study's agreement with phantom QCT on 421 test scans (references.md).
REFERENCE_STUDY = {"n": 421, "spearman_r": 0.955, "icc": 0.945, "bias_mg_cm3": -1.23, "loa_low_mg_cm3": -21.5,
                   "loa_high_mg_cm3": 19.1, "rmse_mg_cm3": float("nan"), "auc": 0.975, "sensitivity": 0.421,
                   "specificity": 1.0}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("accuracy", help="vBMD agreement with digital-patient truth, per calibration",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="number of digital patients (default 20)")
    parser.add_argument("--seed", type=int, default=1000, help="first phantom seed (default 1000)")
    parser.add_argument("--calibration", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                        help=f"calibration methods to compare (default: {' '.join(DEFAULT_METHODS)}; "
                             "'phantom' scans an ESP-like phantom once per kVp; 'oracle-exact' applies each "
                             "patient's true line to the measured HU: the floor set by the ROI measurement)")
    parser.add_argument("--out", default="obmd-bench-accuracy", help="folder for the plots and per-patient CSV")
    parser.add_argument("--blind", action="store_true",
                        help="withhold the scan's kVp and the patient's age (as if the DICOM header were stripped)")
    parser.add_argument("--keep-scans", metavar="DIR", help="also write the generated phantoms into DIR")
    add_json_option(parser)
    parser.set_defaults(func=run)


def run_cohort(n: int, seed: int, methods: list[str], blind: bool = False, keep_scans: str | None = None,
               phantom_options: dict | None = None, log=print) -> dict:
    """Generate and analyse the cohort; returns {"rows": [...], "failures": [...], "methods": {m: figures}}."""

    rows: list[dict] = []
    failures: list[dict] = []
    phantom_calibrations: dict[float, dict] = {}
    with _cohort.temp_dir(keep_scans) as scratch:
        for index in range(n):
            patient_seed = seed + index
            t0 = time.perf_counter()
            rng = np.random.default_rng(patient_seed)
            kvp = float(rng.choice(KVP_CHOICES))
            bmd = float(rng.uniform(*BMD_RANGE_MG_CM3))
            keep = Path(scratch) / f"patient_{patient_seed}" if keep_scans else None
            try:
                scan = _cohort.generate(patient_seed, keep, kvp=kvp, bmd_mg_cm3=bmd, **(phantom_options or {}))
            except Exception as exc:  # a phantom that cannot be built is reported, not fatal
                failures.append({"seed": patient_seed, "method": None, "error": f"phantom: {exc}"})
                log(f"  seed {patient_seed}: phantom failed: {exc}")
                continue
            row = {"seed": patient_seed, "kvp": kvp, "age": _cohort.patient_age(scan.truth)}
            for key in ("marrow_fat_fraction", "muscle_fat_infiltration", "subcutaneous_fat_mm"):
                row[key] = scan.truth.get("patient", {}).get(key)
            for key in ("noise_hu", "cupping_hu", "offset_field_hu", "blur_fwhm_mm"):
                row[key] = scan.truth.get("scanner", {}).get(key)
            extra = {}
            if "phantom" in methods:
                if kvp not in phantom_calibrations:
                    phantom_calibrations[kvp] = _phantom_calibration(kvp)
                extra["phantom"] = phantom_calibrations[kvp]
            values = _cohort.measure_methods(scan, methods, header_known=not blind, extra_params=extra)
            truth_levels = _cohort.true_levels(scan.truth)
            for method, outcome in values.items():
                if isinstance(outcome, str):
                    failures.append({"seed": patient_seed, "method": method, "error": outcome})
                    log(f"  seed {patient_seed} {method}: {outcome}")
                    continue
                pair = _cohort.paired_patient_value(outcome, truth_levels)
                if pair is None:
                    failures.append({"seed": patient_seed, "method": method, "error": "no level measured"})
                    continue
                row[f"{method}_measured"], row["truth"], row["levels"] = pair[0], pair[1], "+".join(pair[2])
            rows.append(row)
            log(f"  patient {index + 1}/{n} (seed {patient_seed}, {kvp:g} kVp): truth "
                f"{row.get('truth', float('nan')):.1f}  " + "  ".join(
                    f"{m} {row.get(f'{m}_measured', float('nan')):.1f}" for m in methods)
                + f"  [{time.perf_counter() - t0:.1f} s]")
    figures = {}
    for method in methods:
        pairs = [(r[f"{method}_measured"], r["truth"]) for r in rows if f"{method}_measured" in r]
        if len(pairs) < 3:
            continue
        measured, truth = map(np.asarray, zip(*pairs, strict=True))
        figures[method] = stats.agreement(measured, truth, icc_form="2,1")
    return {"rows": rows, "failures": failures, "methods": figures, "phantom_calibrations": phantom_calibrations}


def _phantom_calibration(kvp: float) -> dict:
    """Asynchronous calibration: scan the ESP-like phantom once at this kVp and fit its inserts."""
    scan = _cohort.generate(1, region="esp", kvp=kvp)
    calib = fit_phantom_line(scan.ct, ESP_DENSITIES_MG_CM3)
    return {"slope": calib["slope"], "intercept": calib["intercept"]}


def print_table(figures: dict[str, dict], file: TextIO | None = None) -> None:
    file = file or sys.stdout  # looked up at call time (a captured or replaced stdout)
    header = (f"{'method':<22}{'n':>5}{'Spearman r':>12}{'ICC(2,1)':>10}{'bias':>8}{'95% LoA':>18}"
              f"{'RMSE':>7}{'AUC':>7}{'sens':>7}{'spec':>7}")
    print(header, file=file)
    print("-" * len(header), file=file)
    rows = list(figures.items()) + [("reference study*", REFERENCE_STUDY)]
    for method, f in rows:
        loa = f"{f['loa_low_mg_cm3']:.1f} to {f['loa_high_mg_cm3']:.1f}"
        print(f"{method:<22}{f['n']:>5}{f['spearman_r']:>12.3f}{f['icc']:>10.3f}{f['bias_mg_cm3']:>8.2f}{loa:>18}"
              f"{f['rmse_mg_cm3']:>7.2f}{f['auc']:>7.3f}{100 * f['sensitivity']:>6.1f}%{100 * f['specificity']:>6.1f}%",
              file=file)
    print("units: mg/cm3 HA; osteoporosis = vBMD < 80 mg/cm3. *Reference study: muscle-fat calibration vs "
          "phantom QCT, 421 real scans (not this cohort).", file=file)


def plot(rows: list[dict], methods: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    methods = [m for m in methods if any(f"{m}_measured" in r for r in rows)]
    if not methods:
        return paths
    for kind in ("bland_altman", "scatter"):
        fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 4.6), squeeze=False)
        for ax, method in zip(axes[0], methods, strict=True):
            pairs = np.array([(r[f"{method}_measured"], r["truth"]) for r in rows if f"{method}_measured" in r])
            measured, truth = pairs[:, 0], pairs[:, 1]
            if kind == "scatter":
                lim = (0, max(280.0, float(pairs.max()) + 10))
                ax.plot(lim, lim, color="0.6", lw=1, label="identity")
                ax.scatter(truth, measured, s=12, alpha=0.7)
                ax.axvline(80, color="tab:red", lw=0.8, ls=":")
                ax.axhline(80, color="tab:red", lw=0.8, ls=":")
                ax.set(xlim=lim, ylim=lim, xlabel="true vBMD (mg/cm³ HA)", ylabel="measured vBMD (mg/cm³ HA)")
            else:
                mean, diff = (measured + truth) / 2, measured - truth
                bias, sd = diff.mean(), diff.std(ddof=1) if diff.size > 1 else 0.0
                ax.scatter(mean, diff, s=12, alpha=0.7)
                for y, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                    ax.axhline(y, color="tab:red", ls=style, lw=1)
                ax.text(0.02, 0.95, f"bias {bias:.2f}\nLoA {bias - 1.96 * sd:.1f} to {bias + 1.96 * sd:.1f}",
                        transform=ax.transAxes, va="top", fontsize=9)
                ax.set(xlabel="mean of measured and true (mg/cm³)", ylabel="measured − true (mg/cm³)")
            ax.set_title(f"{method} (n={len(pairs)})")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"accuracy_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_rows_csv(rows: list[dict], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    print(f"accuracy benchmark: {args.n} digital patients from seed {args.seed}; methods: "
          f"{', '.join(args.calibration)}{' (blind: no kVp/age)' if args.blind else ''}")
    cohort = run_cohort(args.n, args.seed, list(args.calibration), blind=args.blind, keep_scans=args.keep_scans)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows_csv(cohort["rows"], out_dir / "accuracy_patients.csv")
    plots = plot(cohort["rows"], list(args.calibration), out_dir)
    print()
    print("Per patient: mean vBMD of L1-L2 (measured vs truth.json); ICC(2,1) absolute agreement.")
    print_table(cohort["methods"])
    if cohort["failures"]:
        print(f"{len(cohort['failures'])} failures: " + "; ".join(
            f"seed {f['seed']} {f['method']}: {f['error']}" for f in cohort["failures"][:5]))
    for path in [out_dir / "accuracy_patients.csv", *plots]:
        print(f"wrote {path}")
    elapsed = time.perf_counter() - t0
    print(f"{elapsed:.0f} s, peak memory {peak_rss_mb():.0f} MB")
    write_json(args.json, {
        "methods": cohort["methods"],
        "per_patient_value": "mean of L1 and L2 vBMD (two nearest measured levels if one is missing)",
        "icc_form": "ICC(2,1) absolute agreement (Shrout & Fleiss 1979)",
        "n_requested": args.n, "seed": args.seed, "blind": args.blind,
        "failures": cohort["failures"], "seconds": elapsed, "peak_rss_mb": peak_rss_mb(),
    })
    return 0 if cohort["methods"] else 1
