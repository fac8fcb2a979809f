"""``obmd bench segmentation``: the shipped model against a reference label map.

Prints Dice per structure, whether each reference level was named right, the keypoint distance (mm)
between predicted and reference vertebral body centres (reference = centroid of the anterior/body
part of each reference vertebra label, :mod:`OpportunisticBMDLib.models.keypoints`), and the vBMD
difference between the measurement on the model's labels and on the reference labels.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from .common import add_json_option, peak_rss_mb, write_json

# Structures compared when present in the reference (TotalSegmentator maps to these).
STRUCTURES = ("vertebra_T10", "vertebra_T11", "vertebra_T12", "vertebra_L1", "vertebra_L2", "vertebra_L3",
              "vertebra_L4", "vertebra_L5", "sacrum", "rib_left_12", "rib_right_12", "femur_left", "femur_right",
              "hip_left", "hip_right", "psoas_left", "psoas_right", "paraspinal_left", "paraspinal_right",
              "intervertebral_disc", "subcutaneous_fat")
# Vertebrae cut by the field of view: the reference keeps a sliver the model need not match.
MIN_REFERENCE_FRACTION = 0.4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("segmentation", help="Dice, keypoint distance and vBMD difference vs reference labels",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True, help="CT (file or DICOM folder)")
    p.add_argument("--reference", required=True, help="reference labels (library schema or TotalSegmentator total)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-dir", help="models folder (default: the shipped Resources/Models)")
    add_json_option(p)
    p.set_defaults(func=run)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    denom = int(a.sum()) + int(b.sum())
    return float(2.0 * int((a & b).sum()) / denom) if denom else float("nan")


def compare(ct, reference: np.ndarray, predicted: np.ndarray, keypoints: dict[str, Any]) -> dict[str, Any]:
    """Dice, naming and keypoint figures of a predicted label map vs a reference (library schema)."""
    from ..labels import LABELS, VERTEBRA_LEVELS
    from ..models import keypoints as kp

    out: dict[str, Any] = {"dice": {}, "naming": {}, "keypoint_distance_mm": {}}
    sizes = {lvl: int((reference == LABELS[f"vertebra_{lvl}"]).sum()) for lvl in VERTEBRA_LEVELS}
    typical = float(np.median([s for s in sizes.values() if s])) if any(sizes.values()) else 0.0
    for name in STRUCTURES:
        ref = reference == LABELS[name]
        pred = predicted == LABELS[name]
        if ref.any():
            out["dice"][name] = round(dice(pred, ref), 4)
    for pair in ("psoas", "femur", "hip", "paraspinal"):
        ref = np.isin(reference, [LABELS[f"{pair}_left"], LABELS[f"{pair}_right"]])
        if ref.any():
            out["dice"][f"{pair}_both"] = round(dice(np.isin(predicted, [LABELS[f"{pair}_left"],
                                                                          LABELS[f"{pair}_right"]]), ref), 4)
    vert_ids = [LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS]
    for lvl in VERTEBRA_LEVELS:
        ref = reference == LABELS[f"vertebra_{lvl}"]
        if not ref.any() or sizes[lvl] < MIN_REFERENCE_FRACTION * typical:
            continue
        overlap = predicted[ref]
        overlap = overlap[np.isin(overlap, vert_ids)]
        got = None
        if overlap.size:
            got_id = int(np.bincount(overlap).argmax())
            got = next(n.split("_")[1] for n, i in LABELS.items() if i == got_id)
        out["naming"][lvl] = {"predicted": got, "correct": got == lvl}
        centre = kp.body_centre_kji(ref)
        point = keypoints.get("levels", {}).get(lvl)
        if centre is not None and point is not None:
            ref_mm = ct.index_to_lps_mm(centre)
            dist = float(np.linalg.norm(ref_mm - np.asarray(point["position_lps_mm"])))
            out["keypoint_distance_mm"][lvl] = round(dist, 2)
    out["levels_named_correctly"] = all(v["correct"] for v in out["naming"].values()) if out["naming"] else False
    return out


def vbmd_difference(ct, reference_labels, predicted_labels) -> dict[str, Any]:
    """L1-L2 (and per-level) vBMD measured on the model's labels minus on the reference labels."""
    try:
        from ..pipeline import analyze
        from ..settings import AnalysisOptions
    except ImportError as exc:
        return {"error": f"pipeline not available ({exc})"}
    options = AnalysisOptions()
    try:
        ref = analyze(ct, reference_labels, options).results
        pred = analyze(ct, predicted_labels, options).results
    except Exception as exc:  # report, do not hide the other figures
        return {"error": f"analysis failed: {exc}"}
    return level_vbmd_differences(ref["spine"]["levels"], pred["spine"]["levels"], min_l1_l2_levels=1)


