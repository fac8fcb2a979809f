"""T-score arithmetic, WHO categories and the reference constants (NHANES III, Looker 1998)."""

from __future__ import annotations

import pytest

from OpportunisticBMDLib.hip import tscores


def test_reference_constants():
    assert tscores.NHANES3_WHITE_FEMALE_YOUNG["neck"] == (0.858, 0.120)
    assert tscores.NHANES3_WHITE_FEMALE_YOUNG["total_hip"] == (0.942, 0.122)


@pytest.mark.parametrize(
    ("abmd", "region", "expected"),
    [(0.858, "neck", 0.0), (0.738, "neck", -1.0), (0.558, "neck", -2.5), (0.942 + 0.244, "total_hip", 2.0)],
)
def test_t_score_arithmetic(abmd, region, expected):
    assert tscores.t_score(abmd, region) == pytest.approx(expected, abs=1e-9)
    assert tscores.abmd_at_t(expected, region) == pytest.approx(abmd, abs=1e-12)


def test_no_reference_for_subregions():
    assert tscores.t_score(0.7, "trochanter") is None
    assert tscores.t_score(float("nan"), "neck") is None


@pytest.mark.parametrize(
    ("t", "category"),
    [(0.3, "normal"), (-1.0, "normal"), (-1.01, "osteopenia"), (-2.49, "osteopenia"), (-2.5, "osteoporosis"),
     (-3.2, "osteoporosis"), (None, None)],
)
def test_who_categories(t, category):
    assert tscores.who_category(t) == category


def test_hip_category_uses_lowest_of_neck_and_total():
    assert tscores.hip_category({"neck": -2.6, "total_hip": -1.2}) == "osteoporosis"
    assert tscores.hip_category({"neck": -0.5, "total_hip": -1.5}) == "osteopenia"
    assert tscores.hip_category({"neck": None, "total_hip": None}) is None


# Z-scores: (aBMD - age/sex-matched mean) / matched SD


def test_builtin_z_reference_is_the_young_white_female_row():
    assert tscores.age_matched("neck", 25, "F") == (0.858, 0.120)
    assert tscores.age_matched("total_hip", 29.9, "female") == (0.942, 0.122)
    assert tscores.age_matched("neck", 30.0, "F") is None  # age_max is exclusive
    assert tscores.age_matched("neck", 25, "M") is None  # no verified male row built in


@pytest.mark.parametrize(("abmd", "expected"), [(0.858, 0.0), (0.738, -1.0), (0.978, 1.0)])
def test_z_score_arithmetic_builtin(abmd, expected):
    z, note = tscores.z_score(abmd, "neck", 24.0, "F")
    assert z == pytest.approx(expected, abs=1e-9)
    assert "Looker" in note


def test_z_score_missing_inputs():
    z, note = tscores.z_score(0.7, "neck", None, "F")
    assert z is None and "age and sex" in note
    z, note = tscores.z_score(0.7, "neck", 67.0, "F")  # no built-in row at 67 y
    assert z is None and "--z-reference" in note
    assert tscores.z_score(0.7, "trochanter", 25.0, "F")[0] is None


def _table(tmp_path, rows):
    import json

    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"name": "site table", "rows": rows}))
    return path


def test_z_score_from_a_site_table(tmp_path):
    rows = [{"sex": "F", "region": "neck", "age_min": 60, "age_max": 70, "mean_g_cm2": 0.70, "sd_g_cm2": 0.11},
            {"sex": "M", "region": "neck", "age_min": 60, "age_max": 70, "mean_g_cm2": 0.80, "sd_g_cm2": 0.125}]
    table = tscores.load_age_reference(_table(tmp_path, rows))
    z, note = tscores.z_score(0.59, "neck", 67.0, "F", table)
    assert z == pytest.approx(-1.0) and "site table" in note
    assert tscores.z_score(0.55, "neck", 61.0, "M", table)[0] == pytest.approx(-2.0)
    assert tscores.z_score(0.55, "neck", 71.0, "M", table)[0] is None


@pytest.mark.parametrize(
    "row",
    [{"sex": "X", "region": "neck", "age_min": 60, "age_max": 70, "mean_g_cm2": 0.7, "sd_g_cm2": 0.1},
     {"sex": "F", "region": "neck", "age_min": 70, "age_max": 60, "mean_g_cm2": 0.7, "sd_g_cm2": 0.1},
     {"sex": "F", "region": "neck", "age_min": 60, "age_max": 70, "mean_g_cm2": 0.7, "sd_g_cm2": 0.0},
     {"sex": "F", "region": "neck", "age_min": 60, "mean_g_cm2": 0.7, "sd_g_cm2": 0.1}],
)
def test_malformed_site_table_is_refused(tmp_path, row):
    with pytest.raises(ValueError):
        tscores.load_age_reference(_table(tmp_path, [row]))


def test_z_scores_in_the_hip_results():
    """analyze_hips fills hip.<side>.<region>.z_score from the options' age and sex (built-in row: a
    White woman of 25 has Z = T), and None with the reason for an age without a row."""
    from dataclasses import replace

    from OpportunisticBMDLib.hip import HipOptions, analyze_hips
    from OpportunisticBMDLib.hip.analytic import AnalyticFemur, IdentityCalibration

    dens, lab, _ = AnalyticFemur(side="right").volumes(spacing_mm=(1.5, 1.5, 1.5), shape_mm=(180.0, 100.0, 140.0),
                                                        head_offset_mm=(140.0, 50.0, None))
    opts = HipOptions(cortical_correction=False, local_calibration=False)
    young = analyze_hips(dens, lab, IdentityCalibration(), replace(opts, patient_age=25, patient_sex="F"))[0]["right"]
    for region in ("neck", "total_hip"):
        assert young[region]["z_score"] == pytest.approx(young[region]["t_score"], abs=1e-12)
    assert young["trochanter"]["z_score"] is None
    assert "Looker" in young["z_score_note"]
    old = analyze_hips(dens, lab, IdentityCalibration(), replace(opts, patient_age=67, patient_sex="F"))[0]["right"]
    assert old["neck"]["z_score"] is None and "--z-reference" in old["z_score_note"]
    assert old["patient_age"] == 67 and old["patient_sex"] == "F"
