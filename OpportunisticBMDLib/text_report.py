"""Terminal text of an analysis' results (``obmd analyze`` and the commands that print results): the
per-level table, the summary, the calibration line, each hip and the status, from results.json's dict."""

from __future__ import annotations

import sys
from typing import TextIO

from .hip.pad_anchor import PAD_METHODS


def _fmt(value: object, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(results: dict, stream: TextIO | None = None) -> None:
    """The per-level table, the summary, the calibration, the hips, the QC flags and the status."""
    stream = stream or sys.stdout
    levels = results["spine"]["levels"]
    print(f"{'level':<6}{'HU mean':>9}{'HU median':>11}{'vBMD mg/cm3':>13}{'ROI mm3':>10}  notes", file=stream)
    used = results["spine"]["summary"].get("levels_used") or []
    for level, v in levels.items():
        notes = []
        if level in used:
            notes.append("summary")
        if v.get("cut_by_fov"):
            notes.append("cut by FOV")
        if v.get("exclusion_reasons"):
            notes.append("excluded: " + ", ".join(v["exclusion_reasons"]))
        print(f"{level:<6}{_fmt(v.get('trabecular_hu_mean')):>9}{_fmt(v.get('trabecular_hu_median')):>11}"
              f"{_fmt(v.get('vbmd_mg_cm3')):>13}{_fmt(v.get('roi_volume_mm3'), '.0f'):>10}  {', '.join(notes)}",
              file=stream)
    s = results["spine"]["summary"]
    category = s.get("category") or ("not measurable" if s.get("vbmd_mg_cm3") is None else "no category")
    sd = s.get("vbmd_calibration_sd_mg_cm3")
    vbmd = _fmt(s.get("vbmd_mg_cm3")) + (f" +-{sd:.1f} (calibration, 1 SD)" if sd is not None else "")
    print(f"summary: vBMD {vbmd} mg/cm3 ({category}); HU {_fmt(s.get('trabecular_hu_mean'))}"
          f" - {s.get('note', '')}", file=stream)
    c = results["calibration"]
    details = c.get("details") or {}
    line = f"calibration: {c['method']}"
    if details.get("selected_by") == "auto":
        line += f" (auto: {details.get('auto_reason')})"
    if c.get("slope") is not None:
        line += f"  vBMD = {c['intercept']:.2f} + {c['slope']:.4f} x HU"
    if c.get("muscle_hu") is not None:
        line += f"; muscle {c['muscle_hu']:.1f} HU"
        if c.get("muscle_density_mg_cm3") is not None:
            line += f" = {c['muscle_density_mg_cm3']:.1f} mg/cm3"
    if c.get("fat_hu") is not None:
        line += f"; fat {c['fat_hu']:.1f} HU"
        if c.get("fat_density_mg_cm3") is not None:
            line += f" = {c['fat_density_mg_cm3']:.1f} mg/cm3"
    if c["method"] in PAD_METHODS and details.get("rods"):
        rods = ", ".join(f"{r['nominal_mg_cm3']:g}: {r['hu']:.1f}" for r in details["rods"])
        line += (f"; pad base {details['base']['hu']:.1f} HU, rods (mg/cm3: HU) {rods}; "
                 f"R^2 {details['fit_r2']:.4f}")
    print(line, file=stream)
    for hip_line in hip_report_lines(results):
        print(hip_line, file=stream)
    for q in results.get("qc", []):
        print(f"qc {q['severity']}: [{q['code']}] {q['message']}", file=stream)
    print(status_line(results), file=stream)


def status_line(results: dict) -> str:
    """``status: complete`` or ``status: partial | not_measurable`` with its reasons (validity.py)."""
    reasons = results.get("status_reasons") or []
    return f"status: {results.get('status')}" + "".join(f"\n  - [{r['code']}] {r['message']}" for r in reasons)


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
