"""In-scan calibration pad: the digital patient carries it, ``inscan`` finds it without labels and recovers
the patient's exact HA line, ``auto`` falls back to muscle-fat without it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from OpportunisticBMDLib import materials as m
from OpportunisticBMDLib.calibration import calibrate
from OpportunisticBMDLib.calibration.inscan import find_pad, inscan_calibration, marrow_base_line
from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.errors import InputError
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.phantom import PhantomOptions, generate_phantom
from OpportunisticBMDLib.phantom.esp import ha_in_water_hu
from OpportunisticBMDLib.pipeline import AnalysisOptions, derive_rois
from OpportunisticBMDLib.settings import CalibrationSettings

SEED = 7
# small and fast: hip region, 3 mm slices; half-fatty marrow = the calibration's default base, so the
# converted line must be the patient's exact one
SMALL = dict(region="hip", spacing_mm=(3.0, 1.5, 1.5), hip_truth=False, marrow_fat_fraction=0.5)


@pytest.fixture(scope="module")
def pad_phantom():
    ph = generate_phantom(SEED, PhantomOptions(calibration_pad=True, **SMALL))
    ph.ct.metadata["kvp"] = 120.0
    return ph


@pytest.fixture(scope="module")
def plain_phantom():
    return generate_phantom(SEED, PhantomOptions(**SMALL))


def test_inscan_recovers_the_exact_line(pad_phantom):
    cal = inscan_calibration(pad_phantom.ct, AnalysisOptions(calibration="inscan"))
    exact = pad_phantom.truth["exact_calibration"]
    assert cal.method == "inscan"
    assert cal.slope_mg_cm3_per_hu == pytest.approx(exact["slope_mg_cm3_per_hu"], rel=0.005)
    assert cal.intercept_mg_cm3 == pytest.approx(exact["intercept_mg_cm3"], abs=1.5)
    # a trabecular reading at 150 mg/cm3 comes back within 1 %
    hu150 = exact["trabecular_hu_at_0_mg_cm3"] + 150.0 * exact["hu_per_mg_cm3"]
    assert cal.to_mg_cm3(hu150) == pytest.approx(150.0, rel=0.01)
    d = cal.details
    truth_rods = pad_phantom.truth["calibration_pad"]["rods"]
    assert [r["nominal_mg_cm3"] for r in d["rods"]] == [r["ha_mg_cm3"] for r in truth_rods]  # left to right
    for found, true in zip(d["rods"], truth_rods, strict=True):
        assert found["centre_lps_mm"] == pytest.approx(true["center_xy_lps_mm"], abs=1.0)
        assert found["hu"] == pytest.approx(true["hu_ideal"], abs=3.0)  # noise averages out over the core
    assert d["base"]["hu"] == pytest.approx(pad_phantom.truth["calibration_pad"]["base_hu_ideal"], abs=2.0)
    assert d["fit_r2"] > 0.999
    assert 0 < d["slope_relative_sd"] < 0.01
    assert d["marrow_base"]["matched_water_path_cm"] == pytest.approx(
        pad_phantom.truth["scanner"]["patient_water_cm"], abs=2.0)


def test_pad_is_outside_the_patient_and_leaves_it_unchanged():
    ideal = dict(SMALL, ideal=True)
    with_pad = generate_phantom(SEED, PhantomOptions(calibration_pad=True, **ideal))
    without = generate_phantom(SEED, PhantomOptions(**ideal))
    assert "calibration_pad" not in without.truth and PhantomOptions().calibration_pad is False
    n_j = without.ct.shape[1]
    assert with_pad.ct.origin_lps_mm == without.ct.origin_lps_mm and with_pad.ct.shape[1] > n_j
    body = (without.labels.array != 0) & (without.labels.array != LABELS["table"])
    assert np.array_equal(with_pad.labels.array[:, :n_j][body], without.labels.array[body])
    assert np.array_equal(with_pad.ct.array[:, :n_j][body], without.ct.array[body])
    assert np.array_equal(with_pad.density_mg_cm3.array[:, :n_j], without.density_mg_cm3.array)
    # the rods carry the patient's beam physics: HA in water
    beam = m.Beam(120.0, patient_water_cm=with_pad.truth["scanner"]["patient_water_cm"])
    assert with_pad.truth["calibration_pad"]["rods"][-1]["hu_ideal"] == pytest.approx(ha_in_water_hu(200.0, beam),
                                                                                       abs=1e-3)


def test_no_pad_inscan_errors_and_auto_falls_back(plain_phantom):
    ct, labels = plain_phantom.ct, plain_phantom.labels
    assert find_pad(ct) is None
    rois = derive_rois(ct, labels, AnalysisOptions())
    with pytest.raises(InputError, match="no calibration pad found"):
        calibrate(ct, rois, labels, AnalysisOptions(calibration="inscan"))
    auto = calibrate(ct, rois, labels, AnalysisOptions())
    plain = calibrate(ct, rois, labels, AnalysisOptions(calibration="muscle-fat"))
    assert auto.method == "muscle-fat" and auto.details["selected_by"] == "auto"
    assert "no calibration pad" in auto.details["auto_reason"]
    assert auto.slope_mg_cm3_per_hu == plain.slope_mg_cm3_per_hu
    assert auto.intercept_mg_cm3 == plain.intercept_mg_cm3


def test_user_densities_are_checked(pad_phantom):
    def cal(densities):
        return inscan_calibration(pad_phantom.ct, AnalysisOptions(calibration="inscan",
                                                                  calibration_settings=CalibrationSettings(pad_densities=densities)))

    assert cal([200, 150, 100, 50]).slope_mg_cm3_per_hu == pytest.approx(cal(None).slope_mg_cm3_per_hu)
    with pytest.raises(InputError, match="4 pad rods found, 3 densities"):
        cal([50, 100, 200])
    with pytest.raises(InputError, match="implausible"):
        cal([50, 100, 150, 600])
    with pytest.raises(InputError, match="distinct"):
        cal([50, 50, 100, 200])
    # a pad read with twice its densities: the slope leaves HA's physical range
    with pytest.raises(InputError, match="HU per mg/cm3"):
        cal([100, 200, 300, 400])


@pytest.mark.parametrize("kvp", [80.0, 140.0])
def test_marrow_base_conversion_is_the_physics(kvp):
    beam = m.Beam(kvp, patient_water_cm=30.0)
    hu_per_mg = (ha_in_water_hu(200.0, beam) - ha_in_water_hu(0.0, beam)) / 200.0
    line = marrow_base_line(ha_in_water_hu(0.0, beam), hu_per_mg, kvp, 0.5)
    for ha in (0.0, 100.0, 250.0):
        assert line["intercept"] + line["slope"] * m.hu(m.trabecular_bone(ha, 0.5), beam) == pytest.approx(ha, abs=0.5)
    assert line["matched_water_path_cm"] == pytest.approx(30.0, abs=0.5)


def test_cli_auto_uses_the_pad(tmp_path, capsys):
    ph_dir, out = tmp_path / "ph", tmp_path / "out"
    assert main(["phantom", "--region", "spine", "--seed", "3", "--spacing-mm", "2", "2", "3", "--no-hip-truth",
                 "--calibration-pad", "--out", str(ph_dir)]) == 0
    assert main(["analyze", str(ph_dir / "ct.nii.gz"), "--seg", str(ph_dir / "labels.nii.gz"), "--out", str(out),
                 "--json-only", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "calibration: inscan (auto: calibration pad found (4 rods))" in printed
    cal = json.loads((out / "results.json").read_text())["calibration"]
    assert cal["method"] == "inscan" and cal["details"]["selected_by"] == "auto"
    assert main(["analyze", str(ph_dir / "ct.nii.gz"), "--seg", str(ph_dir / "labels.nii.gz"), "--out", str(out),
                 "--json-only", "--quiet", "--pad-densities", "50", "100"]) == 0  # auto: a bad pad falls back
    cal = json.loads((out / "results.json").read_text())["calibration"]
    assert cal["method"] == "muscle-fat" and "not used" in cal["details"]["auto_reason"]


def test_hip_anchors_the_pad_line_on_a_typical_iliopsoas(pad_phantom):
    """The pad's line holds outside the body; the hip checks its muscle against a typical iliopsoas under
    that line (not the psoas ROI) and states the anchor's composition SD on top of the line's."""
    from OpportunisticBMDLib.calibration.composition import (
        muscle_fat_densities,
        psoas_fat_sd,
        typical_psoas_fat_fraction,
    )
    from OpportunisticBMDLib.pipeline import analyze

    res = analyze(pad_phantom.ct, pad_phantom.labels, AnalysisOptions()).results
    line = res["calibration"]
    assert line["method"] == "inscan"
    kvp, mff = line["details"]["kvp"], round(line["details"]["base_marrow_fat_fraction"], 3)
    # independent of pad_anchor: the typical older-adult psoas (age unknown) on the line's own scale
    psoas_mg = muscle_fat_densities(kvp, mff, typical_psoas_fat_fraction(None))[0]
    expected_hu = (psoas_mg - line["intercept"]) / line["slope"]
    lean, adipose = muscle_fat_densities(kvp, mff, 0.0)
    sd_hu = psoas_fat_sd(None) * (lean - adipose) / line["slope"]
    assert 3.0 < sd_hu < 6.0  # ~2.9 % fat x ~150 HU between lean muscle and fat
    measured = [b for b in res["hip"].values() if isinstance(b.get("calibration"), dict)]
    assert measured
    for block in measured:
        cal = block["calibration"]
        assert cal["method"] == "inscan" and cal["slope"] == line["slope"]
        assert cal["local_check"]["muscle_hu_reference"] == pytest.approx(expected_hu, abs=1e-6)
        assert cal["pad_anchor"]["muscle_hu_sd"] == pytest.approx(sd_hu, abs=0.01)
        assert cal["hu_shift_applied"] == pytest.approx(cal["local_check"]["muscle_difference_hu"], abs=1e-6)
        # the stated SD now holds the anchor's ~1 % (0.27 %/HU x ~4.4 HU), not only the line's ~0.2 %
        assert cal["slope_relative_sd"] > 0.008
        neck = block["neck"]
        stated = cal["slope_relative_sd"] * neck["abmd_g_cm2"]
        assert neck["abmd_calibration_sd_g_cm2"] == pytest.approx(stated, rel=1e-6)
