"""The hip step of :func:`OpportunisticBMDLib.pipeline.analyze` (called when a femur is labelled)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import validity
from ..calibration import Calibration
from ..io import age_years
from ..labels import LABELS
from ..volume import Volume
from .analysis import FEMUR_LABELS, HipOptions, _empty_side, analyze_hips
from .local_calibration import reference_tissue_hu
from .pad_anchor import PAD_METHODS, hip_relative_sd, pad_muscle_reference
from .tscores import load_age_reference


def femur_in_view(labels: Volume | None) -> bool:
    return labels is not None and bool(np.isin(labels.array, (LABELS["femur_left"], LABELS["femur_right"])).any())


def add_hip_results(result: Any, ct: Volume, labels: Volume, options: Any) -> None:
    """Fill ``result.results["hip"]``, append the hip QC flags to ``result.results["qc"]``, add the hip
    ROI masks to ``result.rois`` and the pictures (``hip_<side>``) to ``result.pictures``. The density
    calibration is the spine's (same line, recorded in ``results["calibration"]``)."""
    cal = result.results.get("calibration") or {}
    if cal.get("slope") is None or cal.get("intercept") is None:
        reason = "no density calibration (HU only): areal BMD needs mg/cm3; choose a calibration method"
        result.results["hip"] = {side: _empty_side(reason) for side, lab in FEMUR_LABELS.items()
                                 if (labels.array == lab).any()}
        validity.finalize(result.results)
        return
    details = cal.get("details") or {}
    method = cal.get("method", "unknown")
    slope, intercept = float(cal["slope"]), float(cal["intercept"])
    relative_sd = details.get("slope_relative_sd")
    age = age_years(getattr(options, "patient_age", None) or ct.metadata.get("patient_age"))
    params = getattr(options, "calibration_params", None) or {}
    marrow = details.get("marrow_fat")  # the line's marrow base and its fat error (calibration_internal)
    marrow_hu_sd = marrow["hu_sd"] if marrow else 0.0
    if method in PAD_METHODS:
        # the pad's line holds at the pad, outside the body: the hip's muscle is checked against a typical
        # iliopsoas under that line (pad_anchor), not against the psoas ROI (itself offset by the body)
        reference = pad_muscle_reference(details, slope, intercept, age, params.get("psoas_fat_fraction"))
        relative_sd = hip_relative_sd(relative_sd, reference["muscle_hu_sd"], marrow_hu_sd)
    else:
        # the calibration site's reference tissues (spine ROIs): the hip checks its own muscle against them
        reference = reference_tissue_hu(ct.array, result.rois)
        if relative_sd is not None:  # None: the line states no uncertainty (user densities): none added
            relative_sd = hip_relative_sd(relative_sd, marrow_hu_sd)
    calibration = Calibration(method, slope, intercept, {"slope_relative_sd": relative_sd,
                                                         "marrow_fat": marrow})
    hip_opts = HipOptions()
    z_path = getattr(options, "z_reference", None)
    if z_path:
        hip_opts.z_reference = load_age_reference(z_path)
    hip, rois, pictures = analyze_hips(ct, labels, calibration, options, hip_opts, reference_hu=reference)
    result.results["hip"] = hip
    for side in ("left", "right"):
        result.results.setdefault("qc", []).extend(hip.get(side, {}).get("qc") or [])
    validity.finalize(result.results)  # WHO categories only where backed; the status counts the hip
    result.rois.update(rois)
    result.pictures.update({f"hip_{side}": pic for side, pic in pictures.items()})


def hip_report_lines(results: dict) -> list[str]:
    """Terminal lines for ``obmd analyze``: neck and total hip aBMD, T-score and category per side."""
    lines = []
    for side, block in (results.get("hip") or {}).items():
        if not isinstance(block, dict):
            continue
        if block.get("excluded_reason"):
            lines.append(f"hip {side}: excluded - {block['excluded_reason']}")
            continue
        parts = []
        for region, title in (("neck", "neck"), ("total_hip", "total hip")):
            r = block.get(region)
            if isinstance(r, dict) and r.get("abmd_g_cm2") is not None:
                t = r.get("t_score")
                z = r.get("z_score")
                t_sd = r.get("t_score_calibration_sd")
                scores = ", ".join(f"{k} {v:+.1f}" + (f" +-{t_sd:.1f}" if k == "T" and t_sd is not None else "")
                                   for k, v in (("T", t), ("Z", z)) if v is not None)
                parts.append(f"{title} {r['abmd_g_cm2']:.3f} g/cm2" + (f" ({scores})" if scores else ""))
            else:
                parts.append(f"{title} not measured")
        shift = (block.get("calibration") or {}).get("hu_shift_applied") or 0.0
        where = f" [hip calibration: line shifted {shift:+.1f} HU]" if shift else ""
        lines.append(f"hip {side}: " + "; ".join(parts) + f"  -> {block.get('category') or 'no category'}{where}")
    footnote = _sd_footnote(results)
    if footnote:
        lines.append(footnote)
    return lines


def _sd_footnote(results: dict) -> str | None:
    """What the printed +- holds: the line's own error and the compositions assumed (or given)."""
    blocks = [b for b in (results.get("hip") or {}).values()
              if isinstance(b, dict) and (b.get("neck") or {}).get("t_score_calibration_sd") is not None]
    if not blocks:
        return None
    cal = blocks[0].get("calibration") or {}
    pad = cal.get("method") in PAD_METHODS
    terms = ["the in-scan pad line" if pad else "the phantomless line (the patient's psoas fat is not known)"]
    anchor = cal.get("pad_anchor")
    if anchor:
        terms.append("the hip's offset anchor (" + (
            "the given psoas fat: its error is not included" if anchor.get("psoas_fat_source") == "user"
            else "a typical iliopsoas: the patient's own muscle fat is not known; --psoas-fat sets it") + ")")
    marrow = cal.get("marrow_fat")
    if marrow:
        given = not marrow["sd_fraction"]
        terms.append("the marrow's fat (" + ("the given fraction: its error is not included" if given
                                             else f"{marrow['base_fraction']:.0%} assumed, "
                                             f"{'age unknown' if 'unknown' in marrow['source'] else 'age-typical'}; "
                                             "--marrow-fat sets it") + ")")
    return "hip: +- is 1 SD from " + ", ".join(terms)
