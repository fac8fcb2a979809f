"""X-ray physics of tissues: CT numbers that could be wrong, checked against physics and clinical ranges."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib import materials as m

B80, B120, B140 = m.Beam(80), m.Beam(120), m.Beam(140)


def test_reference_points_water_air():
    for beam in (B80, B120, B140, m.Beam.mono(60)):
        assert m.hu("water", beam) == pytest.approx(0.0, abs=1e-9)
        assert m.hu("air", beam) == pytest.approx(-1000.0, abs=1e-9)


def test_soft_tissue_hu_at_120kvp_clinical_ranges():
    assert -120 <= m.hu("adipose", B120) <= -90
    assert 40 <= m.hu("muscle", B120) <= 60
    assert 40 <= m.hu("blood", B120) <= 70
    assert m.hu("cortical_bone", B120) > 1000
    assert 60 < B120.effective_kev < 85
    assert B80.effective_kev < B120.effective_kev < B140.effective_kev


def test_water_mu_matches_nist_at_60kev():
    # NIST XCOM water at 60 keV: mu/rho = 0.2059 cm2/g (with coherent scattering).
    assert m.mu_linear_per_cm("water", m.Beam.mono(60)) == pytest.approx(0.2059, rel=0.01)


def test_compositions_and_mix():
    for name, mat in m.MATERIALS.items():
        assert sum(mat.fractions.values()) == pytest.approx(1.0), name
    ha = m.MATERIALS["hydroxyapatite"]
    assert ha.density_g_cm3 == 3.16
    assert ha.fractions["Ca"] == pytest.approx(0.399, abs=0.001)  # 400.8 / 1004.6 g/mol
    half = m.mix({"water": 0.5, "air": 0.5}, by="volume")
    assert half.density_g_cm3 == pytest.approx(0.5006025)
    by_mass = m.mix({"water": 0.5, "hydroxyapatite": 0.5}, by="mass")
    assert by_mass.density_g_cm3 == pytest.approx(1.0 / (0.5 / 1.0 + 0.5 / 3.16))
    # a volume mixture attenuates like the volume-weighted mean
    mixed = m.mix({"muscle": 0.3, "adipose": 0.7})
    expect = 0.3 * m.hu("muscle", B120) + 0.7 * m.hu("adipose", B120)
    assert m.hu(mixed, B120) == pytest.approx(expect, abs=1e-6)


def test_ha_hu_linear_and_slope_falls_with_kvp():
    slopes = []
    for beam in (B80, m.Beam(100), B120, B140):
        ha = np.array([0, 50, 100, 200, 300], float)
        values = np.array([m.hu(m.trabecular_bone(x, 0.4), beam) for x in ha])
        fit = np.polyfit(ha, values, 1)
        assert np.max(np.abs(np.polyval(fit, ha) - values)) < 0.01  # linear in HA partial density
        slopes.append(fit[0])
    assert all(a > b for a, b in zip(slopes, slopes[1:], strict=False))
    assert 1.0 < slopes[2] < 2.0  # HU per mg/cm3 HA at 120 kVp


def test_ha_equivalent_round_trip_and_marrow_fat():
    for beam in (B80, B140):
        bone = m.trabecular_bone(150.0, 0.0)
        assert m.ha_equivalent_mg_cm3(bone, beam, base="red_marrow") == pytest.approx(150.0, rel=1e-6)
        # fatty marrow lowers the apparent density (the known QCT fat error)
        fatty = m.trabecular_bone(150.0, 0.6)
        assert m.ha_equivalent_mg_cm3(fatty, beam, base="red_marrow") < 150.0 - 20


def test_iodine_raises_hu_strongly_at_80kvp():
    blood = m.hu("blood", B80)
    enhanced = m.hu(m.iodinated("blood", 10.0), B80)
    assert enhanced - blood > 300  # ~25-35 HU per mg/ml at 80 kVp
    assert enhanced - blood > m.hu(m.iodinated("blood", 10.0), B140) - m.hu("blood", B140)


def test_metals_are_far_above_bone():
    assert m.hu("titanium", B120) > 5000
    assert m.hu("cobalt_chrome", B120) > m.hu("titanium", B120)


def test_bad_inputs():
    with pytest.raises(KeyError):
        m.hu("unobtainium", B120)
    with pytest.raises(ValueError):
        m.trabecular_bone(100, 1.5)
    with pytest.raises(ValueError):
        m.mix({"water": 1.0}, by="weight")
