"""``results.json`` content as the rows the browser shows: formatted text plus the raw numbers.

Pure Python (no trame, no MRML) so it is tested on its own. Missing keys show as "–" rather than
failing: partial results (e.g. no hip, a level excluded by QC) are normal.
"""

from __future__ import annotations

import math
from typing import Any

from ..validity import category_text

DASH = "–"

# ACR–SPR–SSR Practice Parameter for the Performance of Quantitative CT Bone Densitometry (2018):
# spine trabecular vBMD > 120 mg/cm3 normal, 80–120 osteopenia, < 80 osteoporosis.
ACR_NOTE = "ACR 2018 (QCT, spine): > 120 mg/cm³ normal · 80–120 low bone mass · < 80 osteoporosis"

# (label shown, key in results["calibration"], unit, decimals)
CALIBRATION_ROWS = [
    ("Method", "method", "", None),
    ("Slope", "slope", "mg/cm³ per HU", 4),
    ("Intercept", "intercept", "mg/cm³", 1),
    ("Muscle ROI mean", "muscle_hu", "HU", 1),
    ("Fat ROI mean", "fat_hu", "HU", 1),
    ("Muscle reference (HA-equivalent)", "muscle_density_mg_cm3", "mg/cm³", 1),
    ("Fat reference (HA-equivalent)", "fat_density_mg_cm3", "mg/cm³", 1),
]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt(value: Any, decimals: int | None = 1, unit: str = "") -> str:
    """A number with fixed decimals (and unit), text as is, missing as a dash."""
    if decimals is None or isinstance(value, str):
        return DASH if value in (None, "") else str(value)
    number = _number(value)
    if number is None:
        return DASH
    text = f"{number:.{decimals}f}"
    return f"{text} {unit}" if unit else text


def level_rows(results: dict) -> list[dict[str, Any]]:
    """One row per vertebral level, in the order of results.json (cranial to caudal)."""
    levels = (results.get("spine") or {}).get("levels") or {}
    used = set((results.get("spine") or {}).get("summary", {}).get("levels_used") or [])
    rows = []
    for level, values in levels.items():
        volume_mm3 = _number(values.get("roi_volume_mm3"))
        reasons = values.get("invalid_reasons") or values.get("exclusion_reasons") or []
        rows.append(
            {
                "level": level,
                "used": level in used,
                "valid": values.get("valid") is not False,  # absent: results older than the validity flag
                "reasons": ", ".join(str(r) for r in reasons),
                "vbmd_mg_cm3": _number(values.get("vbmd_mg_cm3")),
                "hu_mean": _number(values.get("trabecular_hu_mean")),
                "vbmd": fmt(values.get("vbmd_mg_cm3"), 1),
                "hu": fmt(values.get("trabecular_hu_mean"), 1),
                "hu_sd": fmt(values.get("trabecular_hu_sd"), 1),
                "volume_cm3": fmt(None if volume_mm3 is None else volume_mm3 / 1000.0, 2),
                "voxels": fmt(values.get("voxel_count"), 0),
            }
        )
    return rows


# Words for the results' top-level ``status`` (docs/results-contract.md); unknown words are shown as they are.
STATUS_TITLES = {"complete": "complete", "partial": "partial: some parts could not be measured",
                 "not_measurable": "not measurable"}


def status_view(results: dict) -> dict[str, Any]:
    """The scan's ``status`` and ``status_reasons`` ([{code, message}]); both may be absent (older results)."""
    status = results.get("status")
    reasons = []
    for item in results.get("status_reasons") or []:
        if isinstance(item, dict):
            code = str(item.get("code") or "")
            reasons.append({"code": code, "message": str(item.get("message") or code)})
        elif item:
            reasons.append({"code": "", "message": str(item)})
    return {"status": None if status in (None, "") else str(status),
            "title": STATUS_TITLES.get(str(status), str(status)) if status else "", "reasons": reasons}


def summary_view(results: dict) -> dict[str, Any]:
    """The spine summary. A category is shown only when the results give one (``spine.summary.category``
    non-null: backed by valid levels); otherwise "not measurable" with the reasons the results give."""
    summary = (results.get("spine") or {}).get("summary") or {}
    used = summary.get("levels_used") or []
    category = summary.get("category")
    measurable = category not in (None, "")
    sd = _number(summary.get("vbmd_calibration_sd_mg_cm3"))
    method = (results.get("calibration") or {}).get("method")
    if sd is not None:
        sd_text = f"± {sd:.1f} mg/cm³ (calibration, 1 SD)"
    elif _number(summary.get("vbmd_mg_cm3")) is not None:
        sd_text = f"no ± stated by the {method} calibration" if method else "no ± stated"
    else:
        sd_text = ""
    return {
        "vbmd_mg_cm3": _number(summary.get("vbmd_mg_cm3")),
        "vbmd": fmt(summary.get("vbmd_mg_cm3"), 1, "mg/cm³"),
        "sd_mg_cm3": sd,
        "sd": sd_text,
        "levels": "–".join([used[0], used[-1]]) if len(used) > 1 else (used[0] if used else DASH),
        "category": category_text(summary),  # the same words as the CLI and Slicer
        "category_known": measurable,
        "category_reasons": [] if measurable else _no_category_reasons(results, summary),
        "note": ACR_NOTE,
    }


