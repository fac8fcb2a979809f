"""Which hip regions' numbers the quality checks call unreliable (results.json ``hip.<side>``), so that every
report marks them next to the number (report/pdf.py, dicom/sr.py). Nothing is decided here that the QC
did not say, and results.json keeps the numbers (they stay, for review)."""

from __future__ import annotations

from typing import Any

REGIONS = ("neck", "trochanter", "intertrochanter", "total_hip")
# hip/analysis.py flags about one region's box (the other regions' field-of-view flags null their numbers)
REGION_CODES = {"hip_neck_cut_fov": ("neck",)}
# flags about the side's geometry (axis, head, labels): every region's box stands on it
SIDE_CODES = frozenset({"hip_shaft_not_in_view", "hip_head_outside_fov", "hip_neck_shaft_angle_implausible",
                        "hip_femur_label_incomplete"})
# validity.py: "<region> T-score ... is outside ...": a T-score no living adult's hip reads
T_SCORE_CODE = "hip_t_score_implausible"


def _without_side(message: str, side: str) -> str:
    prefix = f"{side} hip: "
    return message[len(prefix):] if message.startswith(prefix) else message


def unreliable_regions(side: str, block: dict[str, Any]) -> dict[str, list[str]]:
    """Region -> the QC's reasons (without the ``<side> hip:`` prefix) for each reported region of ``block``
    whose value a QC flag calls unreliable; regions without a number are left out."""
    flags = [q for q in (block.get("qc") or []) + (block.get("category_withheld_reasons") or [])
             if isinstance(q, dict)]
    out: dict[str, list[str]] = {}

    def add(region: str, message: str) -> None:
        if isinstance(block.get(region), dict):
            reasons = out.setdefault(region, [])
            text = _without_side(str(message), side)
            if text not in reasons:
                reasons.append(text)

    for q in flags:
        code, message = q.get("code"), q.get("message", "")
        for region in REGION_CODES.get(code, ()):
            add(region, message)
        if code in SIDE_CODES:
            for region in REGIONS:
                add(region, message)
        if code == T_SCORE_CODE:
            for region in REGIONS:
                if f"{region.replace('_', ' ')} T-score" in str(message):
                    add(region, message)
    return out
