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