def level_vbmd_differences(ref_levels: dict[str, Any], model_levels: dict[str, Any],
                           min_l1_l2_levels: int) -> dict[str, Any]:
    """Per level (both measured) vBMD on the model's labels minus on the reference's, and the L1-L2 means
    when at least ``min_l1_l2_levels`` of L1 and L2 are in both."""
    out: dict[str, Any] = {"levels": {}}
    for lvl, r in ref_levels.items():
        m = model_levels.get(lvl)
        if m and r.get("vbmd_mg_cm3") is not None and m.get("vbmd_mg_cm3") is not None:
            out["levels"][lvl] = {"reference_mg_cm3": round(r["vbmd_mg_cm3"], 2),
                                  "model_mg_cm3": round(m["vbmd_mg_cm3"], 2),
                                  "difference_mg_cm3": round(m["vbmd_mg_cm3"] - r["vbmd_mg_cm3"], 2)}
    pair = [out["levels"][lvl] for lvl in ("L1", "L2") if lvl in out["levels"]]
    if pair and len(pair) >= min_l1_l2_levels:
        out["l1_l2_reference_mg_cm3"] = round(float(np.mean([p["reference_mg_cm3"] for p in pair])), 2)
        out["l1_l2_model_mg_cm3"] = round(float(np.mean([p["model_mg_cm3"] for p in pair])), 2)
        out["l1_l2_difference_mg_cm3"] = round(out["l1_l2_model_mg_cm3"] - out["l1_l2_reference_mg_cm3"], 2)
    return out


def run(args: argparse.Namespace) -> int:
    from ..io import read_ct, read_labels
    from ..labels import looks_like_totalseg, totalseg_to_ours
    from ..models.inference import segment

    ct = read_ct(args.image)
    ref_vol = read_labels(args.reference, like=ct)
    ref = ref_vol.array.astype(np.int16)
    if looks_like_totalseg(ref):
        ref = totalseg_to_ours(ref).astype(np.int16)
    ref_vol = ct.like(ref)
    t0 = time.perf_counter()
    labels, keypoints = segment(ct, device=args.device, model_dir=args.model_dir)
    seconds = time.perf_counter() - t0
    figures = compare(ct, ref, labels.array, keypoints)
    figures["segmentation_seconds"] = round(seconds, 2)
    figures["naming_method"] = keypoints["naming"]
    figures["qc"] = keypoints["qc"]
    figures["vbmd"] = vbmd_difference(ct, ref_vol, labels)
    figures["peak_memory_mb"] = round(peak_rss_mb(), 1)
    figures["image"], figures["reference"] = str(args.image), str(args.reference)
    print(f"segmentation of {args.image} vs {args.reference} ({seconds:.1f} s)")
    print(f"{'structure':<22}{'Dice':>8}")
    for name, value in figures["dice"].items():
        print(f"{name:<22}{value:>8.3f}")
    print(f"{'level':<8}{'named as':>10}{'keypoint mm':>14}")
    for lvl, v in figures["naming"].items():
        dist = figures["keypoint_distance_mm"].get(lvl)
        print(f"{lvl:<8}{v['predicted'] or '-':>10}{(f'{dist:.1f}' if dist is not None else '-'):>14}")
    print(f"levels named correctly: {figures['levels_named_correctly']}  (naming: {keypoints['naming']['method']}, "
          f"confident: {keypoints['naming']['confident']})")
    vb = figures["vbmd"]
    if "l1_l2_difference_mg_cm3" in vb:
        print(f"L1-L2 vBMD: model {vb['l1_l2_model_mg_cm3']:.1f}, reference labels {vb['l1_l2_reference_mg_cm3']:.1f}, "
              f"difference {vb['l1_l2_difference_mg_cm3']:+.1f} mg/cm3")
    else:
        print(f"vBMD difference: {vb.get('error', 'L1/L2 not measured on both')}")
    write_json(args.json, figures)
    return 0
