"""What a reported number stands on: one rule for every front end (CLI, results.json/CSV, Slicer, web).

A summary value and a category (ACR for the spine, WHO for the hip) come only from measurements that are
valid: a level named with confidence, whole in the field of view, its ROI above its minimum, plausible HU,
no fracture flag, no metal, and a valid calibration. Otherwise the category is ``null`` and the reasons
are given. :func:`finalize` derives all of that from a results dict and sets the analysis ``status``:

- ``complete``: the spine's L1-L2 category (and every hip in view) is backed;
- ``partial``: something is reported, but not all of it (a fallback pair, HU only, a hip withheld ...);
- ``not_measurable``: no backed summary value and no category at all (``obmd analyze`` exits 3).

``finalize`` is idempotent: Analyze, Recompute and the hip step all call it on the dict they hand out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import qc
from .calibration.registry import LINE_FROM_TISSUES, methods_with_line_from
from .results import ACR_SOURCE, PREFERRED_LEVELS, acr_category

STATUS_COMPLETE = "complete"
STATUS_PARTIAL = "partial"
STATUS_NOT_MEASURABLE = "not_measurable"

# Model naming flags (models/naming.py): the levels are not named with confidence, so no level of the
# model's label map backs a category (a misnamed L4 read as L1 is the worst silent error there is).
NAMING_UNCERTAIN_CODES = frozenset({"level_naming_uncertain", "level_naming_disagree", "level_naming_failed",
                                    "vertebra_missed", "vertebra_split", "vertebrae_from_spine_column",
                                    "no_vertebrae"})
# Lowest per-level model confidence that backs a value (models/confidence.py; design choices: naming 0.5
# keeps one confirmed anchor up to 5 vertebrae away and drops unconfirmed or disagreeing anchors;
# segmentation 0.7 = the network's mean top class probability over the level's voxels, ~0.85-0.93 on
# the shared CT's vertebrae). Below either: `level_confidence_low`.
CONFIDENCE_MINIMUMS = {"naming_confidence": 0.5, "segmentation_confidence": 0.7}
# Lines whose two points are the patient's own muscle and fat: an implausible tissue HU breaks the line.
TISSUE_LINE_METHODS = methods_with_line_from(LINE_FROM_TISSUES)
TISSUE_LINE_CODES = frozenset({"muscle_hu_unusable", "fat_hu_unusable"})
# Any line that reads the patient's own tissues far from what they are (qc.line_tissue_flags).
LINE_CODES = frozenset({"calibration_line_implausible"})
# Hip flags that withhold the side's WHO category (the numbers stay, for review): the femur or its axis is
# not all in view (ISCD: QCT hip acquisition must reach from the femoral head to the proximal shaft), the
# geometry is implausible, or the T-score itself is outside what a living adult's hip can read.
HIP_BLOCKING_CODES = frozenset({"hip_shaft_not_in_view", "hip_head_outside_fov", "hip_neck_shaft_angle_implausible",
                                "hip_femur_label_incomplete", "hip_lesser_trochanter_outside_fov",
                                "hip_total_hip_cut_fov", "hip_t_score_implausible", "hip_neck_cut_fov"})
# A neck or total hip T-score beyond these is not a bone that a living adult has: -5.5 SD is a neck of
# ~0.20 g/cm2 on the NHANES III young-adult scale (0.858 +- 0.120; severe osteoporosis reads ~0.45), +5 SD
# ~1.46 g/cm2 (design choice: outside both, the calibration or the segmentation is wrong, not the bone).
T_SCORE_PLAUSIBLE = (-5.5, 5.0)
# The two levels of a summary differ by little in one patient (QCT averages two levels for precision, not
# because they differ: both lie on one marrow); far apart, one ROI is not that marrow (cortex, a sclerotic
# focus, a misplaced label) and no mean of the two can be backed. Design choice: beyond 40 mg/cm3 (half the
# ACR osteopenia band) AND 30 % of their mean -- the user-trial case read L1 77 / L2 143 (truth 70 / 70).
LEVELS_DISAGREE_MG_CM3 = 40.0
LEVELS_DISAGREE_FRACTION = 0.3


def _reason(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def naming_confident(results: dict[str, Any]) -> bool:
    """False when the segmentation model flagged its level naming (only model label maps carry these)."""
    return not any(q.get("code") in NAMING_UNCERTAIN_CODES for q in results.get("qc") or [])


def level_invalid_reasons(entry: dict[str, Any], named_confidently: bool) -> list[str]:
    """QC codes that keep a level out of any summary and category (empty: the level is valid)."""
    reasons = set(entry.get("exclusion_reasons") or [])
    if not entry.get("voxel_count"):
        reasons.add("roi_empty")
    if entry.get("cut_by_fov"):
        reasons.add("level_cut_by_fov")
    if entry.get("vbmd_mg_cm3") is None and entry.get("trabecular_hu_mean") is None:
        reasons.add("roi_empty")
    if not named_confidently:
        reasons.add("level_naming_uncertain")
    if any(entry.get(key) is not None and entry[key] < low for key, low in CONFIDENCE_MINIMUMS.items()):
        reasons.add("level_confidence_low")
    return sorted(reasons)


def calibration_problems(results: dict[str, Any]) -> list[dict[str, str]]:
    """Why the density line cannot be trusted (empty when it can, or when there is no line)."""
    cal = results.get("calibration") or {}
    if cal.get("slope") is None:
        return []
    codes = LINE_CODES | (TISSUE_LINE_CODES if cal.get("method") in TISSUE_LINE_METHODS else frozenset())
    return [_reason(q["code"], f"calibration not valid: {q['message']}")
            for q in results.get("qc") or [] if q.get("code") in codes]


def spine_blockers(results: dict[str, Any]) -> list[dict[str, str]]:
    """Scan-level reasons that withhold the spine's summary vBMD and category."""
    blocking = [_reason(q["code"], q["message"]) for q in results.get("qc") or []
                if q.get("code") in qc.SUMMARY_BLOCKING_CODES]
    return calibration_problems(results) + blocking


