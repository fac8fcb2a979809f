"""The one validity rule (validity.finalize): a summary and a category only from valid measurements."""

from __future__ import annotations

import copy

from OpportunisticBMDLib import validity
from OpportunisticBMDLib.results import csv_row


def _level(vbmd: float, hu: float, **extra) -> dict:
    entry = {"vbmd_mg_cm3": vbmd, "trabecular_hu_mean": hu, "voxel_count": 2000, "roi_volume_mm3": 5000.0,
             "cut_by_fov": False, "excluded": False, "exclusion_reasons": []}
    entry.update(extra)
    return entry


def _results(levels: dict, qc: list | None = None, hip: dict | None = None, method: str = "muscle-fat") -> dict:
    out = {"spine": {"levels": levels, "summary": {}},
           "calibration": {"method": method, "slope": None if method == "hu" else 0.7,
                           "intercept": None if method == "hu" else 10.0, "fat_density_mg_cm3": -60.0,
                           "details": {"slope_relative_sd": 0.03}},
           "qc": qc or []}
    if hip is not None:
        out["hip"] = hip
    return out


def test_l1_l2_valid_is_complete_with_category() -> None:
    r = validity.finalize(_results({"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0)}))
    s = r["spine"]["summary"]
    assert s["levels_used"] == ["L1", "L2"] and s["vbmd_mg_cm3"] == 105.0 and s["category"] == "osteopenia"
    assert r["status"] == "complete" and r["status_reasons"] == []
    assert s["vbmd_calibration_sd_mg_cm3"] > 0


def test_fallback_pair_only_from_valid_levels() -> None:
    levels = {"T12": _level(90.0, 110.0), "L1": _level(170.0, 200.0, exclusion_reasons=["roi_too_small"]),
              "L2": _level(50.0, 60.0, cut_by_fov=True), "L3": _level(100.0, 120.0)}
    r = validity.finalize(_results(levels))
    s = r["spine"]["summary"]
    assert s["levels_used"] == ["L3", "T12"]  # ISCD: another pair of valid levels
    assert s["vbmd_mg_cm3"] == 95.0 and s["category"] == "osteopenia"
    assert r["status"] == "partial" and r["status_reasons"][0]["code"] == "spine_fallback_levels"
    assert r["spine"]["levels"]["L1"]["invalid_reasons"] == ["roi_too_small"]
    assert r["spine"]["levels"]["L2"]["invalid_reasons"] == ["level_cut_by_fov"]


def test_single_valid_level_gives_a_value_but_no_category() -> None:
    r = validity.finalize(_results({"L1": _level(150.0, 180.0), "L2": _level(30.0, 40.0, cut_by_fov=True)}))
    s = r["spine"]["summary"]
    assert s["vbmd_mg_cm3"] == 150.0 and s["category"] is None
    assert r["status"] == "partial"


def test_no_valid_level_is_not_measurable_and_names_why() -> None:
    levels = {"L5": _level(170.6, 200.0, exclusion_reasons=["roi_too_small"], cut_by_fov=True)}
    r = validity.finalize(_results(levels))
    s = r["spine"]["summary"]
    assert s["vbmd_mg_cm3"] is None and s["category"] is None and s["levels_used"] == []
    assert "roi_too_small" in s["note"] and "level_cut_by_fov" in s["note"]
    assert r["status"] == "not_measurable"
    row = csv_row(r)
    assert row["status"] == "not_measurable" and row["summary_category"] is None


def test_model_naming_flag_makes_every_level_invalid() -> None:
    qc = [{"code": "level_naming_uncertain", "severity": "warning", "message": "named from the ribs only"}]
    r = validity.finalize(_results({"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0)}, qc))
    assert r["spine"]["summary"]["category"] is None
    assert all(v["invalid_reasons"] == ["level_naming_uncertain"] for v in r["spine"]["levels"].values())
    assert r["status"] == "not_measurable"


def test_implausible_tissue_withholds_a_muscle_fat_line_but_not_a_phantom_line() -> None:
    qc = [{"code": "fat_hu_unusable", "severity": "error", "message": "fat ROI mean -20 HU"}]
    levels = {"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0)}
    r = validity.finalize(_results(copy.deepcopy(levels), qc))
    s = r["spine"]["summary"]
    assert s["vbmd_mg_cm3"] is None and s["category"] is None
    assert s["withheld_reasons"] == ["fat_hu_unusable"] and s["trabecular_hu_mean"] == 125.0
    r = validity.finalize(_results(copy.deepcopy(levels), qc, method="phantom"))
    assert r["spine"]["summary"]["category"] == "osteopenia"


def test_hu_only_is_partial_without_category() -> None:
    r = validity.finalize(_results({"L1": _level(None, 120.0), "L2": _level(None, 130.0)}, method="hu"))
    assert r["spine"]["summary"]["trabecular_hu_mean"] == 125.0 and r["spine"]["summary"]["category"] is None
    assert r["status"] == "partial"


def _hip_side(t_neck: float, t_total: float, qc_codes: tuple[str, ...] = ()) -> dict:
    return {"neck": {"abmd_g_cm2": 0.6, "t_score": t_neck}, "total_hip": {"abmd_g_cm2": 0.7, "t_score": t_total},
            "category": "osteoporosis" if min(t_neck, t_total) <= -2.5 else "normal", "excluded_reason": None,
            "qc": [{"code": c, "severity": "warning", "message": f"left hip: {c}"} for c in qc_codes]}


def test_hip_category_withheld_when_not_backed() -> None:
    levels = {"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0)}
    hip = {"left": _hip_side(-4.6, -3.0, ("hip_femur_cut_fov", "hip_shaft_not_in_view")),
           "right": _hip_side(19.0, 15.0)}
    r = validity.finalize(_results(levels, hip=hip))
    assert r["hip"]["left"]["category"] is None and r["hip"]["right"]["category"] is None
    assert [x["code"] for x in r["hip"]["left"]["category_withheld_reasons"]] == ["hip_shaft_not_in_view"]
    assert r["hip"]["right"]["category_withheld_reasons"][0]["code"] == "hip_t_score_implausible"
    assert r["hip"]["left"]["neck"]["t_score"] == -4.6  # the number stays for review
    assert r["status"] == "partial" and {x["code"] for x in r["status_reasons"]} == {"hip_not_measurable"}


def test_hip_backed_and_spine_complete() -> None:
    levels = {"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0)}
    hip = {"left": _hip_side(-2.7, -2.0), "right": {"excluded_reason": "femur not in the field of view",
                                                     "category": None}}
    r = validity.finalize(_results(levels, hip=hip))
    assert r["hip"]["left"]["category"] == "osteoporosis"
    assert r["status"] == "complete"


def test_finalize_is_idempotent() -> None:
    levels = {"L1": _level(100.0, 120.0), "L2": _level(110.0, 130.0, exclusion_reasons=["height_loss"]),
              "L3": _level(90.0, 110.0)}
    once = validity.finalize(_results(levels, hip={"left": _hip_side(-1.0, -0.5, ("hip_head_outside_fov",))}))
    twice = validity.finalize(copy.deepcopy(once))
    assert once == twice


def test_headline_says_not_measurable_and_why() -> None:
    r = validity.finalize(_results({"L5": _level(170.6, 200.0, exclusion_reasons=["roi_too_small"])}))
    text = validity.headline(r)
    assert text.startswith("Spine: not measurable") and "roi_too_small" in text and "not_measurable" in text


def test_model_labels_are_never_read_as_totalsegmentator_ids() -> None:
    """A model map with no named vertebra but both psoas (our ids 30-33 are TotalSegmentator's T11-L2):
    its psoas must stay psoas, not become vertebrae that get measured."""
    import numpy as np

    from OpportunisticBMDLib.labels import LABELS
    from OpportunisticBMDLib.pipeline import MODEL_LABELS_SOURCE, prepare_labels
    from OpportunisticBMDLib.volume import Volume

    array = np.zeros((6, 6, 6), np.int16)
    array[1:3, 1:3, 1:3] = LABELS["psoas_left"]
    array[3:5, 3:5, 3:5] = LABELS["psoas_right"]
    ct = Volume(np.zeros(array.shape, np.float32), (3.0, 3.0, 3.0))
    given = prepare_labels(ct.like(array.copy()), ct)  # a file of unknown origin: read as TotalSegmentator
    assert given.metadata["source_schema"] == "totalsegmentator-total"
    model = prepare_labels(ct.like(array.copy(), source="model", source_schema=MODEL_LABELS_SOURCE), ct)
    assert np.array_equal(model.array, array)


def test_levels_too_far_apart_back_no_mean_and_no_category() -> None:
    """L1 77 / L2 143 (the user-trial model case; truth 70 / 70): no mean of the two can be backed."""
    r = validity.finalize(_results({"L1": _level(77.0, 66.0), "L2": _level(143.0, 149.0)}))
    s = r["spine"]["summary"]
    assert s["vbmd_mg_cm3"] is None and s["category"] is None and s["withheld_reasons"] == ["levels_disagree"]
    assert r["status"] == "not_measurable"
    close = validity.finalize(_results({"L1": _level(100.0, 120.0), "L2": _level(135.0, 160.0)}))  # 35 apart
    assert close["spine"]["summary"]["category"] == "osteopenia"


def test_a_skewed_roi_leaves_the_summary() -> None:
    """Mean far above the median: cortex in the ROI (qc.level_flags), the level is not valid."""
    from OpportunisticBMDLib import qc

    skewed = {"trabecular_hu_mean": 148.6, "trabecular_hu_median": 79.5, "trabecular_hu_sd": 142.4,
              "voxel_count": 72, "roi_volume_mm3": 1944.0}
    assert "roi_skewed" in {f["code"] for f in qc.level_flags("L2", skewed)}
    noisy = {"trabecular_hu_mean": 122.5, "trabecular_hu_median": 108.0, "trabecular_hu_sd": 77.6,  # real CT L1
             "voxel_count": 848, "roi_volume_mm3": 22896.0}
    assert "roi_skewed" not in {f["code"] for f in qc.level_flags("L1", noisy)}
    assert "roi_skewed" in qc.EXCLUDING_CODES
