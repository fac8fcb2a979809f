"""Asynchronous phantom calibration: an ESP-like scan of known inserts gives the line that recovers them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from OpportunisticBMDLib import materials as m
from OpportunisticBMDLib.calibration.phantom import fit_phantom_line, read_phantom_file
from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.io import write_like
from OpportunisticBMDLib.volume import Volume


def _esp_like(beam: m.Beam, rng: np.random.Generator) -> Volume:
    """Water body with three 'vertebrae': HA-in-water cores (50/100/200) inside 2 mm 800 mg/cm3 shells."""
    shape, spacing = (40, 100, 140), (1.5, 1.0, 1.0)
    k, j, i = np.indices(shape)
    ct = np.full(shape, m.hu("air", beam))
    body = ((j - 50) / 40.0) ** 2 + ((i - 70) / 62.0) ** 2 <= 1
    ct[body] = m.hu("water", beam)

    def ha_in_water(ha):
        return m.hu(m.mix({"hydroxyapatite": ha / 3160.0, "water": 1 - ha / 3160.0}), beam)

    for ha, ci in ((100.0, 30), (50.0, 70), (200.0, 110)):
        r = np.hypot(j - 50, i - ci)
        zin = (k >= 6) & (k < 34)
        shell = zin & (r <= 15)
        ct[shell] = ha_in_water(800.0)
        core = (k >= 8) & (k < 32) & (r <= 13)
        ct[core] = ha_in_water(ha)
    ct = ct + rng.normal(0, 10.0, shape)
    return Volume(ct.astype(np.float32), spacing_mm=spacing)


def test_esp_like_scan_calibrates_exactly():
    beam = m.Beam(120)
    calib = fit_phantom_line(_esp_like(beam, np.random.default_rng(0)), (50, 100, 200))
    assert [ins["density_mg_cm3"] for ins in calib["inserts"]] == [50, 100, 200]
    assert calib["max_residual_mg_cm3"] < 1.5
    # the line converts HA-in-water HU of any density
    hu_150 = m.hu(m.mix({"hydroxyapatite": 150 / 3160.0, "water": 1 - 150 / 3160.0}), beam)
    assert calib["intercept"] + calib["slope"] * hu_150 == pytest.approx(150, abs=2)


def test_cli_round_trip(tmp_path):
    ct = _esp_like(m.Beam(100), np.random.default_rng(1))
    path = tmp_path / "esp.nii.gz"
    write_like(ct.array, ct, path)
    out = tmp_path / "calib.json"
    assert main(["calibrate-phantom", str(path), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    params = read_phantom_file(out)
    assert params["slope"] == data["slope"] and 0.3 < params["slope"] < 1.0
    # a water-only scan has no inserts: one clear error, exit 2
    water = np.where(ct.array > 30, 0.0, ct.array).astype(np.float32)
    write_like(water, ct, tmp_path / "water.nii.gz")
    assert main(["calibrate-phantom", str(tmp_path / "water.nii.gz"), "--out", str(tmp_path / "x.json")]) == 2
