"""``auto``: the in-scan calibration pad's line when a pad is found in the CT and fits, else ``muscle-fat``."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..settings import AnalysisOptions
from ..volume import Volume
from .inscan import find_pad, inscan_calibration, pad_densities
from .muscle_fat import muscle_fat_calibration
from .registry import LINE_FROM_CHOICE, register_calibration
from .types import Calibration


@register_calibration(
    "auto", title="auto (in-scan pad if found, else muscle-fat)",
    help="default: the in-scan calibration pad when one is found in the CT, else muscle-fat",
    validation="the pad's line when a pad is found in the CT, else muscle-fat (see each)",
    check=lambda options: pad_densities(options.calibration_settings), line_from=LINE_FROM_CHOICE)
def auto_calibration(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                     options: AnalysisOptions) -> Calibration:
    """The in-scan pad when one is found and fits, else ``muscle-fat``; ``details.selected_by`` says so."""
    detection = find_pad(ct)
    reason = "no calibration pad found in the CT"
    if detection is not None:
        try:
            cal = inscan_calibration(ct, options, detection)
            cal.details["selected_by"] = "auto"
            cal.details["auto_reason"] = f"calibration pad found ({len(detection.rods)} rods)"
            return cal
        except InputError as exc:
            reason = f"calibration pad found but not used: {exc}"
    cal = muscle_fat_calibration(ct, rois, labels, options)
    cal.details["selected_by"] = "auto"
    cal.details["auto_reason"] = reason
    return cal