def _mark_levels(results: dict[str, Any]) -> None:
    confident = naming_confident(results)
    for entry in (results.get("spine") or {}).get("levels", {}).values():
        reasons = level_invalid_reasons(entry, confident)
        entry["valid"] = not reasons
        entry["invalid_reasons"] = reasons


def _hip_side_blockers(block: dict[str, Any], calibration_bad: list[dict[str, str]]) -> list[dict[str, str]]:
    reasons = [_reason(q["code"], q["message"]) for q in block.get("qc") or [] if q.get("code") in HIP_BLOCKING_CODES]
    for region in ("neck", "total_hip"):
        t = (block.get(region) or {}).get("t_score")
        if t is not None and not T_SCORE_PLAUSIBLE[0] <= t <= T_SCORE_PLAUSIBLE[1]:
            reasons.append(_reason("hip_t_score_implausible",
                                   f"{region.replace('_', ' ')} T-score {t:+.1f} is outside "
                                   f"{T_SCORE_PLAUSIBLE[0]:+.1f}..{T_SCORE_PLAUSIBLE[1]:+.1f}: the calibration or the "
                                   "femur segmentation is wrong"))
    return reasons + calibration_bad


def _gate_hip(results: dict[str, Any]) -> None:
    """Withhold each side's WHO category that is not backed (numbers stay, flagged)."""
    calibration_bad = calibration_problems(results)
    for side, block in (results.get("hip") or {}).items():
        if not isinstance(block, dict):
            continue
        if block.get("excluded_reason"):
            block["category_withheld_reasons"] = [_reason("hip_excluded", f"{side} hip: {block['excluded_reason']}")]
            continue
        reasons = _hip_side_blockers(block, calibration_bad)
        block["category_withheld_reasons"] = reasons
        if reasons:
            block["category"] = None


