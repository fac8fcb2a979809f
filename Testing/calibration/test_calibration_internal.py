"""internal-multi: recovers a known calibration from reference tissues and survives one bad tissue."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib import materials as m
from OpportunisticBMDLib.calibration.internal_multi import (
    fit_details,
    fit_internal_calibration,
    measure_reference_tissues,
)
from OpportunisticBMDLib.volume import Volume


def _tissue_hu(beam: m.Beam, scale: float = 1.0, offset: float = 0.0) -> dict[str, float]:
    names = {"air": "air", "fat": "adipose", "muscle": "muscle", "blood": "blood"}
    return {t: scale * m.hu(mat, beam) + offset for t, mat in names.items()}


@pytest.mark.parametrize("kvp", [80, 120, 140])
def test_fit_recovers_ha_with_scanner_offset_and_scale(kvp):
    beam = m.Beam(kvp)
    scale, offset = 1.02, -12.0  # a miscalibrated scanner: the tissues carry the correction
    fit = fit_internal_calibration(_tissue_hu(beam, scale, offset))
    for ha in (30.0, 80.0, 150.0, 250.0):
        bone_hu = scale * m.hu(m.trabecular_bone(ha, 0.5), beam) + offset
        assert fit.to_mg_cm3(bone_hu) == pytest.approx(ha, abs=1.0)
    assert fit.kvp == pytest.approx(kvp, abs=3)
    assert fit.rms_residual_hu < 1.0 and not fit.dropped


def test_known_kvp_and_mono_model():
    beam = m.Beam(100)
    known = fit_internal_calibration(_tissue_hu(beam), kvp=100)
    assert known.kvp_source == "header"
    assert known.to_mg_cm3(m.hu(m.trabecular_bone(120, 0.5), beam)) == pytest.approx(120, abs=0.5)
    mono = fit_internal_calibration(_tissue_hu(beam), energy_model="mono")
    assert mono.kvp is None and 55 < mono.effective_kev < 80
    assert mono.to_mg_cm3(m.hu(m.trabecular_bone(120, 0.5), beam)) == pytest.approx(120, abs=3)


def test_one_corrupted_tissue_is_dropped_and_reported():
    beam = m.Beam(120)
    tissues = _tissue_hu(beam)
    tissues["muscle"] += 35.0  # ROI caught bone
    fit = fit_internal_calibration(tissues)
    assert list(fit.dropped) == ["muscle"]
    assert fit.dropped["muscle"] == pytest.approx(35.0, abs=8)
    assert fit.to_mg_cm3(m.hu(m.trabecular_bone(100, 0.5), beam)) == pytest.approx(100, abs=2)
    details = fit_details(fit)
    assert details["dropped_tissues"] == ["muscle"] and "muscle" not in details["tissues_used"]
    # without the robust step the same input is clearly off
    naive = fit_internal_calibration(tissues, robust=False)
    assert abs(naive.to_mg_cm3(m.hu(m.trabecular_bone(100, 0.5), beam)) - 100) > 5


def _synthetic_patient(beam: m.Beam, ha_mg_cm3: float, rng: np.random.Generator):
    """A 60 x 128 x 128 torso at 2 mm: air, table, fat body, psoas, aorta, a vertebral body."""
    shape = (30, 128, 128)
    k, j, i = np.indices(shape)
    hu_of = {name: m.hu(name, beam) for name in ("air", "adipose", "muscle", "blood")}
    ct = np.full(shape, hu_of["air"])
    lab = np.zeros(shape, np.uint8)
    body = ((j - 60) / 45.0) ** 2 + ((i - 64) / 58.0) ** 2 <= 1
    ct[body], lab[body] = hu_of["adipose"], 40
    table = (j >= 110) & (j <= 114) & (np.abs(i - 64) < 55)
    ct[table], lab[table] = 200.0, 61
    for ci in (50, 78):
        psoas = ((j - 72) / 8.0) ** 2 + ((i - ci) / 6.0) ** 2 <= 1
        ct[psoas], lab[psoas] = hu_of["muscle"], 30 if ci < 64 else 31
    aorta = ((j - 52) / 5.0) ** 2 + ((i - 70) / 5.0) ** 2 <= 1
    ct[aorta], lab[aorta] = hu_of["blood"], 50
    vert = ((j - 66) / 8.0) ** 2 + ((i - 64) / 8.0) ** 2 <= 1
    ct[vert], lab[vert] = m.hu(m.trabecular_bone(ha_mg_cm3, 0.5), beam), 5
    ct = ct + rng.normal(0, 12.0, shape)
    volume = Volume(ct.astype(np.float32), spacing_mm=(2.0, 2.0, 2.0))
    labels = Volume(lab, spacing_mm=(2.0, 2.0, 2.0))
    rois = {
        "trabecular_L1": vert & (k > 5) & (k < 25),
        "muscle_roi": np.isin(lab, (30, 31)),
        "fat_roi": (lab == 40) & (j < 30) & (ct > -190) & (ct < -30),
    }
    return volume, labels, rois


def test_rois_on_a_volume_recover_known_density():
    beam = m.Beam(120)
    ct, labels, rois = _synthetic_patient(beam, 110.0, np.random.default_rng(3))
    values, details, masks = measure_reference_tissues(ct, rois, labels)
    assert set(values) == {"air", "fat", "muscle", "blood"}
    assert values["air"] == pytest.approx(-1000, abs=2)
    assert not (masks["air"] & (labels.array == 61)).any()
    fit = fit_internal_calibration(values, kvp=120)
    trab = float(ct.array[rois["trabecular_L1"]].mean())
    assert fit.to_mg_cm3(trab) == pytest.approx(110.0, abs=4)


def test_volume_with_contrast_blood_excludes_it():
    beam = m.Beam(120)
    ct, labels, rois = _synthetic_patient(beam, 110.0, np.random.default_rng(4))
    ct.array[labels.array == 50] += 150.0
    values, details, _ = measure_reference_tissues(ct, rois, labels)
    assert "blood" not in values and details["blood"]["used"] is False
