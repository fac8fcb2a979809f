"""``obmd demo [--out DIR]``: build a digital patient of known truth, analyse it, compare, draw pictures.

The README's main command (``make demo``). Steps: a digital patient as ``obmd phantom`` makes it
(torso, fixed seed, written to DIR/phantom) -> segmentation (the trained models when they are
installed, else the phantom's own labels; the output says which) -> calibrated vBMD per level ->
measured vs true per level and the category -> results.json/CSV/masks and PNG pictures a newcomer
can open: an axial slice through L1 with the ROIs, a sagittal view with the levels, and the
calibration line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..calibration import CALIBRATIONS, cli_help

DEMO_SEED = 7
MIN_MODEL_DICE = 0.8  # vertebra agreement with the phantom's truth below which the demo uses the labels


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on a digital patient of known BMD",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="obmd-demo", help="output folder (default ./obmd-demo)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"phantom seed (default {DEMO_SEED})")
    parser.add_argument("--calibration", default="muscle-fat", choices=list(CALIBRATIONS), metavar="METHOD",
                        help="calibration method (default muscle-fat): " + cli_help())
    parser.add_argument("--segmentation", choices=("auto", "models", "labels"), default="auto",
                        help="auto: the trained models if installed, else the phantom's labels")
    parser.set_defaults(func=run)


def models_available() -> tuple[bool, str]:
    """Whether the segmentation models can run here (package importable and weights present)."""
    try:
        from .. import models  # noqa: F401
        from ..models import inference
    except Exception as exc:  # not installed / not built yet
        return False, f"models package not available ({type(exc).__name__})"
    check = getattr(inference, "models_available", None) or getattr(inference, "available", None)
    if callable(check):
        try:
            ok = check()
            ok, why = (ok if isinstance(ok, tuple) else (bool(ok), ""))
            return bool(ok), why or ("models installed" if ok else "model weights missing")
        except Exception as exc:
            return False, f"models not usable ({exc})"
    from ..resources import models_dir

    weights = list(Path(models_dir()).glob("*.safetensors")) if Path(models_dir()).exists() else []
    return (bool(weights), "models installed" if weights else "no model weights in Resources/Models")


def vertebra_dice(predicted, truth) -> dict[str, float]:
    """Dice per vertebra level (our schema ids) present in the truth."""
    from ..labels import LABELS

    out = {}
    for name, label in LABELS.items():
        if not name.startswith("vertebra_"):
            continue
        t = truth == label
        if not t.any():
            continue
        p = predicted == label
        out[name.split("_", 1)[1]] = float(2.0 * (p & t).sum() / (p.sum() + t.sum()))
    return out


def _category(vbmd: float) -> str:
    # ACR QCT: > 120 normal, 80-120 low bone mass (osteopenia), < 80 osteoporosis.
    return "normal" if vbmd > 120 else ("osteopenia" if vbmd >= 80 else "osteoporosis")


def run(args: argparse.Namespace) -> int:
    from ..output_folder import staged_output

    out = Path(args.out)
    with staged_output(out) as staging:  # a fresh folder that replaces DIR whole (an earlier demo's included)
        lines = _run_into(args, out, staging)
    for path in lines:
        print(f"    {out / path.relative_to(staging)}")
    return 0


def _run_into(args: argparse.Namespace, out: Path, staging: Path) -> list[Path]:
    """The demo written into ``staging`` (printed as ``out``); returns the files to list."""
    from ..benchmarks import _cohort
    from ..pipeline import analyze, write_outputs
    from ..progress import TerminalProgress

    print(f"1/4 building digital patient (seed {args.seed}) -> {out / 'phantom'}")
    scan = _cohort.generate(args.seed, staging / "phantom", region="torso")
    kvp = _cohort.scanner_kvp(scan.truth)
    print(f"    {scan.ct.array.shape[0]} slices, spacing {tuple(round(s, 2) for s in scan.ct.spacing_mm)} mm"
          + (f", {kvp:g} kVp" if kvp else ""))

    use_models, why = (False, "not requested") if args.segmentation == "labels" else models_available()
    if args.segmentation == "models" and not use_models:
        from ..errors import ModelError

        raise ModelError(f"--segmentation models: {why}")
    options = _cohort.analysis_options(args.calibration, scan.truth)
    label_source = "trained models" if use_models else f"the phantom's own labels ({why})"
    print(f"2/4 segmentation: {label_source}; calibration: {args.calibration}")
    try:
        result = analyze(scan.ct, None if use_models else scan.labels, options, progress=TerminalProgress())
    except Exception as exc:
        if not use_models or args.segmentation == "models":
            raise
        print(f"    the models failed ({type(exc).__name__}: {exc}); falling back to the phantom's labels")
        label_source = "the phantom's own labels (models failed)"
        use_models = False
        result = analyze(scan.ct, scan.labels, options, progress=TerminalProgress())

    if use_models and result.labels is not None:
        dice = vertebra_dice(result.labels.array, scan.labels.array)
        mean_dice = sum(dice.values()) / len(dice) if dice else 0.0
        print(f"    models vs the phantom's true labels: mean vertebra Dice {mean_dice:.2f} over {len(dice)} levels")
        if mean_dice < MIN_MODEL_DICE:
            print(f"    below {MIN_MODEL_DICE}: the models are not reliable on this patient yet; "
                  "analysing with the phantom's own labels instead")
            label_source = f"the phantom's own labels (models' Dice {mean_dice:.2f} < {MIN_MODEL_DICE})"
            result = analyze(scan.ct, scan.labels, options, progress=TerminalProgress())
    print(f"3/4 writing results -> {out / 'results'} (segmentation: {label_source})")
    written = write_outputs(result, scan.ct, staging / "results")

    truth_levels = _cohort.true_levels(scan.truth)
    measured = _cohort.measured_levels(result.results)
    print()
    print(f"{'level':<7}{'measured':>10}{'true':>8}{'error':>8}   (vBMD, mg/cm3 HA)")
    for level in sorted(measured, key=_level_order):
        true = truth_levels.get(level)
        err = f"{measured[level] - true:+8.1f}" if true is not None else f"{'':>8}"
        true_s = f"{true:8.1f}" if true is not None else f"{'-':>8}"
        print(f"{level:<7}{measured[level]:>10.1f}{true_s}{err}")
    summary = result.results.get("spine", {}).get("summary", {})
    pair = _cohort.paired_patient_value(measured, truth_levels)
    if summary.get("vbmd_mg_cm3") is not None:
        used = summary.get("levels_used")
        sd = summary.get("vbmd_calibration_sd_mg_cm3")
        print(f"summary ({'+'.join(used) if isinstance(used, list) else used}): "
              f"{summary['vbmd_mg_cm3']:.1f}{f' +-{sd:.1f}' if sd is not None else ''} mg/cm3 -> "
              f"{summary.get('category')}")
    if pair is not None:
        print(f"truth   ({'+'.join(pair[2])}): {pair[1]:.1f} mg/cm3 -> {_category(pair[1])}")
    for line in hip_truth_lines(result.results, scan.truth):
        print(line)
    for q in result.results.get("qc", [])[:6]:
        print(f"  QC {q.get('severity', '')}: {q.get('code', '')} {q.get('message', '')}")

    print(f"4/4 pictures -> {out}")
    pictures = draw_pictures(scan, result, staging, truth_levels)
    return [*written.values(), *pictures]


def hip_truth_lines(results: dict, truth: dict) -> list[str]:
    """Measured vs true neck / total hip aBMD and T-score per side (truth: the phantom's density map)."""
    lines = []
    for side in ("left", "right"):
        measured, true = (results.get("hip") or {}).get(side) or {}, (truth.get("hip") or {}).get(side) or {}
        for region, title in (("neck", "neck"), ("total_hip", "total hip")):
            m, t = measured.get(region), true.get(region)
            if not isinstance(m, dict) or not isinstance(t, dict) or "abmd_g_cm2" not in t:
                continue
            if not lines:
                lines.append(f"\n{'hip':<17}{'measured':>10}{'true':>8}{'error':>8}{'T':>7}{'true T':>8}"
                             "   (aBMD, g/cm2)")
            sd = m.get("t_score_calibration_sd")
            err = 100.0 * (m["abmd_g_cm2"] / t["abmd_g_cm2"] - 1.0)
            lines.append(f"{side + ' ' + title:<17}{m['abmd_g_cm2']:>10.3f}{t['abmd_g_cm2']:>8.3f}{err:>+7.1f}%"
                         f"{m['t_score']:>+7.1f}{t['t_score']:>+8.1f}" + (f"   (T +-{sd:.1f}: calibration, 1 SD)"
                                                                        if sd is not None else ""))
    return lines


def _level_order(level: str) -> tuple[int, int]:
    return ({"T": 0, "L": 1, "S": 2}.get(level[0], 3), int(level[1:]) if level[1:].isdigit() else 0)


def draw_pictures(scan, result, out: Path, truth_levels: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ct = scan.ct.array
    rois = result.rois
    paths: list[Path] = []
    window = dict(cmap="gray", vmin=-250, vmax=750)
    colors = {"trabecular": "tab:red", "muscle_roi": "tab:green", "fat_roi": "gold"}

    def color_of(name: str) -> str:
        return colors["trabecular"] if name.startswith("trabecular_") else colors.get(name, "tab:cyan")

    # axial through the middle of L1's ROI (or the first level present)
    trab = [n for n in rois if n.startswith("trabecular_")]
    key = "trabecular_L1" if "trabecular_L1" in rois else (sorted(trab)[0] if trab else None)
    if key is not None and rois[key].any():
        ks = np.nonzero(rois[key].any(axis=(1, 2)))[0]
        k = int(ks[len(ks) // 2])
        sj, si = scan.ct.spacing_mm[1], scan.ct.spacing_mm[2]
        fig, ax = plt.subplots(figsize=(7, 7 * ct.shape[1] * sj / (ct.shape[2] * si)))
        ax.imshow(ct[k], aspect=sj / si, **window)
        for name, mask in rois.items():
            if mask[k].any():
                ax.contour(mask[k].astype(float), levels=[0.5], colors=[color_of(name)], linewidths=1.2)
        handles = [plt.Line2D([], [], color=c, label=lbl) for lbl, c in
                   (("trabecular ROI", colors["trabecular"]), ("psoas (muscle) ROI", colors["muscle_roi"]),
                    ("subcutaneous fat ROI", colors["fat_roi"]))]
        ax.legend(handles=handles, loc="lower right", fontsize=8)
        ax.set_title(f"axial slice {k} through {key.split('_', 1)[1]} (radiological view: patient right on the left)")
        ax.axis("off")
        fig.tight_layout()
        paths.append(out / "axial_L1_rois.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    # sagittal through the vertebral bodies' centre line, with level names and measured/true vBMD
    if trab:
        union = np.zeros(ct.shape[1:], bool)
        for n in trab:
            union |= rois[n].any(axis=0)
        i_mid = int(np.round(np.nonzero(union.any(axis=0))[0].mean()))
        sz, sj = scan.ct.spacing_mm[0], scan.ct.spacing_mm[1]
        fig, ax = plt.subplots(figsize=(6, 8))
        ax.imshow(ct[:, :, i_mid], origin="lower", aspect=sz / sj, **window)
        measured = {lvl: v.get("vbmd_mg_cm3") for lvl, v in result.results.get("spine", {}).get("levels", {}).items()
                    if isinstance(v, dict)}
        for n in trab:
            mask = rois[n][:, :, i_mid]
            if not mask.any():
                continue
            ax.contour(mask.astype(float), levels=[0.5], colors=["tab:red"], linewidths=1)
            kk, jj = np.nonzero(mask)
            level = n.split("_", 1)[1]
            value = measured.get(level)
            text = level + (f"  {value:.0f}" if value is not None else "") + (
                f" (true {truth_levels[level]:.0f})" if level in truth_levels else "")
            ax.text(jj.min() - 6, kk.mean(), text, color="yellow", fontsize=9, va="center", ha="right")
        ax.set_title("sagittal view: levels, measured vBMD (true) in mg/cm³")
        ax.axis("off")
        fig.tight_layout()
        paths.append(out / "sagittal_levels.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    # calibration line: HU -> mg/cm3 with the reference points and the measured levels
    calib = result.results.get("calibration", {})
    slope, intercept = calib.get("slope"), calib.get("intercept")
    if slope is not None and intercept is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        hu = np.linspace(-150, 300, 50)
        label = f"{calib.get('method')}: {intercept:.1f} + {slope:.3f}·HU"
        ax.plot(hu, intercept + slope * hu, color="0.3", label=label)
        if calib.get("muscle_hu") is not None and calib.get("muscle_density_mg_cm3") is not None:
            ax.scatter([calib["muscle_hu"]], [calib["muscle_density_mg_cm3"]], color="tab:green", zorder=3,
                       label="muscle")
        if calib.get("fat_hu") is not None and calib.get("fat_density_mg_cm3") is not None:
            ax.scatter([calib["fat_hu"]], [calib["fat_density_mg_cm3"]], color="gold", zorder=3, label="fat")
        levels = result.results.get("spine", {}).get("levels", {})
        for level, v in levels.items():
            if isinstance(v, dict) and v.get("trabecular_hu_mean") is not None and level in truth_levels:
                ax.scatter([v["trabecular_hu_mean"]], [truth_levels[level]], marker="x", color="tab:red", zorder=3)
                ax.annotate(level, (v["trabecular_hu_mean"], truth_levels[level]), fontsize=8,
                            xytext=(3, 3), textcoords="offset points")
        ax.scatter([], [], marker="x", color="tab:red", label="vertebrae: measured HU, TRUE vBMD")
        ax.set(xlabel="CT number (HU)", ylabel="vBMD (mg/cm³ HA)", title="calibration line")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "calibration_line.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
