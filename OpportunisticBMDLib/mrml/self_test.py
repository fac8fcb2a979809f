"""What the Slicer module's self-test does, runnable headless (``Testing/mrml/test_mrml_logic.py``): a digital
patient is analysed, half of the muscle ROI is erased as a user would, and Recompute must give what the
muscle-fat line through the voxels left gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from .digital_patient import load_digital_patient
from .edits import is_edited
from .logic import BMDLogic
from .segments import edit_segment_voxels
from .tables import table_rows


def run_self_test(seed: int = 1, region: str = "spine") -> dict[str, Any]:
    """What the module's self-test does, runnable headless: a digital patient is analysed, half of
    the muscle ROI is erased as a user would, Recompute must change the muscle HU to the mean of the
    voxels left and every level's vBMD to what the muscle-fat line through them gives."""
    volume_node, seg_node = load_digital_patient(seed=seed, region=region)
    logic = BMDLogic()
    outputs = logic.analyze(volume_node, seg_node)
    ct = outputs.ct
    rows = table_rows(outputs.table_node)
    if not any(np.isfinite(r["vBMD"]) for r in rows):
        raise AssertionError("no finite vBMD in the results table")
    muscle = outputs.result.rois["muscle_roi"]
    kept = muscle.copy()
    kept[: int(np.median(np.nonzero(muscle)[0]))] = False  # erase the inferior half
    edit_segment_voxels(outputs.roi_segmentation_node, "muscle_roi", kept, ct, volume_node)
    recomputed = logic.recompute(volume_node, outputs.roi_segmentation_node, seg_node,
                                 table_node=outputs.table_node)
    if not is_edited(outputs.roi_segmentation_node, "muscle_roi"):
        raise AssertionError("the erased muscle ROI is not tagged edited")
    cal = recomputed.result.results["calibration"]
    muscle_hu = float(ct.array[kept].mean())
    if abs(cal["muscle_hu"] - muscle_hu) > 1e-3:
        raise AssertionError(f"muscle HU {cal['muscle_hu']} != {muscle_hu} (mean of the voxels left)")
    before = outputs.result.results
    if cal["method"] == "muscle-fat":
        m_d, f_d, f_hu = cal["muscle_density_mg_cm3"], cal["fat_density_mg_cm3"], cal["fat_hu"]
        for level, values in recomputed.result.results["spine"]["levels"].items():
            hu = before["spine"]["levels"][level]["trabecular_hu_mean"]
            expected = m_d + (hu - muscle_hu) * (m_d - f_d) / (muscle_hu - f_hu)
            if abs(values["vbmd_mg_cm3"] - expected) > 1e-3:
                raise AssertionError(f"{level}: vBMD {values['vbmd_mg_cm3']} != {expected} by the formula")
    return {
        "levels": [r["Level"] for r in rows],
        "muscle_hu_before": before["calibration"]["muscle_hu"],
        "muscle_hu_after": cal["muscle_hu"],
        "summary_vbmd_before": before["spine"]["summary"]["vbmd_mg_cm3"],
        "summary_vbmd_after": recomputed.result.results["spine"]["summary"]["vbmd_mg_cm3"],
    }
