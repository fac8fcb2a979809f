"""``obmd bench thickness``: L1-L2 vBMD bias of thick slices against the same scan's thin slices.

Each digital patient (``obmd phantom --region spine``) is built once with thin slices (1 mm apart, 1 mm
slice profile); a thick reconstruction of T mm is simulated by a boxcar mean of T consecutive thin
slices (what a thick slice is: the average of the thin ones it covers) on a T mm grid, its labels by
majority in each slab (the centre slice's label breaks ties), ``slice_thickness_mm`` set to T as DICOM
SliceThickness would. The per-scan value is the spine summary (L1-L2 vBMD, ``pipeline.measure``); the bias
is thick minus thin of the same patient (same anatomy, same noise). With ``--real-ct``/``--real-seg`` a
real CT is thickened the same way by whole multiples of its own slice spacing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..volume import Volume
from .common import add_json_option, peak_rss_mb, write_json

THIN_SLICE_MM = 1.0
DEFAULT_SEEDS = (3000, 3001, 3002, 3003, 3004)
DEFAULT_THICKNESS_MM = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def _majority(slab: np.ndarray) -> np.ndarray:
    """Most frequent label along axis 0 of ``slab`` (n, j, i); ties go to the centre slice's label."""
    best = slab[slab.shape[0] // 2].copy()
    best_count = (slab == best[None]).sum(axis=0)
    for value in np.unique(slab):
        count = (slab == value).sum(axis=0)
        better = count > best_count
        best[better] = value
        best_count[better] = count[better]
    return best


def thicken(ct: Volume, labels: Volume, factor: int, slice_thickness_mm: float | None = None, step: int | None = None,
            offset: int = 0) -> tuple[Volume, Volume]:
    """``(ct, labels)`` as a thick-slice scan: each slice the mean of ``factor`` consecutive input slices (CT)
    or their majority label, slices ``step`` input slices apart (default ``factor``: contiguous; less:
    overlapping; more: gaps), the first slab starting at input slice ``offset``; slabs that would run past
    the top are dropped. ``slice_thickness_mm``: the input's own thickness (default its z spacing); the
    result's is ``factor`` times it, in its metadata as DICOM SliceThickness."""
    factor, step, offset = int(factor), int(step or factor), int(offset)
    thin_mm = float(slice_thickness_mm or ct.spacing_mm[0])
    starts = list(range(offset, ct.shape[0] - factor + 1, step))
    if factor == 1 and step == 1 and offset == 0:
        return ct.like(ct.array, **{**ct.metadata, "slice_thickness_mm": thin_mm}), labels
    data = ct.array.astype(np.float32, copy=False)
    thick = np.stack([np.rint(data[k:k + factor].mean(axis=0)) for k in starts]).astype(np.float32)  # integer HU
    voted = np.stack([_majority(labels.array[k:k + factor]) for k in starts])
    centre = ct.index_to_lps_mm(np.array([offset + (factor - 1) / 2.0, 0.0, 0.0]))
    spacing = (ct.spacing_mm[0] * step, ct.spacing_mm[1], ct.spacing_mm[2])
    geometry = {"spacing_mm": spacing, "origin_lps_mm": tuple(float(v) for v in centre), "direction": ct.direction}
    meta = {k: v for k, v in ct.metadata.items() if k != "path"}
    meta["slice_thickness_mm"] = thin_mm * factor
    label_meta = {k: v for k, v in labels.metadata.items() if k not in ("path", "_schema_checked_array")}
    return Volume(thick, metadata=meta, **geometry), Volume(voted.astype(labels.array.dtype), metadata=label_meta,
                                                            **geometry)


DEFAULT_OVERLAP_SPACING_MM = (2.0, 3.0)
# How the thick slices are laid out: contiguous (spacing = thickness, the usual thick reconstruction),
# overlapping (thicker than the spacing, e.g. 5 mm every 2 mm) or with gaps (1 mm slices, the given
# "thickness" apart).
MODES = ("contiguous", "overlap", "gap")


def layouts(mode: str, thickness_mm: float, overlap_spacing_mm=DEFAULT_OVERLAP_SPACING_MM) -> list[tuple[int, int]]:
    """(thin slices per thick slice, thin slices between thick slices) for ``mode`` at ``thickness_mm``;
    overlap: one per spacing of ``overlap_spacing_mm`` below the thickness."""
    n = int(round(thickness_mm / THIN_SLICE_MM))
    if mode == "overlap":
        steps = sorted({int(round(s / THIN_SLICE_MM)) for s in overlap_spacing_mm})
        return [(n, step) for step in steps if 1 <= step < n]
    return [{"contiguous": (n, n), "gap": (1, n)}[mode]]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("thickness", help="L1-L2 vBMD bias of thick slices vs thin (same scans)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), metavar="SEED",
                        help=f"digital patients (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--thickness-mm", type=float, nargs="+", default=list(DEFAULT_THICKNESS_MM), metavar="MM",
                        help="thick-slice thicknesses, whole mm (default 1 2 3 4 5 6 8; 1 is the thin reference)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["contiguous"],
                        help="slice layouts: contiguous (default), overlap (thicker than --overlap-spacing-mm), "
                             "gap (1 mm slices that far apart)")
    parser.add_argument("--overlap-spacing-mm", type=float, nargs="+", default=list(DEFAULT_OVERLAP_SPACING_MM),
                        metavar="MM", help="slice spacings of the overlap layout (default 2 3)")
    parser.add_argument("--erosion-radius-mm", type=float, default=None,
                        help="cortex removal radius (default: the analysis default, 3.2 mm)")
    parser.add_argument("--phases", type=int, default=3,
                        help="slab start positions per layout, spread over one slice spacing (default 3)")
    parser.add_argument("--kvp", type=float, default=120.0)
    parser.add_argument("--real-ct", metavar="CT", help="also thicken this real CT (by multiples of its spacing)")
    parser.add_argument("--real-seg", metavar="LABELS", help="label map of --real-ct")
    parser.add_argument("--real-factors", type=int, nargs="+", default=[2, 3], metavar="N",
                        help="real CT: slices averaged per thick slice (default 2 3)")
    add_json_option(parser)
    parser.set_defaults(func=run)


def phase_offsets(step: int, phases: int) -> list[int]:
    """Up to ``phases`` slab start slices spread over one slice spacing of ``step`` thin slices."""
    return sorted({int(i * step // max(1, phases)) for i in range(max(1, phases))})


def thickness_rows(seeds: list[int], thicknesses_mm: list[float], modes: list[str] = ("contiguous",),
                   phases: int = 3, kvp: float = 120.0, overlap_spacing_mm=DEFAULT_OVERLAP_SPACING_MM,
                   erosion_radius_mm: float | None = None, log=print) -> list[dict]:
    """One row per (seed, layout, thickness, phase): the thick scan's summary and its bias against the thin
    scan of the same patient."""
    from . import _qc_cases

    rows = []
    for seed in seeds:
        case = _qc_cases.digital_patient(seed, spacing_mm=(THIN_SLICE_MM, 1.5, 1.5), slice_thickness_mm=THIN_SLICE_MM,
                                         kvp=kvp, hip_truth=False)
        truth = _qc_cases.true_l1_l2(case.truth)
        thin = _qc_cases.spine_summary(case.ct, case.labels, erosion_radius_mm=erosion_radius_mm)
        for mode in modes:
            grid = [fs for t in sorted(set(thicknesses_mm)) for fs in layouts(mode, t, overlap_spacing_mm)]
            for factor, step in grid:
                for offset in phase_offsets(step, phases) if (factor, step) != (1, 1) else [0]:
                    ct, labels = thicken(case.ct, case.labels, factor, THIN_SLICE_MM, step, offset)
                    summary = _qc_cases.spine_summary(ct, labels, erosion_radius_mm=erosion_radius_mm)
                    row = _row(case.name, ct, summary, thin, truth)
                    row.update(seed=seed, mode=mode, phase=offset)
                    rows.append(row)
                    log(f"  {case.name} {mode} {row['thickness_mm']:g} mm / {row['spacing_mm']:g} mm apart (phase "
                        f"{offset}): L1-L2 {row['vbmd_mg_cm3']:.1f} mg/cm3, bias {row['bias_mg_cm3']:+.1f}; flags "
                        f"{','.join(row['thickness_flags']) or '-'}")
    return rows


def real_rows(ct_path: str, seg_path: str, factors: list[int], log=print) -> list[dict]:
    """The real CT at its own slices and thickened ``factors`` slices at a time (contiguous, each phase)."""
    from . import _qc_cases

    case = _qc_cases.real_case(ct_path, seg_path)
    native_mm = float(case.ct.metadata.get("slice_thickness_mm") or case.ct.spacing_mm[0])
    thin = _qc_cases.spine_summary(case.ct, case.labels)
    rows = [{**_row(case.name, case.ct, thin, thin, None), "thickness_mm": native_mm, "phase": 0}]
    for factor in factors:
        for offset in range(factor):
            ct, labels = thicken(case.ct, case.labels, factor, native_mm, factor, offset)
            rows.append({**_row(case.name, ct, _qc_cases.spine_summary(ct, labels), thin, None), "phase": offset})
    for row in rows:
        log(f"  real CT {row['thickness_mm']:g} mm (phase {row['phase']}): L1-L2 {row['vbmd_mg_cm3']:.1f} mg/cm3, "
            f"bias vs native {row['bias_mg_cm3']:+.1f} (stated SD {row['stated_sd_mg_cm3'] or float('nan'):.1f}); "
            f"flags {','.join(row['thickness_flags']) or '-'}")
    return rows


def _row(name: str, ct: Volume, summary: dict, thin: dict, truth: float | None) -> dict:
    vbmd, ref = summary["vbmd_mg_cm3"], thin["vbmd_mg_cm3"]
    flags = [q for q in summary["qc"] if q["code"] in ("slice_thick", "slice_too_thick")]
    return {
        "case": name, "thickness_mm": float(ct.metadata.get("slice_thickness_mm") or ct.spacing_mm[0]),
        "spacing_mm": float(ct.spacing_mm[0]), "vbmd_mg_cm3": vbmd,
        "bias_mg_cm3": None if vbmd is None or ref is None else vbmd - ref,
        "hu_bias": summary["trabecular_hu_mean"] - thin["trabecular_hu_mean"],
        "error_vs_truth_mg_cm3": None if vbmd is None or truth is None else vbmd - truth,
        "stated_sd_mg_cm3": summary["stated_sd_mg_cm3"], "levels_used": summary["levels_used"],
        "category": summary["category"], "muscle_hu": summary["muscle_hu"], "fat_hu": summary["fat_hu"],
        "thickness_flags": [q["code"] for q in flags], "thickness_messages": [q["message"] for q in flags],
    }


def _groups(rows: list[dict]) -> dict[tuple[str, float, float], list[dict]]:
    """Rows by (layout, thickness, spacing), in order of appearance."""
    out: dict[tuple[str, float, float], list[dict]] = {}
    for r in rows:
        if r["bias_mg_cm3"] is not None:
            out.setdefault((r["mode"], r["thickness_mm"], r["spacing_mm"]), []).append(r)
    return out


def table(rows: list[dict]) -> dict[str, dict]:
    """Bias per (layout, thickness, spacing) over patients and phases: mean, SD, min, max (mg/cm3), the
    trabecular HU bias, the mean stated SD and the flags raised; keys ``"<layout> <thickness>/<spacing>"``."""
    from ._qc_cases import describe

    out = {}
    for (mode, thickness, spacing), sel in _groups(rows).items():
        stated = [r["stated_sd_mg_cm3"] for r in sel if r["stated_sd_mg_cm3"] is not None]
        out[f"{mode} {thickness:g}/{spacing:g}"] = {
            **describe([r["bias_mg_cm3"] for r in sel]), "mode": mode, "thickness_mm": thickness,
            "spacing_mm": spacing, "hu_bias_mean": float(np.mean([r["hu_bias"] for r in sel])),
            "stated_sd_mean": float(np.mean(stated)) if stated else None,
            "per_seed": {str(seed): float(np.mean([r["bias_mg_cm3"] for r in sel if r["seed"] == seed]))
                         for seed in dict.fromkeys(r["seed"] for r in sel)},
            "flags": sorted({c for r in sel for c in r["thickness_flags"]}),
        }
    return out


def print_table(summary: dict[str, dict], seeds: list[int]) -> None:
    print("L1-L2 vBMD bias, thick minus thin of the same patient (mg/cm3; per seed: mean over phases)")
    print(f"{'layout':<12}{'thick':>6}{'apart':>6}" + "".join(f"{s:>8}" for s in seeds)
          + f"{'mean':>8}{'SD':>6}{'min':>7}{'max':>7}{'HU':>7}{'stated SD':>10}  flags")
    for f in summary.values():
        cells = "".join(f"{f['per_seed'][str(s)]:>+8.1f}" if str(s) in f["per_seed"] else f"{'-':>8}" for s in seeds)
        stated = f["stated_sd_mean"] if f["stated_sd_mean"] is not None else float("nan")
        print(f"{f['mode']:<12}{f['thickness_mm']:>6g}{f['spacing_mm']:>6g}{cells}{f['mean']:>+8.1f}{f['sd']:>6.1f}"
              f"{f['min']:>+7.1f}{f['max']:>+7.1f}{f['hu_bias_mean']:>+7.1f}{stated:>10.1f}  "
              f"{','.join(f['flags']) or '-'}")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    print(f"thickness benchmark: digital patients {' '.join(map(str, args.seeds))}, thin {THIN_SLICE_MM:g} mm "
          f"slices thickened to {' '.join(f'{t:g}' for t in args.thickness_mm)} mm (boxcar; {', '.join(args.modes)}; "
          f"{args.phases} phases)")
    rows = thickness_rows(list(args.seeds), list(args.thickness_mm), list(args.modes), args.phases, args.kvp,
                          list(args.overlap_spacing_mm), args.erosion_radius_mm)
    summary = table(rows)
    print()
    print_table(summary, list(args.seeds))
    real = []
    if args.real_ct and args.real_seg:
        print()
        real = real_rows(args.real_ct, args.real_seg, list(args.real_factors))
    elapsed = time.perf_counter() - t0
    print(f"{elapsed:.0f} s, peak memory {peak_rss_mb():.0f} MB")
    write_json(args.json, {"seeds": list(args.seeds), "thin_slice_mm": THIN_SLICE_MM, "kvp": args.kvp,
                           "modes": list(args.modes), "phases": args.phases,
                           "overlap_spacing_mm": list(args.overlap_spacing_mm),
                           "erosion_radius_mm": args.erosion_radius_mm, "bias": summary, "rows": rows,
                           "real": real, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()})
    return 0 if rows else 1