def _no_category_reasons(results: dict, summary: dict) -> list[str]:
    """Why the summary has no category: the results' own reasons, else what can be read off them."""
    reasons = [r["message"] for r in status_view(results)["reasons"]]
    if reasons:
        return reasons
    if (results.get("calibration") or {}).get("method") == "hu":
        return ["HU-only calibration: no vBMD, so no category"]
    if _number(summary.get("vbmd_mg_cm3")) is None:
        return ["no vertebral level could be measured"]
    return ["the results give no category for these levels"]


def calibration_rows(results: dict) -> list[dict[str, Any]]:
    calibration = results.get("calibration") or {}
    rows = []
    for label, key, unit, decimals in CALIBRATION_ROWS:
        if key not in calibration:
            continue
        rows.append(
            {"label": label, "key": key, "value": fmt(calibration[key], decimals, unit), "raw": calibration[key]}
        )
    details = calibration.get("details") or {}
    kvp = _number(calibration.get("kvp", details.get("kvp")))
    if kvp is not None:  # from the CT's header, or assumed (QC flag kvp_assumed)
        source = calibration.get("kvp_source", details.get("kvp_source"))
        rows.append({"label": "Tube voltage", "key": "kvp", "raw": kvp,
                     "value": f"{kvp:g} kV" + (f" ({source})" if source else "")})
    options = results.get("options") or {}
    age, sex = _number(options.get("patient_age")), options.get("patient_sex")
    rows.append({"label": "Patient age, sex (header or given)", "key": "patient",
                 "raw": f"{'' if age is None else f'{age:g}'} {sex or ''}".strip(),
                 "value": f"{DASH if age is None else f'{age:g} y'}, {sex or DASH}"})
    marrow = details.get("marrow_fat") or {}
    if _number(marrow.get("base_fraction")) is not None:  # the compositions assumed (or given): what +- holds
        sd = _number(marrow.get("sd_fraction")) or 0.0
        rows.append({"label": "Marrow fat (HA base)", "key": "marrow_fat_fraction", "raw": marrow["base_fraction"],
                     "value": f"{100 * marrow['base_fraction']:.0f} % ({marrow.get('source', '')}"
                              + (f", ±{100 * sd:.0f} %" if sd else "") + ")"})
    if _number(details.get("psoas_fat_fraction")) is not None:
        rows.append({"label": "Psoas fat", "key": "psoas_fat_fraction", "raw": details["psoas_fat_fraction"],
                     "value": f"{100 * details['psoas_fat_fraction']:.1f} %"})
    return rows


def qc_rows(results: dict) -> list[dict[str, str]]:
    rows = []
    for item in results.get("qc") or []:
        if isinstance(item, dict):
            rows.append(
                {
                    "severity": str(item.get("severity", "info")),
                    "code": str(item.get("code", "")),
                    "message": str(item.get("message", "")),
                }
            )
        else:
            rows.append({"severity": "info", "code": "", "message": str(item)})
    return rows


def hip_rows(results: dict) -> list[dict[str, Any]]:
    """Hip aBMD per side and region (CTXA-like projection), when the hip analysis ran."""
    hip = results.get("hip") or {}
    rows = []
    for side in ("left", "right"):
        regions = hip.get(side)
        if not isinstance(regions, dict):
            continue
        for region, values in regions.items():
            if not isinstance(values, dict) or "abmd_g_cm2" not in values:
                continue
            rows.append(
                {
                    "side": side,
                    "region": region.replace("_", " "),
                    "abmd": fmt(values.get("abmd_g_cm2"), 3),
                    "t_score": fmt(values.get("t_score"), 1) + (
                        f" ± {values['t_score_calibration_sd']:.1f}"
                        if values.get("t_score_calibration_sd") is not None else ""),
                    "area": fmt(values.get("area_cm2"), 1),
                }
            )
    return rows


def results_view(results: dict | None) -> dict[str, Any]:
    """Everything the results panel shows, JSON-serialisable (it goes into the trame state)."""
    results = results or {}
    return {
        "levels": level_rows(results),
        "summary": summary_view(results),
        "status": status_view(results),
        "calibration": calibration_rows(results),
        "qc": qc_rows(results),
        "hip": hip_rows(results),
    }
