"""Femur mineral map (hip/density.py): the two-compartment model is exact for pure cortical bone, pure
trabecular bone, their mixtures and cortex partial-volumed with soft tissue, and stays linear in noise."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib.hip import density as d

KVP = 120.0
SLOPE = 0.8  # mg/cm3 per HU: only scales the femoral-marrow term
SPACING = (2.0, 1.5, 1.5)


def _block(value: float, shape=(24, 24, 24)) -> tuple[np.ndarray, np.ndarray]:
    """A femur-like block filling the grid: line values and depth below the surface (mm)."""
    line = np.full(shape, value, np.float32)
    inside = np.zeros(shape, bool)
    inside[2:-2, 2:-2, 2:-2] = True
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(inside, sampling=SPACING).astype(np.float32)
    return line, depth


def _marrow() -> float:
    return SLOPE * d.femoral_marrow_hu_deficit(KVP)


def test_cortical_constants_follow_icru44():
    # ICRU-44 cortical bone: 1.92 g/cm3, 22.5 % Ca -> ~1080 mg/cm3 HA; the line reads it ~10 % high
    assert d.cortical_mineral_mg_cm3() == pytest.approx(1083, abs=5)
    assert 0.88 < d.cortical_ratio(KVP) < 0.95
    assert d.cortical_line_value(KVP) == pytest.approx(d.cortical_mineral_mg_cm3() / d.cortical_ratio(KVP))
    assert 5.0 < d.femoral_marrow_hu_deficit(KVP) < 30.0  # 25 % more fat in the marrow reads lower


def test_pure_trabecular_gets_its_marrow_back():
    line, depth = _block(150.0)
    mineral = d.femur_mineral_mg_cm3(line, depth, KVP, SLOPE, SPACING)
    deep = depth > d.TRABECULAR_DEPTH_MM
    assert mineral[deep] == pytest.approx(150.0 + _marrow(), abs=0.01)


def test_pure_cortex_inside_a_trabecular_bone_reads_icru44_mineral():
    line, depth = _block(120.0)
    line[12, 12, 12] = d.cortical_line_value(KVP)  # one voxel of compact bone in the trabecular interior
    mineral = d.femur_mineral_mg_cm3(line, depth, KVP, SLOPE, SPACING)
    assert mineral[12, 12, 12] == pytest.approx(d.cortical_mineral_mg_cm3(), rel=0.01)


@pytest.mark.parametrize("cortex_fraction", [0.25, 0.5, 0.8])
def test_mixtures_of_cortex_and_trabecular_bone_are_exact(cortex_fraction):
    trab = 100.0
    line, depth = _block(trab)
    mixed = cortex_fraction * d.cortical_line_value(KVP) + (1 - cortex_fraction) * trab
    line[12, 10:14, 12] = mixed
    mineral = d.femur_mineral_mg_cm3(line, depth, KVP, SLOPE, SPACING)
    truth = cortex_fraction * d.cortical_mineral_mg_cm3() + (1 - cortex_fraction) * (trab + _marrow())
    # the local trabecular level includes the four mixed voxels: within 1 % of the voxel's mineral
    assert mineral[12, 11, 12] == pytest.approx(truth, rel=0.01)


def test_rim_cortex_over_soft_tissue_is_exact():
    """Outside the label (the rim) the background is soft tissue; the caller has subtracted its level."""
    baseline = 45.0
    line, depth = _block(120.0)
    c = 0.3
    rim_line = c * d.cortical_line_value(KVP) + (1 - c) * baseline
    line[0, 12, 12] = rim_line - baseline  # depth 0: outside the label
    mineral = d.femur_mineral_mg_cm3(line, depth, KVP, SLOPE, SPACING, rim_baseline_mg_cm3=baseline)
    assert mineral[0, 12, 12] == pytest.approx(c * d.cortical_mineral_mg_cm3(), rel=1e-4)


def test_noise_averages_out():
    """Zero-mean noise on trabecular bone leaves the mean mineral unchanged (the map is linear in L)."""
    rng = np.random.default_rng(0)
    line, depth = _block(140.0, shape=(30, 30, 30))
    clean = d.femur_mineral_mg_cm3(line, depth, KVP, SLOPE, SPACING)
    noisy = d.femur_mineral_mg_cm3(line + rng.normal(0, 40.0, line.shape).astype(np.float32), depth, KVP, SLOPE,
                                   SPACING)
    deep = depth > d.TRABECULAR_DEPTH_MM + 2
    assert noisy[deep].mean() == pytest.approx(clean[deep].mean(), abs=0.5)
