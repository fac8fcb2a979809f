"""Local calibration check at the hip (hip/local_calibration.py): the HU shift arithmetic, the tissue
readings around the femur (anisotropic spacing), and an end-to-end round trip: a scanner HU offset at
the hip is removed again when the muscle around the femur shows it."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib.hip import HipOptions, analyze_hips
from OpportunisticBMDLib.hip.analytic import AnalyticFemur, IdentityCalibration
from OpportunisticBMDLib.hip.local_calibration import (
    MAX_SHIFT_HU,
    PROXIMAL_FEMUR_MM,
    decide_shift,
    local_tissue_hu,
    reference_tissue_hu,
)
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.volume import Volume

MUSCLE_HU = 40.0


def test_shift_is_the_muscle_difference():
    check = decide_shift({"muscle_hu": 28.5, "fat_hu": -101.0}, {"muscle_hu": 40.0, "fat_hu": -98.0})
    assert check["applied"] and check["hu_shift"] == pytest.approx(-11.5)
    assert check["muscle_difference_hu"] == pytest.approx(-11.5)
    assert check["fat_difference_hu"] == pytest.approx(-3.0)  # reported, not used


@pytest.mark.parametrize(
    ("local", "reference", "reason_part"),
    [({"muscle_hu": 40.0 + MAX_SHIFT_HU + 1}, {"muscle_hu": 40.0}, "not applied"),
     ({"muscle_hu": 35.0}, None, "no reference"),
     ({"muscle_hu": None}, {"muscle_hu": 40.0}, "too little muscle")],
)
def test_shift_not_applied(local, reference, reason_part):
    check = decide_shift(local, reference)
    assert not check["applied"] and check["hu_shift"] == 0.0
    assert reason_part in check["reason"]


def test_reference_reads_the_spine_rois():
    ct = np.zeros((4, 4, 4), np.float32)
    muscle = np.zeros(ct.shape, bool)
    muscle[0] = True
    ct[0] = 37.0
    fat = np.zeros(ct.shape, bool)
    fat[3] = True
    ct[3] = -95.0
    ref = reference_tissue_hu(ct, {"muscle_roi": muscle, "fat_roi": fat})
    assert ref["muscle_hu"] == pytest.approx(37.0) and ref["fat_hu"] == pytest.approx(-95.0)
    assert reference_tissue_hu(ct, {"fat_roi": fat}) is None


def test_local_tissue_reads_muscle_near_the_proximal_femur_only():
    """Anisotropic grid (3 x 1 x 0.8 mm): muscle within the 3-25 mm shell of the top PROXIMAL_FEMUR_MM
    reads 50 HU; muscle further away (60 HU) or below the proximal femur (70 HU) is not taken."""
    spacing = (3.0, 1.0, 0.8)
    shape = (70, 90, 110)  # 210 x 90 x 88 mm
    k, j, i = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    femur = ((j - 45.0) ** 2 + (i - 44.0) ** 2 <= 12.0**2) & (k >= 0.0) & (k <= 200.0)
    r = np.sqrt((j - 45.0) ** 2 + (i - 44.0) ** 2)
    labels = np.where(femur, LABELS["femur_right"], LABELS["other_muscle"]).astype(np.uint8)
    ct = np.full(shape, 50.0, np.float32)
    ct[r > 12.0 + 30.0] = 60.0  # beyond the shell
    ct[(k < 200.0 - PROXIMAL_FEMUR_MM - 10.0) & ~femur] = 70.0  # below the proximal femur
    ct[femur] = 800.0
    local = local_tissue_hu(ct, labels, femur, spacing)
    assert local["muscle_hu"] == pytest.approx(50.0)
    assert local["muscle_voxels"] > 1000


def test_local_fit_takes_the_iliopsoas_level_at_the_femur_centre():
    """HU offset rising 0.15 HU/mm from right to left plus a bowl (cupping), the gluteal/thigh muscle
    6 HU fattier (lower) than the iliopsoas, which sits only on the anterior side: the fit gives the
    iliopsoas level at the proximal femur's centre (40 HU) and the composition difference (-6 HU); a
    plain average of all muscle would read well below 40 HU."""
    spacing = (2.0, 1.0, 1.0)
    shape = (60, 100, 100)
    k, j, i = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    femur = ((j - 50.0) ** 2 + (i - 50.0) ** 2 <= 12.0**2) & (k >= 20.0)
    psoas = ~femur & (j < 38.0) & (np.abs(i - 60.0) < 12.0)  # anterior and off to the left
    labels = np.where(femur, LABELS["femur_left"], np.where(psoas, LABELS["psoas_left"], LABELS["other_muscle"]))
    bowl = -0.004 * ((i - 50.0) ** 2 + (j - 50.0) ** 2)  # cupping: darker towards the body centre
    ct = 40.0 + 0.15 * (i - 50.0) + bowl - 6.0 * (labels == LABELS["other_muscle"])
    ct = np.where(femur, 900.0, ct).astype(np.float32)
    local = local_tissue_hu(ct, labels.astype(np.uint8), femur, spacing)
    assert local["muscle_anchor"] == "iliopsoas"
    assert local["muscle_hu"] == pytest.approx(40.0, abs=0.05)
    assert local["muscle_fit"]["other_minus_iliopsoas_hu"] == pytest.approx(-6.0, abs=0.05)
    assert local["muscle_fit"]["gradient_hu_per_mm"][2] == pytest.approx(0.15, abs=1e-3)


def test_iliopsoas_only_segmentation_uses_unlabelled_lean_tissue_for_the_field():
    """As with the shipped model's labels: only the iliopsoas is labelled, the other muscle is 'body'. The
    unlabelled lean tissue takes the gluteal/thigh role (the field); fat left in a label (-100 HU voxels
    inside the iliopsoas) is kept out by the calibration site's muscle window (-29..150 HU). Without the
    other tissue (iliopsoas alone, one side of the femur) there is no field: the iliopsoas' own level."""
    spacing = (2.0, 1.0, 1.0)
    shape = (60, 100, 100)
    k, j, i = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    femur = ((j - 50.0) ** 2 + (i - 50.0) ** 2 <= 12.0**2) & (k >= 20.0)
    psoas = ~femur & (j < 38.0) & (np.abs(i - 60.0) < 12.0)
    labels = np.where(femur, LABELS["femur_left"], np.where(psoas, LABELS["psoas_left"], LABELS["body"]))
    bowl = -0.004 * ((i - 50.0) ** 2 + (j - 50.0) ** 2)
    ct = 40.0 + 0.15 * (i - 50.0) + bowl - 6.0 * (labels == LABELS["body"])
    ct = np.where(femur, 900.0, ct)
    ct = np.where(psoas & ((i.astype(int) + j.astype(int)) % 7 == 0), -100.0, ct).astype(np.float32)
    local = local_tissue_hu(ct, labels.astype(np.uint8), femur, spacing)
    assert local["muscle_anchor"] == "iliopsoas" and "unlabelled lean tissue" in local["muscle_source"]
    assert local["muscle_hu"] == pytest.approx(40.0, abs=0.2)
    alone = np.where(labels == LABELS["body"], LABELS["subcutaneous_fat"], labels).astype(np.uint8)
    local = local_tissue_hu(ct, alone, femur, spacing)
    assert local["muscle_fit"]["field"].startswith("none") and local["muscle_fit"]["gradient_hu_per_mm"] is None
    # the iliopsoas' plain level (robust mean of its lean voxels in the shell): within its own HU range
    lean_psoas = ct[psoas & (ct > -29) & (k >= 20.0)]
    assert lean_psoas.min() < local["muscle_hu"] < lean_psoas.max() and abs(local["muscle_hu"] - 40.0) < 4.0


