"""Benchmark statistics against values computed by hand or published."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib import stats


def test_spearman_by_hand():
    # d = (-1, 1, -1, 1, 0): r = 1 - 6*4 / (5*(25-1)) = 0.8
    assert stats.spearman_r([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_icc_shrout_fleiss_table():
    # Shrout & Fleiss 1979, Table 2 (6 targets x 4 judges): ICC(2,1) = .29, ICC(3,1) = .71
    table = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert stats.icc_matrix(table, "2,1") == pytest.approx(0.29, abs=0.005)
    assert stats.icc_matrix(table, "3,1") == pytest.approx(0.71, abs=0.005)
    # a constant offset between raters hurts absolute agreement (2,1) but not consistency (3,1)
    x = np.array([10.0, 20, 30, 40, 50])
    assert stats.icc(x + 5, x, "3,1") == pytest.approx(1.0)
    assert stats.icc(x + 5, x, "2,1") < 0.99
    assert stats.icc(x, x) == pytest.approx(1.0)


def test_bland_altman_by_hand():
    ba = stats.bland_altman([2, 4, 6], [1, 3, 7])
    sd = np.sqrt(4.0 / 3.0)  # diffs 1, 1, -1: mean 1/3, SD(n-1) = sqrt(4/3)
    assert ba["bias"] == pytest.approx(1 / 3)
    assert ba["loa_low"] == pytest.approx(1 / 3 - 1.96 * sd)
    assert ba["loa_high"] == pytest.approx(1 / 3 + 1.96 * sd)
    assert stats.rmse([2, 4, 6], [1, 3, 7]) == pytest.approx(1.0)


def test_auc_and_diagnostics_by_hand():
    # positives 0.9, 0.4 vs negatives 0.5, 0.1, 0.4: (3 + 1 + 0.5) / 6
    assert stats.roc_auc([0.9, 0.4, 0.5, 0.1, 0.4], [True, True, False, False, False]) == pytest.approx(0.75)
    d = stats.diagnostic(measured=[70, 85, 90, 150, 75], truth=[60, 75, 100, 140, 85])
    # truth<80: subjects 0,1 -> called<80: subject 0 only -> sens 1/2; negatives 2,3,4: 4 called -> spec 2/3
    assert d["sensitivity"] == pytest.approx(0.5)
    assert d["specificity"] == pytest.approx(2 / 3)
    # AUC of -measured: positives (-70, -85) vs negatives (-90, -150, -75): 2 + 2 + 0 ... = 5/6? count:
    # -70 > -90, -150, -75 (3); -85 > -90, -150 (2) -> 5/6
    assert d["auc"] == pytest.approx(5 / 6)


def test_rmscv_by_hand():
    cv1 = np.sqrt(2.0) / 101.0
    cv2 = np.sqrt(0.5) / 49.5
    expect = 100 * np.sqrt((cv1**2 + cv2**2) / 2)
    assert stats.rmscv_percent([[100, 102], [50, 49]]) == pytest.approx(expect)
    assert expect == pytest.approx(1.4144, abs=1e-3)


def test_agreement_contract_keys():
    rng = np.random.default_rng(1)
    truth = rng.uniform(30, 250, 50)
    figures = stats.agreement(truth + rng.normal(0, 3, 50), truth)
    assert set(figures) == {"n", "spearman_r", "icc", "bias_mg_cm3", "loa_low_mg_cm3", "loa_high_mg_cm3",
                            "rmse_mg_cm3", "auc", "sensitivity", "specificity"}
    assert figures["spearman_r"] > 0.98 and figures["icc"] > 0.98
