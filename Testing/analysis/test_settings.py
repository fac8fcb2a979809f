"""settings.AnalysisOptions: every field survives the command line both ways (the Slicer background job runs
``obmd analyze`` with ``to_argv``), is validated on construction, and the header defaults reach every site."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from OpportunisticBMDLib.cli import build_parser, main
from OpportunisticBMDLib.errors import InputError
from OpportunisticBMDLib.hip.site import hip_options_for
from OpportunisticBMDLib.mrml.background_job import _options_to_cli
from OpportunisticBMDLib.pipeline import header_age_flags
from OpportunisticBMDLib.settings import AnalysisOptions, CalibrationSettings

# a value other than the default for every field (the test below fails when a field is added without one)
OTHER_CALIBRATION = {"file": "calib.json", "slope": 0.8125, "intercept": -3.25, "pad_densities": (25.0, 75.0, 150.0),
                     "psoas_fat_fraction": 0.11, "marrow_fat_fraction": 0.62, "kvp": 100.0, "energy_model": "mono",
                     "robust": False, "use_cortical": True}
OTHER = {"calibration": "internal-multi", "erosion_radius_mm": 2.75, "muscle_density_mg_cm3": 41.5,
         "fat_density_mg_cm3": -70.25, "calibration_settings": CalibrationSettings(**OTHER_CALIBRATION),
         "patient_age": 61.5, "patient_sex": "F", "z_reference": "z.json", "device": "cuda",
         "segmentation_backend": "totalsegmentator", "label_margin_mm": 1.5}


def _round_trip(options: AnalysisOptions) -> AnalysisOptions:
    args = build_parser().parse_args(["analyze", "ct.nii.gz", "--out", "o", *options.to_argv()])
    return AnalysisOptions.from_args(args)


def test_every_field_has_a_test_value() -> None:
    assert set(OTHER) == {f.name for f in fields(AnalysisOptions)}
    assert set(OTHER_CALIBRATION) == {f.name for f in fields(CalibrationSettings)}
    for name, value in OTHER.items():
        assert getattr(AnalysisOptions(), name) != value, name
    for name, value in OTHER_CALIBRATION.items():
        assert getattr(CalibrationSettings(), name) != value, name


def test_defaults_round_trip() -> None:
    assert AnalysisOptions().to_argv() == ["--calibration", "auto"]
    assert _round_trip(AnalysisOptions()) == AnalysisOptions()


@pytest.mark.parametrize("name", sorted(OTHER))
def test_each_field_round_trips_through_the_command_line(name: str) -> None:
    # internal-multi: a phantom line given under "auto" selects "phantom" (test below)
    options = replace(AnalysisOptions(calibration="internal-multi"), **{name: OTHER[name]})
    assert _round_trip(options) == options


@pytest.mark.parametrize("name", sorted(OTHER_CALIBRATION))
def test_each_calibration_setting_round_trips(name: str) -> None:
    options = AnalysisOptions(calibration="phantom" if name in ("file", "slope", "intercept") else "auto",
                              calibration_settings=CalibrationSettings(**{name: OTHER_CALIBRATION[name]}))
    assert _round_trip(options) == options


def test_all_fields_at_once_and_the_slicer_job_keeps_the_backend() -> None:
    options = AnalysisOptions(**OTHER)
    assert _round_trip(options) == options
    argv = _options_to_cli(options.as_dict())  # the Slicer module hands its options over as a dict
    assert argv == options.to_argv() and "--backend" in argv and "totalsegmentator" in argv


def test_results_dict_round_trips_and_keeps_the_results_contract_keys() -> None:
    options = AnalysisOptions(**OTHER)
    block = options.as_dict()
    assert block["calibration_params"]["pad_densities"] == [25.0, 75.0, 150.0]  # JSON: a list
    assert "calibration_settings" not in block
    assert AnalysisOptions.from_dict(block) == options
    assert AnalysisOptions().as_dict()["calibration_params"] == {}  # nothing given, nothing written


def test_a_phantom_line_without_a_method_selects_phantom() -> None:
    args = build_parser().parse_args(["analyze", "ct.nii.gz", "--out", "o", "--slope", "0.8", "--intercept", "-5"])
    assert AnalysisOptions.from_args(args).calibration == "phantom"


@pytest.mark.parametrize("change, message", [
    ({"erosion_radius_mm": -1.0}, "--erosion-mm"),
    ({"patient_sex": "X"}, "F or M"),
    ({"segmentation_backend": "nnunet"}, "segmentation backend"),
    ({"calibration_settings": {"psoas_fat_fraction": 0.7}}, "--psoas-fat 0.7: a fraction between 0 and 0.5"),
    ({"calibration_settings": {"marrow_fat_fraction": 0.01}}, "--marrow-fat"),
    ({"calibration_settings": {"energy_model": "laser"}}, "energy model"),
    ({"calibration_settings": {"colour": "blue"}}, "unknown calibration setting"),
    ({"colour": "blue"}, "unknown analysis option"),
])
def test_invalid_settings_fail_on_construction(change: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AnalysisOptions.from_dict({**change} if "calibration_settings" not in change
                                  else {"calibration_params": change["calibration_settings"]})


def test_header_defaults_resolved_once_and_the_users_values_win() -> None:
    header = {"patient_age": "067Y", "patient_sex": "F", "kvp": "100"}
    resolved = AnalysisOptions().with_header_defaults(header)
    assert (resolved.patient_age, resolved.patient_sex, resolved.calibration_settings.kvp) == (67.0, "F", 100.0)
    given = AnalysisOptions(patient_age=50.0, patient_sex="M").with_calibration(kvp=80.0)
    assert given.with_header_defaults(header) == given
    assert AnalysisOptions().with_header_defaults({}) == AnalysisOptions()  # nothing known: nothing invented


def test_the_calibration_kvp_reaches_the_hip() -> None:
    """A kVp given with the calibration settings (not only the header's) sets the hip's beam, and the hip's
    Z-scores read the same resolved age and sex."""
    user = AnalysisOptions().with_calibration(kvp=80.0).with_header_defaults({"kvp": "120", "patient_age": "070Y"})
    hip = hip_options_for(user, 0.03)
    assert (hip.kvp, hip.patient_age, hip.patient_sex, hip.slope_relative_sd) == (80.0, 70.0, None, 0.03)
    header_only = AnalysisOptions().with_header_defaults({"kvp": "120", "patient_sex": "M"})
    assert hip_options_for(header_only, None).kvp == 120.0 and hip_options_for(header_only, None).patient_sex == "M"


@pytest.mark.parametrize("age", [-3.0, 0.0, 250.0, 120.5])
def test_an_impossible_age_is_refused_on_construction_and_on_the_command_line(age: float, tmp_path, capsys) -> None:
    """An age outside 0 < age <= 120 y would silently move vBMD (the age-typical marrow fat): refused with one
    line and exit 2, before any file is read (the CT here does not exist)."""
    with pytest.raises(InputError, match=f"--age {age}: patient age in years, more than 0 and at most 120"):
        AnalysisOptions(patient_age=age)
    rc = main(["analyze", str(tmp_path / "no-such-ct.nii.gz"), "--out", str(tmp_path / "o"), "--age", str(age)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--age" in err and "at most 120" in err and "no-such-ct" not in err and "Traceback" not in err
    assert AnalysisOptions(patient_age=120.0).patient_age == 120.0 and AnalysisOptions(patient_age=0.5).patient_age


@pytest.mark.parametrize("header_age", ["250Y", "000Y", 130])
def test_an_implausible_header_age_is_ignored_with_a_notice(header_age) -> None:
    header = {"patient_age": header_age, "patient_sex": "F"}
    resolved = AnalysisOptions().with_header_defaults(header)
    assert resolved.patient_age is None and resolved.patient_sex == "F"
    flags = header_age_flags(header, resolved)
    assert [f["code"] for f in flags] == ["header_age_implausible"] and "ignored" in flags[0]["message"]
    # a plausible header age is used, and a given age makes the header's irrelevant (no notice)
    assert AnalysisOptions().with_header_defaults({"patient_age": "070Y"}).patient_age == 70.0
    assert header_age_flags(header, AnalysisOptions(patient_age=60.0)) == []
