"""``hu``: no calibration; HU are reported, vBMD and category are None."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..settings import AnalysisOptions
from ..volume import Volume
from .registry import LINE_FROM_NONE, register_calibration
from .types import Calibration


@register_calibration("hu", title="hu (HU only, no vBMD)", help="HU only",
                      validation="no calibration: HU only, no vBMD and no category", line_from=LINE_FROM_NONE)
def hu_only(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: AnalysisOptions) -> Calibration:
    details: dict[str, Any] = {
        "note": "no calibration: trabecular HU only (vBMD and ACR category not given). HU cut-offs such as "
        "Pickhardt 2013 (L1 <= 110 HU specific, <= 160 HU sensitive for DXA osteoporosis) are scanner-dependent "
        "screening thresholds, not vBMD categories."
    }
    for key, name in (("muscle_roi", "muscle_hu"), ("fat_roi", "fat_hu")):
        if rois.get(key) is not None and rois[key].any():
            details[name] = float(ct.array[rois[key]].mean())
    return Calibration("hu", None, None, details)
