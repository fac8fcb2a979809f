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
from OpportunisticBMDLib.calibration import CALIBRATIONS
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


@pytest.mark.parametrize("factor, step", [(5, 5), (4, 2)])  # 5 mm contiguous; 4 mm every 2 mm
def test_thick_slices_up_to_8_mm_warn_and_read_within_the_stated_range(thin_patient, factor, step):
    """The ROI keeps a slice's thickness from the endplates (spine.z_clearance_mm): 5 mm contiguous read +33
    before; now within the measured range the warning states, and the summary is kept."""
    case, thin = thin_patient
    ct, labels = thicken(case.ct, case.labels, factor, THIN_SLICE_MM, step)
    assert ct.metadata["slice_thickness_mm"] == factor * THIN_SLICE_MM and ct.spacing_mm[0] == step * THIN_SLICE_MM
    thick = _qc_cases.spine_summary(ct, labels)
    (flag,) = _flags(thick, ("slice_thick", "slice_too_thick"))
    assert flag["code"] == "slice_thick" and flag["code"] not in qc.SUMMARY_BLOCKING_CODES
    assert f"+{flag['expected_bias_mg_cm3']:.0f} mg/cm3" in flag["message"]
    measured = thick["vbmd_mg_cm3"] - thin["vbmd_mg_cm3"]
    low, high = qc.THICK_SLICE_BIAS_RANGE_MG_CM3
    assert low <= measured <= high, measured
    assert thick["category"] is not None


def test_slices_beyond_8_mm_withhold_the_summary(thin_patient):
    case, thin = thin_patient
    ct, labels = thicken(case.ct, case.labels, 10, THIN_SLICE_MM, 10)
    thick = _qc_cases.spine_summary(ct, labels)
    (flag,) = _flags(thick, ("slice_thick", "slice_too_thick"))
    assert flag["code"] == "slice_too_thick" and "slice_too_thick" in qc.SUMMARY_BLOCKING_CODES
    assert thick["category"] is None and thick["withheld_reasons"] == ["slice_too_thick"]
    measured = thick["vbmd_mg_cm3"] - thin["vbmd_mg_cm3"]
    assert measured > thin["stated_sd_mg_cm3"], measured  # why it is withheld: beyond the stated SD


def test_z_clearance_only_beyond_the_erosion_radius():
    from OpportunisticBMDLib.spine import trabecular_roi, z_clearance_mm

    assert z_clearance_mm(3.0, None, 3.2) is None and z_clearance_mm(3.0, 3.0, 3.2) is None  # unchanged up to 3 mm
    assert z_clearance_mm(5.0, None, 3.2) == 5.0 and z_clearance_mm(2.0, 5.0, 3.2) == 5.0
    body = np.zeros((12, 20, 20), bool)
    body[1:11, 2:18, 2:18] = True  # 10 slices of 5 mm: 50 mm high
    plain, _ = trabecular_roi(body, (3.0, 1.0, 1.0), 3.2)
    assert plain[2].any() and not plain[1].any()  # 3 mm: the ball removes the outermost slice (3 mm in) only
    roi, _ = trabecular_roi(body, (5.0, 1.0, 1.0), 3.2)
    assert not roi[1].any() and not roi[10].any() and roi[2].any() and roi[9].any()  # outermost slices dropped
    roi, _ = trabecular_roi(body, (5.0, 1.0, 1.0), 3.2, slice_thickness_mm=10.0)
    assert not roi[2].any() and roi[3].any()  # 10 mm thick slabs: two slices clear of each endplate


def test_thickness_from_header_wins_over_spacing():
    ct = Volume(np.zeros((4, 4, 4), np.float32), (2.0, 1.0, 1.0), metadata={"slice_thickness_mm": "5.0"})
    assert qc.slice_thickness_mm(ct) == 5.0
    flags = qc.slice_thickness_flags(ct, 3.2)  # 5 mm every 2 mm: overlapping
    assert [q["code"] for q in flags] == ["slice_thick"]
    assert flags[0]["expected_bias_mg_cm3"] == qc.THICK_SLICE_BIAS_MG_CM3
    for unknown in (None, "", "n/a", 0):
        assert qc.slice_thickness_mm(ct.like(ct.array, slice_thickness_mm=unknown)) == 2.0
    assert qc.slice_thickness_flags(ct.like(ct.array), 3.2) == []
    gapped = Volume(ct.array, (5.0, 1.0, 1.0), metadata={"slice_thickness_mm": 1.0})  # thin but 5 mm apart
    assert [q["code"] for q in qc.slice_thickness_flags(gapped, 3.2)] == ["slice_thick"]
    far = Volume(ct.array, (10.0, 1.0, 1.0), metadata={"slice_thickness_mm": 1.0})
    assert [q["code"] for q in qc.slice_thickness_flags(far, 3.2)] == ["slice_too_thick"]


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
    real_ct_bias, (_, low, high) = CALIBRATIONS["muscle-fat"].paraspinal_bias_mg_cm3
    assert stated == real_ct_bias and stated > with_psoas["stated_sd_mg_cm3"]
    assert re.search(rf"expected vBMD bias \+{stated:.0f} mg/cm3", flag["message"])
    # this patient's own bias lies in the digital patients' range the message states, with the same sign
    measured = paraspinal["vbmd_mg_cm3"] - with_psoas["vbmd_mg_cm3"]
    assert 0 < measured and low <= measured <= high, measured


def test_missing_psoas_barely_moves_internal_multi(muscle_patient):
    case = muscle_patient
    stripped = without_psoas(case.labels)
    base = _qc_cases.spine_summary(case.ct, case.labels, "internal-multi")
    para = _qc_cases.spine_summary(case.ct, stripped, "internal-multi")
    (flag,) = _flags(para, ("muscle_not_psoas_weighted",))
    assert flag["severity"] == "info" and flag["code"] not in qc.SUMMARY_BLOCKING_CODES
    assert abs(para["vbmd_mg_cm3"] - base["vbmd_mg_cm3"]) <= 2.0