def _hip_with_offset(offset_hu: float):
    femur = AnalyticFemur(side="right")
    dens, lab, _ = femur.volumes(spacing_mm=(1.5, 1.5, 1.5), shape_mm=(180.0, 100.0, 140.0),
                                 head_offset_mm=(140.0, 50.0, None))
    frac = dens.array / femur.density_mg_cm3
    ct = dens.array + (1.0 - frac) * MUSCLE_HU + offset_hu  # the femur in muscle, everything shifted
    labels = np.where(lab.array > 0, lab.array, LABELS["other_muscle"]).astype(np.int16)
    return Volume(ct.astype(np.float32), dens.spacing_mm), Volume(labels, dens.spacing_mm)


def test_offset_at_the_hip_is_removed():
    """Identity 'calibration' (CT in mg/cm^3) valid where muscle reads 40: a -12 HU offset at the hip
    lowers the aBMD without the check and gives back the offset-free aBMD with it."""
    opts = HipOptions(cortical_correction=False)
    reference = {"muscle_hu": MUSCLE_HU}
    ct0, lab0 = _hip_with_offset(0.0)
    base = analyze_hips(ct0, lab0, IdentityCalibration(), opts, reference_hu=reference)[0]["right"]
    assert base["calibration"]["hu_shift_applied"] == pytest.approx(0.0, abs=1e-6)
    ct, lab = _hip_with_offset(-12.0)
    off = HipOptions(cortical_correction=False, local_calibration=False)
    uncorrected = analyze_hips(ct, lab, IdentityCalibration(), off)[0]["right"]
    corrected = analyze_hips(ct, lab, IdentityCalibration(), opts, reference_hu=reference)[0]["right"]
    assert corrected["calibration"]["hu_shift_applied"] == pytest.approx(-12.0, abs=1e-3)
    assert corrected["calibration"]["local_check"]["applied"]
    assert "shifted" in corrected["calibration"]["used"]
    for region in ("neck", "total_hip"):
        b, u, c = (x[region]["abmd_g_cm2"] for x in (base, uncorrected, corrected))
        assert c == pytest.approx(b, rel=1e-3), region
        assert u < b * 0.98, region  # the offset matters: > 2 % without the check
    codes = [q["code"] for q in corrected["qc"]]
    assert "hip_calibration_offset" in codes  # 12 HU >= LARGE_SHIFT_HU: flagged


