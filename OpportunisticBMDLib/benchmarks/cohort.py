"""``obmd bench cohort``: the shipped segmentation model on a cohort of unseen digital patients.

For N digital patients (the generator behind ``obmd phantom``, seeds S..S+N-1, none of them a training
seed) the model segments the CT (``models.inference.segment``), then the spine is measured twice with the
same calibration: on the model's labels and on the phantom's truth labels (``pipeline.derive_rois`` and
``pipeline.measure``). Printed: per level and for the L1-L2 mean (the clinical pair), the bias and 95 %
limits of agreement of model-label minus truth-label vBMD (Bland & Altman 1986), Dice per vertebra,
naming accuracy (the model label covering most of each true vertebra), keypoint distance, and every
failure (a crash, or L1/L2 not measured on the model's labels). The truth-label measurement is also
compared with the phantom's true vBMD: the floor set by the measurement itself.

Cheap by design: a lumbar field of view (T10 to S1: the 12th ribs and the sacrum, both naming anchors,
are in view) at 2.5 x 2 x 2 mm, no hip truth; about 10 s a patient on one CPU thread.
The issue's target (issue 4): L1-L2 limits of agreement within +-5 mg/cm3 on N >= 50 unseen patients.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import add_json_option, peak_rss_mb, write_json

# `obmd train` draws its digital patients from --phantom-seed (default 5000) upward: the shipped v0.2.0
# used 5000-5009 (manifest "training.templates"). Seeds in this range are refused as not unseen.
TRAINING_SEED_RANGE = (5000, 6000)
DEFAULT_FOV = ("T10", "S1")
DEFAULT_SPACING_MM = (2.5, 2.0, 2.0)  # (k, j, i) = (z, y, x), like Volume.spacing_mm
# Issue 4 target: model-based vs truth-label L1-L2 vBMD limits of agreement within +-5 mg/cm3.
TARGET_LOA_MG_CM3 = 5.0
PAIR = ("L1", "L2")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cohort", help="model vs truth-label vBMD, Dice and naming on unseen digital patients",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50, help="number of digital patients (default 50)")
    p.add_argument("--seed", type=int, default=1000, help="first phantom seed (default 1000; 5000-5999 are training)")
    p.add_argument("--calibration", default="muscle-fat", metavar="METHOD",
                   help="calibration for both measurements (default muscle-fat, as obmd analyze); the patient's "
                        "exact HU->mg/cm3 line is always reported too ('exact')")
    p.add_argument("--fov", nargs=2, default=list(DEFAULT_FOV), metavar=("TOP", "BOTTOM"),
                   help="field of view in levels (default T10 S1; bottom may be S1 or femur)")
    p.add_argument("--spacing-mm", nargs=3, type=float, default=list(DEFAULT_SPACING_MM), metavar=("Z", "Y", "X"),
                   help="CT voxel size (default 2.5 2 2)")
    p.add_argument("--device", default="cpu", help="device for the model: cpu | cuda")
    p.add_argument("--model-dir", help="models folder (default: the shipped Resources/Models)")
    p.add_argument("--threads", type=int, help="torch CPU threads (use 1 on a shared machine)")
    p.add_argument("--keep-scans", metavar="DIR", help="also write each phantom and the model's labels into DIR")
    add_json_option(p)
    p.set_defaults(func=run)


def check_seeds(seed: int, n: int) -> None:
    from ..errors import InputError

    lo, hi = TRAINING_SEED_RANGE
    if n < 1:
        raise InputError(f"--n {n}: need at least one patient")
    if seed < hi and seed + n > lo:
        raise InputError(f"seeds {seed}-{seed + n - 1} overlap the training phantoms ({lo}-{hi - 1}): "
                         "choose unseen seeds, e.g. --seed 1000")


def _level_values(results: dict, exact: dict) -> dict[str, dict[str, float]]:
    """{level: {"vbmd": calibrated, "exact": patient's true line at the trabecular HU}}."""
    out = {}
    for lvl, v in results["spine"]["levels"].items():
        hu = v.get("trabecular_hu_mean")
        if hu is None or v.get("vbmd_mg_cm3") is None or not np.isfinite(hu):
            continue
        out[lvl] = {"vbmd": float(v["vbmd_mg_cm3"]),
                    "exact": float(exact["intercept_mg_cm3"] + exact["slope_mg_cm3_per_hu"] * hu)}
    return out


def _measure(ct, labels, options) -> dict:
    """Spine only (no hip): ROIs from ``labels``, then calibration and per-level vBMD, as analyze does."""
    from ..pipeline import derive_rois, measure

    geometry: dict = {}
    rois = derive_rois(ct, labels, options, geometry_out=geometry)
    return measure(ct, rois, options, labels, geometry=geometry).results


def run_case(seed: int, calibration: str = "muscle-fat", fov: tuple[str, str] = DEFAULT_FOV,
             spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM, device: str = "cpu",
             model_dir: str | None = None, keep_dir: Path | None = None) -> dict[str, Any]:
    """One digital patient: generate, segment, measure on model and truth labels, compare."""
    from ..labels import LABELS, VERTEBRA_LEVELS
    from ..models.inference import segment
    from . import _cohort
    from .accuracy import BMD_RANGE_MG_CM3, KVP_CHOICES
    from .segmentation import compare, dice

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    kvp = float(rng.choice(KVP_CHOICES))
    bmd = float(rng.uniform(*BMD_RANGE_MG_CM3))
    case: dict[str, Any] = {"seed": seed, "kvp": kvp}
    scan = _cohort.generate(seed, keep_dir, kvp=kvp, bmd_mg_cm3=bmd, fov_levels=tuple(fov),
                            spacing_mm=tuple(spacing_mm), hip_truth=False)
    case["shape_kji"] = list(scan.ct.shape)
    t1 = time.perf_counter()
    labels, keypoints = segment(scan.ct, device=device, model_dir=model_dir)
    case["segmentation_seconds"] = round(time.perf_counter() - t1, 2)
    if keep_dir is not None:
        from ..models.outputs import write_model_outputs

        write_model_outputs(labels, keypoints, scan.ct, Path(keep_dir) / "model")
    case["model"] = keypoints.get("model")
    case["naming_method"] = keypoints["naming"]["method"]
    case["qc"] = [q["code"] for q in keypoints.get("qc", [])]
    seg = compare(scan.ct, scan.labels.array, labels.array, keypoints)
    case["dice"], case["naming"] = seg["dice"], seg["naming"]
    vertebrae = [LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS]  # whatever level: segmentation, not naming
    case["dice"]["vertebrae_any_level"] = round(dice(np.isin(labels.array, vertebrae),
                                                     np.isin(scan.labels.array, vertebrae)), 4)
    case["keypoint_distance_mm"] = seg["keypoint_distance_mm"]
    case["levels_named_correctly"] = seg["levels_named_correctly"]
    options = _cohort.analysis_options(calibration, scan.truth)
    exact = scan.truth["exact_calibration"]
    truth_levels = _cohort.true_levels(scan.truth)
    truth_label = _level_values(_measure(scan.ct, scan.labels, options), exact)
    try:
        model_label = _level_values(_measure(scan.ct, labels, options), exact)
    except Exception as exc:  # e.g. no vertebra in the model's labels: a failure of the model, reported
        model_label, case["error"] = {}, f"measure on model labels: {type(exc).__name__}: {exc}"
    case["levels"] = {
        lvl: {"truth_mg_cm3": truth_levels.get(lvl),
              "truth_label_mg_cm3": truth_label.get(lvl, {}).get("vbmd"),
              "model_label_mg_cm3": model_label.get(lvl, {}).get("vbmd"),
              "truth_label_exact_mg_cm3": truth_label.get(lvl, {}).get("exact"),
              "model_label_exact_mg_cm3": model_label.get(lvl, {}).get("exact")}
        for lvl in sorted(set(truth_label) | set(model_label), key=_level_order)}
    missing = {name: [lvl for lvl in PAIR if lvl not in measured]
               for name, measured in (("model", model_label), ("truth", truth_label))}
    if any(missing.values()):
        case.setdefault("error", "; ".join(f"{'/'.join(lvls)} not measured on the {name} labels"
                                           for name, lvls in missing.items() if lvls))
    for name, measured in (("truth_label", truth_label), ("model_label", model_label)):
        if not missing[name.split("_")[0]]:
            for key, source in (("", "vbmd"), ("_exact", "exact")):
                case[f"l1_l2_{name}{key}_mg_cm3"] = float(np.mean([measured[lvl][source] for lvl in PAIR]))
    if all(lvl in truth_levels for lvl in PAIR):
        case["l1_l2_truth_mg_cm3"] = float(np.mean([truth_levels[lvl] for lvl in PAIR]))
    case["seconds"] = round(time.perf_counter() - t0, 2)
    return case


def _level_order(level: str) -> int:
    from ..labels import VERTEBRA_LEVELS

    return VERTEBRA_LEVELS.index(level) if level in VERTEBRA_LEVELS else len(VERTEBRA_LEVELS)


def _agreement(measured: list[float], reference: list[float]) -> dict[str, float] | None:
    from ..stats import bland_altman

    if not measured:
        return None
    ba = bland_altman(measured, reference)
    diff = np.asarray(measured) - np.asarray(reference)
    return {"n": len(measured), "bias_mg_cm3": round(ba["bias"], 3), "sd_mg_cm3": round(ba["sd"], 3),
            "loa_low_mg_cm3": round(ba["loa_low"], 3), "loa_high_mg_cm3": round(ba["loa_high"], 3),
            "max_abs_mg_cm3": round(float(np.abs(diff).max()), 3)}


def summarise(cases: list[dict], failures: list[dict], n_requested: int) -> dict[str, Any]:
    """Cohort figures from the per-case rows (the JSON layout of ``--json``)."""
    levels: dict[str, dict] = {}
    all_levels = sorted({lvl for c in cases for lvl in list(c.get("levels", {})) + list(c.get("naming", {}))},
                        key=_level_order)
    for lvl in all_levels:
        pairs = [(c["levels"][lvl], c) for c in cases if lvl in c.get("levels", {})]
        both = [v for v, _ in pairs if v["model_label_mg_cm3"] is not None and v["truth_label_mg_cm3"] is not None]
        dice = [c["dice"][f"vertebra_{lvl}"] for c in cases if f"vertebra_{lvl}" in c.get("dice", {})]
        named = [c["naming"][lvl]["correct"] for c in cases if lvl in c.get("naming", {})]
        dist = [c["keypoint_distance_mm"][lvl] for c in cases if lvl in c.get("keypoint_distance_mm", {})]
        truthful = [v for v, _ in pairs if v["truth_label_mg_cm3"] is not None and v["truth_mg_cm3"] is not None]
        levels[lvl] = {
            "model_vs_truth_label": _agreement([v["model_label_mg_cm3"] for v in both],
                                               [v["truth_label_mg_cm3"] for v in both]),
            "model_vs_truth_label_exact": _agreement([v["model_label_exact_mg_cm3"] for v in both],
                                                     [v["truth_label_exact_mg_cm3"] for v in both]),
            "truth_label_vs_truth": _agreement([v["truth_label_mg_cm3"] for v in truthful],
                                               [v["truth_mg_cm3"] for v in truthful]),
            "measured_on_model_labels": len(both), "measured_on_truth_labels": sum(
                v["truth_label_mg_cm3"] is not None for v, _ in pairs),
            "dice_mean": round(float(np.mean(dice)), 4) if dice else None,
            "dice_median": round(float(np.median(dice)), 4) if dice else None,
            "dice_min": round(float(np.min(dice)), 4) if dice else None,
            "naming_accuracy": round(float(np.mean(named)), 4) if named else None, "naming_n": len(named),
            "keypoint_distance_mm_median": round(float(np.median(dist)), 2) if dist else None,
        }
    def agree(rows: list[dict], measured: str, reference: str) -> dict:
        return _agreement([c[f"l1_l2_{measured}_mg_cm3"] for c in rows], [c[f"l1_l2_{reference}_mg_cm3"] for c in rows])

    paired = [c for c in cases if "l1_l2_model_label_mg_cm3" in c and "l1_l2_truth_label_mg_cm3" in c]
    l1_l2 = {
        "model_vs_truth_label": agree(paired, "model_label", "truth_label"),
        "model_vs_truth_label_exact": agree(paired, "model_label_exact", "truth_label_exact"),
        "model_vs_truth": agree([c for c in paired if "l1_l2_truth_mg_cm3" in c], "model_label", "truth"),
    }
    with_truth = [c for c in cases if "l1_l2_truth_mg_cm3" in c and "l1_l2_truth_label_mg_cm3" in c]
    truth_floor = {
        "truth_label_vs_truth": agree(with_truth, "truth_label", "truth"),
        "truth_label_exact_vs_truth": agree(with_truth, "truth_label_exact", "truth"),
    }
    loa = l1_l2["model_vs_truth_label"]
    qc_counts: dict[str, int] = {}
    for c in cases:
        for code in c.get("qc", []):
            qc_counts[code] = qc_counts.get(code, 0) + 1
    named_all = [c["levels_named_correctly"] for c in cases if "levels_named_correctly" in c]
    dice_any = [c["dice"]["vertebrae_any_level"] for c in cases if "vertebrae_any_level" in c.get("dice", {})]
    dice_other = {}
    for name in ("sacrum", "psoas_both", "femur_both", "paraspinal_both", "subcutaneous_fat", "intervertebral_disc"):
        values = [c["dice"][name] for c in cases if name in c.get("dice", {})]
        if values:
            dice_other[name] = round(float(np.mean(values)), 4)
    return {
        "n_requested": n_requested, "n_segmented": len(cases), "n_l1_l2_paired": len(paired),
        "n_failed": len(failures),
        "levels": levels, "l1_l2": l1_l2, "truth_floor_l1_l2": truth_floor,
        "naming_all_levels_correct": round(float(np.mean(named_all)), 4) if named_all else None,
        "dice_vertebrae_any_level_mean": round(float(np.mean(dice_any)), 4) if dice_any else None,
        "dice_other_mean": dice_other,
        "naming_methods": {m: sum(c.get("naming_method") == m for c in cases)
                           for m in sorted({c.get("naming_method") for c in cases if c.get("naming_method")})},
        "qc_counts": qc_counts,
        "target": {"description": f"L1-L2 model vs truth-label LoA within +-{TARGET_LOA_MG_CM3:g} mg/cm3, "
                                  "N >= 50 unseen patients, no failures",
                   "met": bool(loa is not None and n_requested >= 50 and not failures
                               and loa["loa_low_mg_cm3"] >= -TARGET_LOA_MG_CM3
                               and loa["loa_high_mg_cm3"] <= TARGET_LOA_MG_CM3)},
    }


def run_cohort(n: int, seed: int, calibration: str = "muscle-fat", fov=DEFAULT_FOV, spacing_mm=DEFAULT_SPACING_MM,
               device: str = "cpu", model_dir: str | None = None, keep_scans: str | None = None,
               log=print) -> dict[str, Any]:
    check_seeds(seed, n)
    cases: list[dict] = []
    failures: list[dict] = []
    for index in range(n):
        s = seed + index
        keep = Path(keep_scans) / f"patient_{s}" if keep_scans else None
        try:
            case = run_case(s, calibration, fov, spacing_mm, device, model_dir, keep)
        except Exception as exc:  # one patient's crash is a figure of the cohort, not the end of it
            failures.append({"seed": s, "error": f"{type(exc).__name__}: {exc}"})
            log(f"  patient {index + 1}/{n} seed {s}: FAILED {type(exc).__name__}: {exc}")
            continue
        cases.append(case)
        if "error" in case:
            failures.append({"seed": s, "error": case["error"]})
        named = "".join("+" if v["correct"] else "-" for v in case["naming"].values())
        pair = (f"L1-L2 model {case['l1_l2_model_label_mg_cm3']:.1f} truth-label {case['l1_l2_truth_label_mg_cm3']:.1f}"
                if "error" not in case else f"FAILED: {case['error']}")
        log(f"  patient {index + 1}/{n} seed {s}: naming {case['naming_method']} {named}  "
            f"Dice L1 {case['dice'].get('vertebra_L1', float('nan')):.2f}  {pair}  [{case['seconds']:.1f} s]")
    figures = summarise(cases, failures, n)
    figures.update(cases=cases, failures=failures)
    return figures


def _fmt_agreement(a: dict | None) -> str:
    if not a:
        return f"{'-':>8}{'-':>20}"
    loa = f"{a['loa_low_mg_cm3']:+.1f} to {a['loa_high_mg_cm3']:+.1f}"
    return f"{a['bias_mg_cm3']:>+8.1f}{loa:>20}"


def print_report(figures: dict, calibration: str) -> None:
    print()
    print(f"Per level: model-label minus truth-label vBMD ({calibration}), Dice, naming, keypoints; "
          "truth-label minus phantom truth (measurement floor)")
    print(f"{'level':<6}{'n':>4}{'bias':>8}{'95% LoA':>20}{'Dice mean':>11}{'named ok':>10}{'kp mm':>7}"
          f"{'n truth':>8}{'floor':>8}{'floor LoA':>20}")
    for lvl, v in figures["levels"].items():
        a, f = v["model_vs_truth_label"], v["truth_label_vs_truth"]
        named = "-" if v["naming_accuracy"] is None else f"{100 * v['naming_accuracy']:.0f}%"
        dice = "-" if v["dice_mean"] is None else f"{v['dice_mean']:.3f}"
        kp = "-" if v["keypoint_distance_mm_median"] is None else f"{v['keypoint_distance_mm_median']:.1f}"
        n_truth = v["measured_on_truth_labels"]
        print(f"{lvl:<6}{v['measured_on_model_labels']:>4}{_fmt_agreement(a)}{dice:>11}{named:>10}{kp:>7}"
              f"{n_truth:>8}{_fmt_agreement(f)}")
    p = figures["l1_l2"]
    n_pair = figures["n_l1_l2_paired"]
    print(f"L1-L2 model vs truth labels ({calibration}): bias / LoA {_fmt_agreement(p['model_vs_truth_label'])} "
          f"mg/cm3 (n {n_pair})")
    print(f"L1-L2 model vs truth labels (exact line): bias / LoA {_fmt_agreement(p['model_vs_truth_label_exact'])}")
    print(f"L1-L2 model labels vs phantom truth:      bias / LoA {_fmt_agreement(p['model_vs_truth'])}")
    fl = figures["truth_floor_l1_l2"]
    print(f"L1-L2 truth labels vs phantom truth:      bias / LoA {_fmt_agreement(fl['truth_label_vs_truth'])} "
          f"({calibration}); exact line {_fmt_agreement(fl['truth_label_exact_vs_truth'])}")
    any_level = figures["dice_vertebrae_any_level_mean"]
    print(f"Dice, all vertebrae whatever their name: {'-' if any_level is None else f'{any_level:.3f}'}; "
          + ", ".join(f"{k} {v:.3f}" for k, v in figures["dice_other_mean"].items()))
    all_ok = figures["naming_all_levels_correct"]
    print(f"all levels named right: {'-' if all_ok is None else f'{100 * all_ok:.0f}%'} of patients; naming "
          f"methods {figures['naming_methods']}; QC {figures['qc_counts']}")
    print(f"failures: {figures['n_failed']} of {figures['n_requested']}"
          + ("".join(f"\n  seed {f['seed']}: {f['error']}" for f in figures["failures"][:10])))
    print(f"target ({figures['target']['description']}): {'met' if figures['target']['met'] else 'NOT met'}")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    check_seeds(args.seed, args.n)
    print(f"cohort benchmark: {args.n} digital patients from seed {args.seed}, field of view {args.fov[0]}-"
          f"{args.fov[1]} at {' x '.join(f'{s:g}' for s in args.spacing_mm)} mm, calibration {args.calibration}")
    figures = run_cohort(args.n, args.seed, args.calibration, tuple(args.fov), tuple(args.spacing_mm), args.device,
                         args.model_dir, args.keep_scans, log=lambda line: print(line, flush=True))
    print_report(figures, args.calibration)
    elapsed = time.perf_counter() - t0
    import torch

    figures.update(seed=args.seed, calibration=args.calibration, fov_levels=list(args.fov),
                   spacing_mm=list(args.spacing_mm), device=args.device, model_dir=args.model_dir,
                   threads=torch.get_num_threads(), seconds=round(elapsed, 1),
                   seconds_per_patient=round(elapsed / max(args.n, 1), 2), peak_rss_mb=round(peak_rss_mb(), 1))
    print(f"{elapsed:.0f} s ({elapsed / max(args.n, 1):.1f} s a patient, {figures['threads']} thread(s)), "
          f"peak memory {peak_rss_mb():.0f} MB")
    write_json(args.json, figures)
    return 0 if figures["n_segmented"] else 1
