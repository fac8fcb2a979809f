"""Words the reports share (report.pdf, its pictures, the DICOM SR): the muscle the calibration measured and
a list of reasons as one sentence list. A leaf module (imports nothing of the package)."""

from __future__ import annotations

from typing import Any

# rois.muscle_source -> the words the report uses for the muscle reference ROI actually measured
MUSCLE_NAMES = {"psoas": "psoas", "paraspinal": "paraspinal muscle", "other": "muscle"}


def muscle_name(results: dict[str, Any]) -> str:
    """The muscle whose ROI calibrated the scan (results.json ``calibration.muscle_roi_source``: paraspinal
    muscle replaces a psoas too small or missing); "muscle" when not recorded."""
    source = (results.get("calibration") or {}).get("muscle_roi_source")
    return MUSCLE_NAMES.get(str(source), "muscle")


def join_reasons(messages: list[str], prefix: str = "") -> str:
    """Reasons as one sentence list: each without ``prefix`` (the side, said once by the heading) and its
    full stop, joined by "; ", duplicates dropped, one full stop at the end ('' when none)."""
    parts = []
    for message in messages:
        text = message[len(prefix):] if prefix and message.startswith(prefix) else message
        text = text.strip().rstrip(".").strip()
        if text and text not in parts:
            parts.append(text)
    return "; ".join(parts) + "." if parts else ""