def _hip_in_view(block: Any) -> bool:
    """A femur was there to measure (not merely absent from the field of view)."""
    return isinstance(block, dict) and block.get("excluded_reason") != "femur not in the field of view"


def _status(results: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    summary = results["spine"]["summary"]
    reasons: list[dict[str, str]] = []
    spine_value = summary.get("vbmd_mg_cm3") is not None or (
        summary.get("trabecular_hu_mean") is not None and (results.get("calibration") or {}).get("slope") is None)
    spine_category = summary.get("category") is not None
    if not spine_category:
        reasons.append(_reason("spine_not_measurable" if not spine_value else "spine_no_category",
                               summary.get("withheld_note") or summary.get("note") or "no spine category"))
    elif summary.get("levels_used") != ["L1", "L2"]:
        reasons.append(_reason("spine_fallback_levels", summary.get("note", "")))
    hips = {side: b for side, b in (results.get("hip") or {}).items() if _hip_in_view(b)}
    hip_categories = [side for side, b in hips.items() if b.get("category")]
    for side, block in hips.items():
        if not block.get("category"):
            why = "; ".join(r["message"].removeprefix(f"{side} hip: ").removeprefix(f"{side} hip excluded: ")
                            for r in block.get("category_withheld_reasons") or []) or "no T-score"
            reasons.append(_reason("hip_not_measurable", f"{side} hip: no WHO category: {why}"))
    if not spine_value and not hip_categories:
        return STATUS_NOT_MEASURABLE, reasons
    return (STATUS_COMPLETE if not reasons else STATUS_PARTIAL), reasons


def summarize(levels: dict[str, dict[str, Any]], calibrated: bool,
              calibration: dict[str, Any] | None = None,
              withheld: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """``spine.summary`` from the *valid* levels only (``levels.<L>.valid``, set by ``validity.finalize``):
    the mean of L1-L2 when both are valid, else of the two best valid levels (ISCD/ACR: another pair, e.g.
    T12/L3). One valid level gives its value but no category (ACR categories are for the mean of two
    vertebrae); none gives no value. ``withheld`` (scan-level reasons: calibration not valid, slices too
    thick, ...) keeps the vBMD and category out, said in ``withheld_note``. With a calibration that states
    its slope's relative SD (``details.slope_relative_sd``), also ``vbmd_calibration_sd_mg_cm3``: the
    slope's (the line pivots on its fat point) and the marrow's fat (``details.marrow_fat.mg_cm3_sd``) in
    quadrature."""
    used = [lvl for lvl in PREFERRED_LEVELS if lvl in levels and levels[lvl].get("valid")][:2]
    summary: dict[str, Any] = {"vbmd_mg_cm3": None, "trabecular_hu_mean": None, "levels_used": used,
                               "category": None, "category_system": ACR_SOURCE}
    if not used:
        invalid = {lvl: v.get("invalid_reasons") or [] for lvl, v in levels.items()}
        why = "; ".join(f"{lvl}: {', '.join(r)}" for lvl, r in invalid.items() if r)
        summary["note"] = ("not measurable: no valid vertebral level" + (f" ({why})" if why else
                                                                        " (no level T11-L5 measured)"))
        return summary
    summary["trabecular_hu_mean"] = float(np.mean([levels[lvl]["trabecular_hu_mean"] for lvl in used]))
    if used == ["L1", "L2"]:
        note = "mean of L1 and L2 (clinical QCT convention)"
    elif len(used) == 2:
        note = f"mean of {' and '.join(used)}: L1-L2 not both valid, the two best valid levels were used"
    else:
        note = (f"only {used[0]} is valid: its value is given, but no category (ACR categories are for the "
                "mean of two vertebrae)")
    withheld = list(withheld or []) + _levels_disagree(levels, used, calibrated)
    if withheld:
        summary["withheld_note"] = "vBMD and category withheld: " + "; ".join(r["message"] for r in withheld)
        summary["withheld_reasons"] = [r["code"] for r in withheld]
        summary["note"] = note + "; " + summary["withheld_note"]
        return summary
    if calibrated:
        summary["vbmd_mg_cm3"] = float(np.mean([levels[lvl]["vbmd_mg_cm3"] for lvl in used]))
        if len(used) == 2:
            summary["category"] = acr_category(summary["vbmd_mg_cm3"])
        details = (calibration or {}).get("details") or {}
        rel = details.get("slope_relative_sd")
        fat_d = (calibration or {}).get("fat_density_mg_cm3")
        if rel is not None and fat_d is not None:
            # the marrow's fat is additive (the whole marrow base reads off), in quadrature with the slope's
            marrow_sd = (details.get("marrow_fat") or {}).get("mg_cm3_sd") or 0.0
            summary["vbmd_calibration_sd_mg_cm3"] = float(np.hypot(rel * (summary["vbmd_mg_cm3"] - fat_d), marrow_sd))
    else:
        note += "; not calibrated: HU only, no vBMD category (HU thresholds are not ACR vBMD categories)"
    summary["note"] = note
    return summary


def _levels_disagree(levels: dict[str, dict[str, Any]], used: list[str], calibrated: bool) -> list[dict[str, str]]:
    """The summary pair's reason to be withheld when its two levels are too far apart to average."""
    if not calibrated or len(used) != 2:
        return []
    values = [levels[lvl].get("vbmd_mg_cm3") for lvl in used]
    if None in values:
        return []
    gap = abs(values[0] - values[1])
    if gap > LEVELS_DISAGREE_MG_CM3 and gap > LEVELS_DISAGREE_FRACTION * float(np.mean(values)):
        return [_reason("levels_disagree", f"{used[0]} {values[0]:.0f} and {used[1]} {values[1]:.0f} mg/cm3 differ by "
                        f"{gap:.0f} (> {LEVELS_DISAGREE_MG_CM3:.0f} and > {LEVELS_DISAGREE_FRACTION:.0%} of their "
                        "mean): one ROI is not trabecular bone; check both levels")]
    return []


def finalize(results: dict[str, Any]) -> dict[str, Any]:
    """Level validity, the backed summary, hip category gating and ``status``/``status_reasons``, in place."""
    _mark_levels(results)
    spine = results.setdefault("spine", {"levels": {}})
    calibrated = (results.get("calibration") or {}).get("slope") is not None
    spine["summary"] = summarize(spine.get("levels", {}), calibrated, results.get("calibration"),
                                 withheld=spine_blockers(results))
    _gate_hip(results)
    results["status"], results["status_reasons"] = _status(results)
    return results


def category_text(summary: dict[str, Any]) -> str:
    """What a front end shows in place of the spine's category: the category, or why there is none."""
    if summary.get("category"):
        return str(summary["category"])
    return "not measurable" if summary.get("vbmd_mg_cm3") is None else "no category"


def headline(results: dict[str, Any]) -> str:
    """One line for a status bar: the backed spine summary with its 1 SD and category, or "not measurable"
    with the first reason (the same words in Slicer, the web app and the terminal)."""
    summary = (results.get("spine") or {}).get("summary") or {}
    vbmd, sd = summary.get("vbmd_mg_cm3"), summary.get("vbmd_calibration_sd_mg_cm3")
    levels = "-".join(summary.get("levels_used") or [])
    if vbmd is not None:
        text = f"vBMD {vbmd:.1f}" + (f" ± {sd:.1f}" if sd is not None else "") + f" mg/cm³ ({levels}): "
        text += category_text(summary)
    else:
        text = "Spine: " + category_text(summary)
        reasons = results.get("status_reasons") or []
        if reasons:
            text += f" — {reasons[0]['message']}"
    return text + f" [status: {results.get('status', 'unknown')}]"
