"""Measured QC rules (issue #13): thick slices and a muscle reference that is not the psoas.

The flags must fire where the measured bias is, and the expected bias they state must match what the
same digital patient actually reads (``obmd bench thickness`` / ``obmd bench muscle-substitution`` give the
figures behind qc.py's constants)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from OpportunisticBMDLib import qc
from OpportunisticBMDLib.benchmarks import _qc_cases
from OpportunisticBMDLib.benchmarks.muscle_substitution import without_psoas
from OpportunisticBMDLib.benchmarks.thickness import THIN_SLICE_MM, thicken
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.volume import Volume

SEED = 3000  # a digital patient of the benchmark's cohort


def _flags(summary: dict, codes: tuple[str, ...]) -> list[dict]:
    return [q for q in summary["qc"] if q["code"] in codes]


@pytest.fixture(scope="module")
def thin_patient():
    case = _qc_cases.digital_patient(SEED, spacing_mm=(THIN_SLICE_MM, 1.5, 1.5), slice_thickness_mm=THIN_SLICE_MM,
                                     hip_truth=False)
    return case, _qc_cases.spine_summary(case.ct, case.labels)


def test_thin_slices_raise_no_thickness_flag(thin_patient):
    _, thin = thin_patient
    assert not _flags(thin, ("slice_thick", "slice_too_thick"))


@pytest.mark.parametrize("factor, step, code, tolerance", [
    (5, 5, "slice_too_thick", 10.0),  # 5 mm contiguous: spacing beyond the 3.2 mm erosion (+31 stated)
    (4, 2, "slice_thick", 4.0),  # 4 mm every 2 mm: endplate partial volume only (+4 stated)
])
def test_thick_slices_flagged_with_the_bias_they_cause(thin_patient, factor, step, code, tolerance):
    case, thin = thin_patient
    ct, labels = thicken(case.ct, case.labels, factor, THIN_SLICE_MM, step)
    assert ct.metadata["slice_thickness_mm"] == factor * THIN_SLICE_MM and ct.spacing_mm[0] == step * THIN_SLICE_MM
    thick = _qc_cases.spine_summary(ct, labels)
    flags = _flags(thick, ("slice_thick", "slice_too_thick"))
    assert [q["code"] for q in flags] == [code]
    flag = flags[0]
    assert flag["severity"] == "warning"
    assert (code in qc.SUMMARY_BLOCKING_CODES) == (code == "slice_too_thick")
    measured = thick["vbmd_mg_cm3"] - thin["vbmd_mg_cm3"]
    assert measured > 0  # thick slices read high
    stated = flag["expected_bias_mg_cm3"]
    assert f"+{stated:.0f} mg/cm3" in flag["message"]
    assert abs(stated - measured) <= tolerance, (stated, measured)


def test_thickness_from_header_wins_over_spacing():
    ct = Volume(np.zeros((4, 4, 4), np.float32), (2.0, 1.0, 1.0), metadata={"slice_thickness_mm": "5.0"})
    assert qc.slice_thickness_mm(ct) == 5.0
    flags = qc.slice_thickness_flags(ct, 3.2)  # 5 mm every 2 mm: overlapping, partial volume only
    assert [q["code"] for q in flags] == ["slice_thick"] and flags[0]["expected_bias_mg_cm3"] == pytest.approx(7.0)
    for unknown in (None, "", "n/a", 0):
        assert qc.slice_thickness_mm(ct.like(ct.array, slice_thickness_mm=unknown)) == 2.0
    assert qc.slice_thickness_flags(ct.like(ct.array), 3.2) == []
    gapped = Volume(ct.array, (5.0, 1.0, 1.0), metadata={"slice_thickness_mm": 1.0})  # thin but far apart
    assert [q["code"] for q in qc.slice_thickness_flags(gapped, 3.2)] == ["slice_too_thick"]
    assert qc.slice_thickness_flags(gapped, 5.7) == []  # the model labels' wider erosion drops the endplate slice


@pytest.fixture(scope="module")
def muscle_patient():
    return _qc_cases.digital_patient(SEED, hip_truth=False)


def test_missing_psoas_warns_with_the_expected_bias(muscle_patient):
    case = muscle_patient
    stripped = without_psoas(case.labels)
    assert not np.isin(stripped.array, [LABELS["psoas_left"], LABELS["psoas_right"]]).any()
    with_psoas = _qc_cases.spine_summary(case.ct, case.labels, "muscle-fat")
    paraspinal = _qc_cases.spine_summary(case.ct, stripped, "muscle-fat")
    assert with_psoas["muscle_roi_source"] == "psoas" and not _flags(with_psoas, ("muscle_not_psoas",))
    assert paraspinal["muscle_roi_source"] == "paraspinal"
    (flag,) = _flags(paraspinal, ("muscle_not_psoas",))
    assert flag["severity"] == "warning" and "muscle_not_psoas" in qc.SUMMARY_BLOCKING_CODES
    stated = flag["expected_bias_mg_cm3"]
    assert stated == qc.PARASPINAL_BIAS_MG_CM3["muscle-fat"] and stated > with_psoas["stated_sd_mg_cm3"]
    assert re.search(rf"expected vBMD bias \+{stated:.0f} mg/cm3", flag["message"])
    # this patient's own bias lies in the digital patients' range the message states, with the same sign
    measured = paraspinal["vbmd_mg_cm3"] - with_psoas["vbmd_mg_cm3"]
    _, low, high = qc.PARASPINAL_BIAS_PHANTOM_MG_CM3["muscle-fat"]
    assert 0 < measured and low <= measured <= high, measured


def test_missing_psoas_barely_moves_internal_multi(muscle_patient):
    case = muscle_patient
    stripped = without_psoas(case.labels)
    base = _qc_cases.spine_summary(case.ct, case.labels, "internal-multi")
    para = _qc_cases.spine_summary(case.ct, stripped, "internal-multi")
    (flag,) = _flags(para, ("muscle_not_psoas_weighted",))
    assert flag["severity"] == "info" and flag["code"] not in qc.SUMMARY_BLOCKING_CODES
    assert abs(para["vbmd_mg_cm3"] - base["vbmd_mg_cm3"]) <= 2.0
