"""Digital patient generator: reproducibility, anatomy in the right places, truth consistent with the
density map, exact-physics measurement, ESP mode and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.labels import LABELS, vertebra_label
from OpportunisticBMDLib.phantom import PhantomOptions, generate_phantom
from OpportunisticBMDLib.settings import CalibrationSettings
from OpportunisticBMDLib.volume import ball_kernel


@pytest.fixture(scope="module")
def torso():
    return generate_phantom(11, PhantomOptions(region="torso", spacing_mm=(3.0, 2.0, 2.0), hip_truth=False))


@pytest.fixture(scope="module")
def ideal_spine():
    return generate_phantom(5, PhantomOptions(region="spine", spacing_mm=(1.5, 1.5, 1.5), ideal=True, bmd_mg_cm3=123.0))


def _centroid(labels: np.ndarray, name: str) -> np.ndarray:
    idx = np.argwhere(labels == LABELS[name])
    assert idx.size, f"{name} missing"
    return idx.mean(axis=0)


def test_reproducible_from_seed():
    opts = PhantomOptions(region="spine", spacing_mm=(3.0, 3.0, 3.0))
    a, b = generate_phantom(3, opts), generate_phantom(3, opts)
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert a.truth["spine"] == b.truth["spine"]
    c = generate_phantom(4, opts)
    assert not np.array_equal(a.labels.array, c.labels.array) or a.ct.shape != c.ct.shape
    # a rescan (new noise only) keeps the anatomy
    d = generate_phantom(3, PhantomOptions(region="spine", spacing_mm=(3.0, 3.0, 3.0), noise_seed=1))
    assert np.array_equal(a.labels.array, d.labels.array) and not np.array_equal(a.ct.array, d.ct.array)


def test_anatomy_order_and_sides(torso):
    lab = torso.labels.array
    k = {lv: _centroid(lab, f"vertebra_{lv}")[0] for lv in ("T12", "L1", "L2", "L3", "L5")}
    assert k["T12"] > k["L1"] > k["L2"] > k["L3"] > k["L5"]  # axis 0 runs inferior -> superior
    assert _centroid(lab, "femur_left")[2] > _centroid(lab, "femur_right")[2]  # axis 2 runs right -> left
    assert _centroid(lab, "femur_left")[0] < k["L5"]
    # psoas lateral to the lumbar bodies, on its own side
    for lv in ("L3", "L4"):
        kk = int(round(_centroid(lab, f"vertebra_{lv}")[0]))
        sl = lab[kk]
        vi = np.argwhere(sl == vertebra_label(lv))[:, 1]
        li = np.argwhere(sl == LABELS["psoas_left"])[:, 1]
        ri = np.argwhere(sl == LABELS["psoas_right"])[:, 1]
        assert li.mean() > vi.mean() > ri.mean()
    # paraspinal muscles behind the vertebral bodies (axis 1 runs anterior -> posterior)
    assert _centroid(lab, "paraspinal_left")[1] > _centroid(lab, "vertebra_L2")[1]
    # subcutaneous fat outside the muscle: farther from the body centre in each slice
    kk = int(round(k["L2"]))
    sl = lab[kk]
    centre = np.argwhere(sl > 0).mean(axis=0)
    dist = {n: np.linalg.norm(np.argwhere(sl == LABELS[n]) - centre, axis=1).mean()
            for n in ("subcutaneous_fat", "other_muscle", "visceral_fat")}
    assert dist["subcutaneous_fat"] > dist["other_muscle"] > dist["visceral_fat"]
    # ribs: 12th pair at T12, the liver on the right
    assert abs(_centroid(lab, "rib_left_12")[0] - k["T12"]) < 20
    assert _centroid(lab, "liver")[2] < _centroid(lab, "spleen")[2]


def test_truth_keys_and_density(torso):
    t = torso.truth
    for key in ("seed", "spine", "hip", "scanner", "patient", "exact_calibration", "fracture", "metal", "contrast"):
        assert key in t
    assert {"kvp", "noise_hu", "blur_mm", "spacing_mm"} <= set(t["scanner"])
    assert {"muscle_fat_infiltration", "marrow_fat_fraction"} <= set(t["patient"])
    for side in ("left", "right"):
        g = t["hip"][side]["geometry"]
        assert np.isclose(np.linalg.norm(g["neck_axis_lps"]), 1.0)
        assert np.isclose(np.linalg.norm(g["shaft_axis_lps"]), 1.0)
        assert 115 < g["neck_shaft_angle_deg"] < 145 and 0 < g["anteversion_deg"] < 30
        angle = np.degrees(np.arccos(np.dot(g["neck_axis_lps"], g["shaft_axis_lps"])))
        assert abs(angle - g["neck_shaft_angle_deg"]) < 0.01  # the 3D angle between the two axes
    dens = torso.density_mg_cm3.array
    lab = torso.labels.array
    assert dens[lab == LABELS["subcutaneous_fat"]].max() < 1e-3
    for lv in ("T12", "L1", "L2", "L3", "L4"):
        entry = t["spine"]["levels"][lv]
        core = _core_mask(torso, lv)
        assert abs(dens[core].mean() - entry["vbmd_mg_cm3"]) < 0.02 * entry["vbmd_mg_cm3"] + 1.0


def test_hip_geometry_matches_the_labels(torso):
    vol = torso.labels
    for side, sign in (("left", 1.0), ("right", -1.0)):
        g = torso.truth["hip"][side]["geometry"]
        head = np.array(g["head_center_lps_mm"])
        idx = np.argwhere(vol.array == LABELS[f"femur_{side}"])
        pts = vol.index_to_lps_mm(idx)
        dist = np.linalg.norm(pts - head, axis=1)
        # the ball inside the head radius is femur (volume of the labelled voxels within R - 3 mm)
        inner = (dist < g["head_radius_mm"] - 3.0).sum() * np.prod(vol.spacing_mm)
        assert inner > 0.8 * 4 / 3 * np.pi * (g["head_radius_mm"] - 3.0) ** 3
        # and no femur label beyond the head surface on the medial side (the acetabulum is there)
        medial = (pts[:, 0] - head[0]) * sign < -(g["head_radius_mm"] + 3.0)
        assert not medial.any()
        neck = np.array(g["neck_axis_lps"])
        assert np.sign(neck[0]) == sign and neck[2] < 0  # head -> neck base runs laterally and down
        assert g["shaft_axis_lps"][2] > 0.95


def _core_mask(phantom, level: str, erosion_mm: float = 4.0) -> np.ndarray:
    from scipy import ndimage

    lab = phantom.labels.array == vertebra_label(level)
    # the vertebral body: anterior part of the label (posterior elements lie behind the body centre)
    centre = np.array(phantom.truth["spine"]["levels"][level]["center_lps_mm"])
    c_kji = phantom.labels.lps_mm_to_index(centre)
    jj = np.arange(lab.shape[1]).reshape(1, -1, 1)
    body = lab & (jj < c_kji[1] + 8.0 / phantom.labels.spacing_mm[1])
    return ndimage.binary_erosion(body, ball_kernel(erosion_mm, phantom.labels.spacing_mm))


def test_ideal_phantom_measures_truth_with_exact_calibration(ideal_spine):
    t = ideal_spine.truth
    cal = t["exact_calibration"]
    for lv in ("T12", "L1", "L2"):
        roi = _core_mask(ideal_spine, lv)
        assert roi.sum() > 200
        hu = ideal_spine.ct.array[roi].mean()
        measured = cal["intercept_mg_cm3"] + cal["slope_mg_cm3_per_hu"] * hu
        assert abs(measured - t["spine"]["levels"][lv]["vbmd_mg_cm3"]) <= 1.0
        assert abs(t["spine"]["levels"][lv]["vbmd_mg_cm3"] - 123.0) < 2.0


def test_pipeline_measures_truth_with_exact_calibration(ideal_spine):
    """The spine pipeline on the phantom's own labels, calibrated with the phantom's exact HU line."""
    from OpportunisticBMDLib import pipeline

    cal = ideal_spine.truth["exact_calibration"]
    line = CalibrationSettings(slope=cal["slope_mg_cm3_per_hu"], intercept=cal["intercept_mg_cm3"])
    options = pipeline.AnalysisOptions(calibration="phantom", calibration_settings=line)
    result = pipeline.analyze(ideal_spine.ct, ideal_spine.labels, options)
    truth = ideal_spine.truth["spine"]["levels"]
    for lv in ("T12", "L1", "L2", "L3"):
        assert abs(result.results["spine"]["levels"][lv]["vbmd_mg_cm3"] - truth[lv]["vbmd_mg_cm3"]) <= 1.0


def test_esp_inserts_measure_nominal():
    ph = generate_phantom(0, PhantomOptions(region="esp", spacing_mm=(1.5, 1.0, 1.0), ideal=True))
    cal = ph.truth["exact_calibration"]
    for lv, nominal in (("L1", 50.0), ("L2", 100.0), ("L3", 200.0)):
        assert ph.truth["spine"]["levels"][lv]["vbmd_mg_cm3"] == pytest.approx(nominal)
        roi = _core_mask(ph, lv, erosion_mm=4.0)
        measured = cal["intercept_mg_cm3"] + cal["slope_mg_cm3_per_hu"] * ph.ct.array[roi].mean()
        assert abs(measured - nominal) <= 1.0
    rods = ph.truth["esp"]["rods"]
    assert [r["ha_mg_cm3"] for r in rods] == [0.0, 100.0, 200.0]
    for rod in rods:
        assert (ph.labels.array == rod["label"]).sum() > 100


def test_options_fracture_metal_contrast():
    base = PhantomOptions(region="torso", spacing_mm=(3.0, 3.0, 3.0), ideal=True, hip_truth=False)
    plain = generate_phantom(8, base)
    special = generate_phantom(8, PhantomOptions(region="torso", spacing_mm=(3.0, 3.0, 3.0), ideal=True, fracture="L1",
                                                 metal="left", contrast=True, hip_truth=False))
    assert special.truth["spine"]["levels"]["L1"]["fractured"]
    assert (special.labels.array == LABELS["metal"]).sum() > 50
    assert special.ct.array[special.labels.array == LABELS["metal"]].max() > 3000
    assert special.truth["hip"]["left"]["metal"] and not special.truth["hip"]["right"]["metal"]
    aorta = LABELS["aorta"]
    enhanced = special.ct.array[special.labels.array == aorta].mean()
    assert enhanced > plain.ct.array[plain.labels.array == aorta].mean() + 80
    vol = {p: (ph.labels.array == vertebra_label("L1")).sum() for p, ph in (("plain", plain), ("frac", special))}
    assert vol["frac"] < 0.92 * vol["plain"]


def test_cli_writes_files(tmp_path):
    from OpportunisticBMDLib.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", "--out", str(out), "--seed", "2", "--region", "spine", "--spacing-mm", "3", "3", "3"]) == 0
    for name in ("ct.nii.gz", "labels.nii.gz", "density_mg_cm3.nii.gz", "truth.json"):
        assert (out / name).exists()
    ct = read_ct(out / "ct.nii.gz")
    lab = read_labels(out / "labels.nii.gz", like=ct)
    same = generate_phantom(2, PhantomOptions(region="spine", spacing_mm=(3.0, 3.0, 3.0)))
    assert np.array_equal(ct.array, same.ct.array) and np.array_equal(lab.array, same.labels.array)  # orientation
    truth = json.loads((out / "truth.json").read_text())
    assert truth["seed"] == 2 and "L1" in truth["spine"]["levels"]
    assert (lab.array == vertebra_label("L1")).sum() > 100
    assert ct.array.min() >= -1024 and ct.spacing_mm == (3.0, 3.0, 3.0)
    # the header a scanner would write (sidecar ct.json): kVp, age and sex as the analysis reads them
    assert float(ct.metadata["kvp"]) == truth["scanner"]["kvp"]
    assert ct.metadata["patient_age"] == f"{int(truth['patient']['age']):03d}Y"
    assert ct.metadata["patient_sex"] == truth["patient"]["sex"]


def test_patient_physics_knobs():
    """Fat infiltration lowers muscle HU by the adipose-muscle HU gap times the fraction; marrow fat lowers
    trabecular HU at the same true HA density; nothing else of the patient changes."""
    opts = {"region": "spine", "spacing_mm": (3.0, 3.0, 3.0), "ideal": True, "bmd_mg_cm3": 100.0}
    lean = generate_phantom(6, PhantomOptions(muscle_fat_infiltration=0.0, marrow_fat_fraction=0.3, **opts))
    fatty = generate_phantom(6, PhantomOptions(muscle_fat_infiltration=0.2, marrow_fat_fraction=0.6, **opts))
    assert np.array_equal(lean.labels.array, fatty.labels.array)
    gap = lean.truth["tissue_hu"]["fat"] - lean.truth["tissue_hu"]["psoas"]
    assert fatty.truth["tissue_hu"]["psoas"] - lean.truth["tissue_hu"]["psoas"] == pytest.approx(0.2 * gap, abs=3.0)
    for lv in ("L1", "L2"):
        assert fatty.truth["spine"]["levels"][lv]["vbmd_mg_cm3"] == pytest.approx(
            lean.truth["spine"]["levels"][lv]["vbmd_mg_cm3"], abs=0.01)
        roi = _core_mask(lean, lv, erosion_mm=3.0)
        assert fatty.ct.array[roi].mean() < lean.ct.array[roi].mean() - 10.0
