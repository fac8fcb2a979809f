"""Issue #5 as a user runs it: ``obmd phantom`` writes a digital patient (T12 to the femurs, both hips,
in-scan calibration pad, realistic scanner), ``obmd analyze`` prints both hips' neck and total hip aBMD
and T-scores; compared with the phantom's own truth (``truth.json``, never read by the analysis).

With the patient's composition known (psoas fat and vertebral marrow fat, as a water-fat MRI gives them:
``--psoas-fat``, ``--marrow-fat``) the readings meet the issue's targets (aBMD within 1 %, T within 0.1).
With age-typical composition (the default) single-energy CT cannot see the marrow's fat nor the muscle's
(both move HU like mineral); the errors are then larger (seed 500: up to -1.7 %) and must lie within the
calibration SD the results state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from OpportunisticBMDLib.cli import build_parser, main

SEED = "500"  # its typical-composition errors exceed 1 % (-0.8 .. -1.7 %): the known composition must fix them
REGIONS = ("neck", "total_hip")
ABMD_TARGET_PERCENT = 1.0  # issue #5
T_TARGET = 0.1


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp")
    assert main(["phantom", "--seed", SEED, "--fov-levels", "T12", "femur", "--calibration-pad",
                 "--out", str(out)]) == 0
    return out


def _analyze(patient: Path, out: Path, *extra: str) -> dict:
    assert main(["analyze", str(patient / "ct.nii.gz"), "--seg", str(patient / "labels.nii.gz"), "--out", str(out),
                 "--json-only", "--quiet", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def _errors(results: dict, truth: dict) -> list[tuple[str, float, float, dict]]:
    rows = []
    for side in ("left", "right"):
        for region in REGIONS:
            got, true = results["hip"][side][region], truth["hip"][side][region]
            rows.append((f"{side} {region}", 100.0 * (got["abmd_g_cm2"] / true["abmd_g_cm2"] - 1.0),
                         got["t_score"] - true["t_score"], got))
    return rows


def test_known_composition_meets_the_targets(patient, tmp_path, capsys):
    truth = json.loads((patient / "truth.json").read_text())
    psoas_fat = truth["patient"]["muscle_fat_infiltration"]
    marrow_fat = truth["patient"]["marrow_fat_fraction"]
    results = _analyze(patient, tmp_path, "--psoas-fat", str(psoas_fat), "--marrow-fat", str(marrow_fat))
    printed = capsys.readouterr().out
    for side in ("left", "right"):  # the terminal report a user reads
        line = next(ln for ln in printed.splitlines() if ln.startswith(f"hip {side}"))
        assert "neck" in line and "total hip" in line and "T " in line
    assert results["calibration"]["method"] == "inscan"
    assert results["calibration"]["details"]["base_marrow_fat_fraction"] == pytest.approx(marrow_fat)
    anchor = results["hip"]["left"]["calibration"]["pad_anchor"]
    assert anchor["psoas_fat_source"] == "user" and anchor["psoas_fat_fraction"] == pytest.approx(psoas_fat)
    assert anchor["muscle_hu_sd"] == 0.0
    marrow = results["hip"]["left"]["calibration"]["marrow_fat"]
    assert marrow["source"] == "user" and marrow["hu_sd"] == 0.0
    for name, error_percent, t_error, _ in _errors(results, truth):
        assert abs(error_percent) <= ABMD_TARGET_PERCENT, name
        assert abs(t_error) <= T_TARGET, name


def test_typical_composition_errors_lie_within_the_stated_sd(patient, tmp_path):
    truth = json.loads((patient / "truth.json").read_text())
    results = _analyze(patient, tmp_path)
    anchor = results["hip"]["left"]["calibration"]["pad_anchor"]
    assert anchor["psoas_fat_source"] == "age-typical" and anchor["muscle_hu_sd"] > 3.0
    marrow = results["hip"]["left"]["calibration"]["marrow_fat"]
    assert marrow["source"] == "age-typical" and 3.0 < marrow["hu_sd"] < 6.0  # 0.07 fat x ~60 HU (red - yellow)
    rows = _errors(results, truth)
    assert max(abs(e) for _, e, _, _ in rows) > ABMD_TARGET_PERCENT  # what the known composition fixed above
    for name, error_percent, _, got in rows:
        stated_percent = 100.0 * got["abmd_calibration_sd_g_cm2"] / got["abmd_g_cm2"]
        assert 1.2 < stated_percent < 2.5, name  # the anchor's ~1.2 %, the marrow's ~1.2 % and the line's own
        assert abs(error_percent) <= 2.0 * stated_percent, name


@pytest.mark.parametrize("flag, value", [("--marrow-fat", "1.2"), ("--marrow-fat", "0"), ("--psoas-fat", "0.7")])
def test_composition_out_of_range_is_refused(patient, tmp_path, capsys, flag, value):
    assert main(["analyze", str(patient / "ct.nii.gz"), "--seg", str(patient / "labels.nii.gz"),
                 "--out", str(tmp_path), "--quiet", flag, value]) == 2
    assert f"{flag} {value}" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_slicer_background_job_passes_every_calibration_option_to_the_cli():
    """The Slicer module runs ``obmd analyze`` in a process: no option may be dropped on the way."""
    from OpportunisticBMDLib.mrml.background_job import _options_to_cli
    from OpportunisticBMDLib.settings import AnalysisOptions

    given = {"calibration": "inscan", "patient_age": 61.0, "patient_sex": "F", "z_reference": "z.json",
             "calibration_params": {"psoas_fat_fraction": 0.11, "marrow_fat_fraction": 0.62,
                                    "pad_densities": [0.0, 75.0, 150.0], "file": "calib.json"}}
    args = build_parser().parse_args(["analyze", "ct.nii.gz", "--out", "o", *_options_to_cli(given)])
    assert args.z_reference == "z.json"
    options = AnalysisOptions.from_args(args)
    assert options.calibration == "inscan" and options.patient_age == 61.0 and options.patient_sex == "F"
    assert options.calibration_settings.as_dict() == {"file": "calib.json", "pad_densities": [0.0, 75.0, 150.0],
                                                      "psoas_fat_fraction": 0.11, "marrow_fat_fraction": 0.62}
    assert options == AnalysisOptions.from_dict(given)


@pytest.mark.parametrize("kvp, base", [(80.0, 0.35), (120.0, 0.55), (140.0, 0.7)])
def test_marrow_sd_in_hu_is_what_the_pad_line_does(kvp, base):
    """The marrow term's HU equals how far the pad's HA-in-marrow line moves (intercept / slope) when its
    base moves by the marrow fat SD: the stated SD is the calibration's own physics, not a guess."""
    from OpportunisticBMDLib import materials as m
    from OpportunisticBMDLib.calibration.composition import MARROW_FAT_SD, marrow_base_hu_sd
    from OpportunisticBMDLib.calibration.inscan import marrow_base_line
    from OpportunisticBMDLib.phantom.esp import ha_in_water_hu

    beam = m.Beam(kvp, patient_water_cm=30.0)
    hu_per_mg = (ha_in_water_hu(200.0, beam) - ha_in_water_hu(0.0, beam)) / 200.0
    lo, hi = (marrow_base_line(ha_in_water_hu(0.0, beam), hu_per_mg, kvp, base + d)
              for d in (-MARROW_FAT_SD, MARROW_FAT_SD))
    moved_hu = (hi["intercept"] - lo["intercept"]) / (0.5 * (lo["slope"] + hi["slope"])) / 2.0
    assert marrow_base_hu_sd(kvp, base, MARROW_FAT_SD) == pytest.approx(abs(moved_hu), rel=0.05)
