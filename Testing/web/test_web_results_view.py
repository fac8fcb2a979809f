"""The results panel's rows from results.json (no browser): values, order, missing parts."""

from __future__ import annotations

import pytest

from OpportunisticBMDLib.web.results_view import DASH, fmt, results_view

RESULTS = {
    "spine": {
        "levels": {
            "T12": {"vbmd_mg_cm3": 131.04, "trabecular_hu_mean": 140.2, "trabecular_hu_sd": 20.0,
                    "roi_volume_mm3": 5430.0, "voxel_count": 201},
            "L1": {"vbmd_mg_cm3": 107.55, "trabecular_hu_mean": 108.9, "trabecular_hu_sd": 26.4,
                   "roi_volume_mm3": 7560.0, "voxel_count": 280},
        },
        "summary": {"vbmd_mg_cm3": 107.55, "levels_used": ["L1"], "category": "osteopenia"},
    },
    "calibration": {"method": "muscle-fat", "slope": 0.84712, "intercept": 15.4, "muscle_hu": 19.6, "fat_hu": -105.7},
    "qc": [{"code": "MUSCLE_HU", "severity": "warning", "message": "muscle ROI mean 15 HU is outside 20..80 HU"}],
    "hip": {"left": {"neck": {"abmd_g_cm2": 0.7581, "t_score": -0.84, "area_cm2": 5.7}}, "right": None},
}


def test_levels_keep_order_values_and_inclusion() -> None:
    view = results_view(RESULTS)
    assert [r["level"] for r in view["levels"]] == ["T12", "L1"]
    t12, l1 = view["levels"]
    assert (t12["used"], l1["used"]) == (False, True)
    assert l1["vbmd"] == "107.5" or l1["vbmd"] == "107.6"  # 1 decimal, banker's rounding allowed
    assert l1["vbmd_mg_cm3"] == pytest.approx(107.55) and l1["hu_mean"] == pytest.approx(108.9)
    assert t12["volume_cm3"] == "5.43" and t12["voxels"] == "201"


def test_summary_calibration_qc_hip() -> None:
    view = results_view(RESULTS)
    assert view["summary"]["vbmd"] == "107.5 mg/cm³" or view["summary"]["vbmd"] == "107.6 mg/cm³"
    assert view["summary"]["levels"] == "L1" and view["summary"]["category"] == "osteopenia"
    calibration = {row["key"]: row for row in view["calibration"]}
    assert calibration["slope"]["value"] == "0.8471 mg/cm³ per HU" and calibration["slope"]["raw"] == 0.84712
    assert "muscle_density_mg_cm3" not in calibration  # only what results.json holds
    assert view["qc"] == [{"severity": "warning", "code": "MUSCLE_HU",
                           "message": "muscle ROI mean 15 HU is outside 20..80 HU"}]
    assert view["hip"] == [{"side": "left", "region": "neck", "abmd": "0.758", "t_score": "-0.8", "area": "5.7"}]
    sd = {"hip": {"left": {"neck": {"abmd_g_cm2": 0.7581, "t_score": -0.84, "t_score_calibration_sd": 0.21}}}}
    assert results_view(sd)["hip"][0]["t_score"] == "-0.8 ± 0.2"  # the calibration's stated 1 SD
    spine = {"spine": {"summary": {"vbmd_mg_cm3": 100.66, "vbmd_calibration_sd_mg_cm3": 4.96}}}
    summary = results_view(spine)["summary"]
    assert summary["vbmd"] == "100.7 mg/cm³" and summary["sd"] == "± 5.0 mg/cm³ (calibration, 1 SD)"
    assert summary["sd_mg_cm3"] == pytest.approx(4.96)
    # a method that states no SD says so (not a bare number that looks exact)
    assert view["summary"]["sd"] == "no ± stated by the muscle-fat calibration" and view["summary"]["sd_mg_cm3"] is None


def test_empty_and_missing_values_show_dashes() -> None:
    view = results_view(None)
    assert view["levels"] == [] and view["summary"]["vbmd"] == DASH and view["summary"]["levels"] == DASH
    assert fmt(float("nan")) == DASH and fmt(None) == DASH and fmt("x", None) == "x"


def test_category_only_when_the_results_give_one() -> None:
    """The chip shows the results' category; null (the pipeline withholds it: invalid levels) shows
    "not measurable" with the results' own reasons; the scan's status is shown when the results carry it."""
    tiny = {"status": "not_measurable",
            "status_reasons": [{"code": "roi_too_small", "message": "T12: trabecular ROI 0.35 cm³ < 1 cm³"}],
            "spine": {"levels": {"T12": {"vbmd_mg_cm3": 160.0, "trabecular_hu_mean": 170.0, "roi_volume_mm3": 350.0,
                                         "valid": False, "invalid_reasons": ["roi_too_small"]}},
                      "summary": {"vbmd_mg_cm3": None, "levels_used": [], "category": None}},
            "calibration": {"method": "muscle-fat"}}
    view = results_view(tiny)
    summary = view["summary"]
    assert summary["category"] == "not measurable" and summary["category_known"] is False
    assert summary["category_reasons"] == ["T12: trabecular ROI 0.35 cm³ < 1 cm³"]
    assert view["status"] == {"status": "not_measurable", "title": "not measurable",
                              "reasons": [{"code": "roi_too_small", "message": "T12: trabecular ROI 0.35 cm³ < 1 cm³"}]}
    (t12,) = view["levels"]
    assert t12["valid"] is False and t12["reasons"] == "roi_too_small" and t12["used"] is False
    # partial: the category the results give is shown, the status says what is missing
    partial = dict(RESULTS, status="partial", status_reasons=[{"code": "hip_metal", "message": "left hip: metal"}])
    assert results_view(partial)["summary"]["category"] == "osteopenia"
    assert results_view(partial)["summary"]["category_known"] is True
    assert results_view(partial)["status"]["title"].startswith("partial")
    # results without the status (older pipeline): no status, and a null category still is no finding
    hu = {"spine": {"summary": {"vbmd_mg_cm3": None, "category": None}}, "calibration": {"method": "hu"}}
    assert results_view(hu)["status"]["status"] is None and results_view(hu)["summary"]["sd"] == ""
    assert results_view(hu)["summary"]["category_reasons"] == ["HU-only calibration: no vBMD, so no category"]
    assert results_view(RESULTS)["status"] == {"status": None, "title": "", "reasons": []}


def test_calibration_rows_show_the_header_used() -> None:
    """kVp (header or assumed) and the patient's age and sex the calibration's bases were chosen for."""
    results = {"calibration": {"method": "muscle-fat", "details": {"kvp": 120.0, "kvp_source": "header"}},
               "options": {"patient_age": 62.0, "patient_sex": "F"}}
    rows = {row["key"]: row for row in results_view(results)["calibration"]}
    assert rows["kvp"]["value"] == "120 kV (header)" and rows["kvp"]["raw"] == 120.0
    assert rows["patient"]["value"] == "62 y, F" and rows["patient"]["raw"] == "62 F"
    unknown = {row["key"]: row for row in results_view({"calibration": {"method": "hu"}})["calibration"]}
    assert unknown["patient"]["value"] == f"{DASH}, {DASH}" and "kvp" not in unknown