def test_offset_varying_across_the_femur_is_removed():
    """The scanner offset is not one number at the hip: here -12 HU at the proximal femur's centre and
    0.12 HU/mm darker towards the shaft (cupping and scatter vary over the ~12 cm of the total hip). The
    iliopsoas (anterior) gives the level, the other muscle around the femur the field; the field fitted
    to the muscle is removed voxel by voxel, so the aBMD is the offset-free one (one shift at the centre
    would leave the distal total hip several HU dark)."""
    opts = HipOptions(cortical_correction=False)
    reference = {"muscle_hu": MUSCLE_HU}
    ct0, lab0 = _hip_with_offset(0.0)
    anterior = (np.arange(lab0.shape[1]) * lab0.spacing_mm[1] < 22.0)[None, :, None]
    psoas = (lab0.array == LABELS["other_muscle"]) & anterior
    labels = Volume(np.where(psoas, LABELS["psoas_right"], lab0.array).astype(np.int16), lab0.spacing_mm)
    base = analyze_hips(ct0, labels, IdentityCalibration(), opts, reference_hu=reference)[0]["right"]
    femur = lab0.array == LABELS["femur_right"]
    ks = np.nonzero(femur.any(axis=(1, 2)))[0]
    z_mm = np.arange(lab0.shape[0])[:, None, None] * lab0.spacing_mm[0]
    z_centre = (ks.max() - PROXIMAL_FEMUR_MM / 2 / lab0.spacing_mm[0]) * lab0.spacing_mm[0]
    offset = -12.0 + 0.12 * (z_mm - z_centre)  # darker going distal (lower z)
    ct = Volume((ct0.array + offset).astype(np.float32), ct0.spacing_mm)
    corrected = analyze_hips(ct, labels, IdentityCalibration(), opts, reference_hu=reference)[0]["right"]
    lo, hi = corrected["calibration"]["local_check"]["field_applied_hu_range_over_femur"]
    assert hi - lo > 10.0  # the field spans the femur's offset range, not one value
    for region in ("neck", "total_hip"):
        assert corrected[region]["abmd_g_cm2"] == pytest.approx(base[region]["abmd_g_cm2"], rel=3e-3), region


def test_report_line_shows_z_and_the_hip_line():
    from OpportunisticBMDLib.text_report import hip_report_lines

    block = {"neck": {"abmd_g_cm2": 0.738, "t_score": -1.0, "z_score": -1.0},
             "total_hip": {"abmd_g_cm2": 0.942, "t_score": 0.0, "z_score": None},
             "category": "normal", "excluded_reason": None, "calibration": {"hu_shift_applied": -2.44}}
    (line,) = hip_report_lines({"hip": {"left": block}})
    assert "neck 0.738 g/cm2 (T -1.0, Z -1.0)" in line
    assert "total hip 0.942 g/cm2 (T +0.0)" in line
    assert "shifted -2.4 HU" in line
