"""The muscle-fat calibration states its own uncertainty (the patient's psoas fat is unknown): the stated
slope SD must match what the physics gives when the psoas holds one SD more fat than assumed, and it must
reach the spine summary, the hip regions, the terminal report and the DXA-like picture."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib import materials as m
from OpportunisticBMDLib.calibration import composition as cal
from OpportunisticBMDLib.calibration.muscle_fat import two_point_line
from OpportunisticBMDLib.hip.analysis import calibration_uncertainty
from OpportunisticBMDLib.hip.tscores import NHANES3_WHITE_FEMALE_YOUNG
from OpportunisticBMDLib.settings import CalibrationSettings
from OpportunisticBMDLib.text_report import hip_report_lines


@pytest.mark.parametrize("kvp", [80.0, 120.0])
def test_stated_slope_sd_matches_the_physics(kvp):
    """Materials model: a psoas with the assumed fat + 1 SD read as the assumed psoas. The line's slope
    error against the exact HA-in-marrow line equals the stated relative SD."""
    marrow, f, sd = 0.5, cal.PSOAS_FAT_FRACTION_OLDER, cal.PSOAS_FAT_SD_OLDER
    beam = m.Beam(kvp=kvp)
    base = m.trabecular_bone(0.0, marrow)
    exact_slope = 200.0 / (m.hu(m.trabecular_bone(200.0, marrow), beam) - m.hu(base, beam))  # mg/cm3 per HU
    fat_hu = m.hu("adipose", beam)
    psoas_d, fat_d = cal.muscle_fat_densities(kvp, marrow, f)

    def slope_with_psoas_fat(true_fat: float) -> float:
        psoas_hu = m.hu(m.mix({"muscle": 1 - true_fat, "adipose": true_fat}), beam)
        return two_point_line(psoas_hu, fat_hu, psoas_d, fat_d)[0]

    assert slope_with_psoas_fat(f) == pytest.approx(exact_slope, rel=0.01)  # the assumed psoas: no error
    actual = slope_with_psoas_fat(f + sd) / slope_with_psoas_fat(f) - 1.0
    stated = cal.slope_relative_sd(sd, kvp, marrow, psoas_d, fat_d)
    assert 0.02 < stated < 0.05
    assert actual == pytest.approx(stated, rel=0.1)


def test_young_psoas_is_less_uncertain():
    assert cal.psoas_fat_sd(25.0) == cal.PSOAS_FAT_SD_YOUNG < cal.psoas_fat_sd(60.0) == cal.psoas_fat_sd(None)


def test_hip_region_uncertainty_arithmetic():
    neck_sd_young = NHANES3_WHITE_FEMALE_YOUNG["neck"][1]
    out = calibration_uncertainty(0.7, "neck", 0.03)
    assert out["abmd_calibration_sd_g_cm2"] == pytest.approx(0.021)
    assert out["t_score_calibration_sd"] == pytest.approx(0.021 / neck_sd_young)
    assert calibration_uncertainty(0.7, "neck", None) == {"abmd_calibration_sd_g_cm2": None,
                                                            "t_score_calibration_sd": None}
    assert calibration_uncertainty(float("nan"), "neck", 0.03)["abmd_calibration_sd_g_cm2"] is None


def test_spine_summary_carries_the_sd():
    """validity.summarize: vBMD SD = rel * (vBMD - FAT_d) for muscle-fat, absent without a stated SD."""
    from OpportunisticBMDLib.validity import summarize

    levels = {lvl: {"voxel_count": 500, "trabecular_hu_mean": 150.0, "vbmd_mg_cm3": v, "valid": True}
              for lvl, v in (("L1", 100.0), ("L2", 120.0))}
    calibration = {"fat_density_mg_cm3": -59.1, "details": {"slope_relative_sd": 0.03}}
    s = summarize(levels, True, calibration)
    assert s["vbmd_mg_cm3"] == pytest.approx(110.0)
    assert s["vbmd_calibration_sd_mg_cm3"] == pytest.approx(0.03 * (110.0 + 59.1))
    assert "vbmd_calibration_sd_mg_cm3" not in summarize(levels, True, {"details": {}})


def test_report_lines_show_the_sd():
    hip = {"left": {"neck": {"abmd_g_cm2": 0.7, "t_score": -1.3, "z_score": None, "t_score_calibration_sd": 0.18},
                    "total_hip": {"abmd_g_cm2": 0.8, "t_score": -1.2, "z_score": None,
                                  "t_score_calibration_sd": 0.2},
                    "category": "osteopenia", "calibration": {"hu_shift_applied": 0.0}}}
    lines = hip_report_lines({"hip": hip})
    assert "neck 0.700 g/cm2 (T -1.3 +-0.2)" in lines[0]
    assert any("1 SD from the phantomless line" in line for line in lines)
    assert not any("marrow" in line for line in lines)  # no marrow term recorded: none named
    hip["left"]["calibration"]["marrow_fat"] = {"sd_fraction": 0.07, "source": "age-typical", "base_fraction": 0.52}
    assert any("the marrow's fat (52% assumed, age-typical" in line for line in hip_report_lines({"hip": hip}))
    hip["left"]["neck"]["t_score_calibration_sd"] = None
    hip["left"]["total_hip"]["t_score_calibration_sd"] = None
    assert not any("phantomless" in line for line in hip_report_lines({"hip": hip}))


def test_pipeline_records_the_sd_for_muscle_fat_only():
    from OpportunisticBMDLib import pipeline
    from Testing.spine.test_spine import synthetic_patient

    ct, labels = synthetic_patient()
    res = pipeline.analyze(ct, labels, pipeline.AnalysisOptions(patient_age=70.0)).results
    rel = res["calibration"]["details"]["slope_relative_sd"]
    assert rel == pytest.approx(cal.slope_relative_sd(
        cal.PSOAS_FAT_SD_OLDER, cal.REFERENCE_KVP, res["calibration"]["details"]["base_marrow_fat_fraction"],
        res["calibration"]["muscle_density_mg_cm3"], res["calibration"]["fat_density_mg_cm3"]))
    summary = res["spine"]["summary"]
    marrow = res["calibration"]["details"]["marrow_fat"]  # age 70 known: the age-typical base, SD 0.07
    assert marrow["source"] == "age-typical" and marrow["sd_fraction"] == 0.07 and 2.0 < marrow["mg_cm3_sd"] < 5.0
    assert summary["vbmd_calibration_sd_mg_cm3"] == pytest.approx(np.hypot(
        rel * (summary["vbmd_mg_cm3"] - res["calibration"]["fat_density_mg_cm3"]), marrow["mg_cm3_sd"]))
    # the patient's marrow fat given: its term is 0, the slope's remains
    given = pipeline.analyze(ct, labels, pipeline.AnalysisOptions(
        patient_age=70.0, calibration_settings=CalibrationSettings(marrow_fat_fraction=0.6))).results
    assert given["calibration"]["details"]["marrow_fat"]["mg_cm3_sd"] == 0.0
    assert given["spine"]["summary"]["vbmd_calibration_sd_mg_cm3"] == pytest.approx(
        given["calibration"]["details"]["slope_relative_sd"]
        * (given["spine"]["summary"]["vbmd_mg_cm3"] - given["calibration"]["fat_density_mg_cm3"]))
    # the user set the densities: no stated uncertainty
    own = pipeline.analyze(ct, labels, pipeline.AnalysisOptions(muscle_density_mg_cm3=40.0,
                                                                fat_density_mg_cm3=-60.0)).results
    assert own["calibration"]["details"]["slope_relative_sd"] is None
    assert "vbmd_calibration_sd_mg_cm3" not in own["spine"]["summary"]
    assert np.isfinite(summary["vbmd_mg_cm3"])
