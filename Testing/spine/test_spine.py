"""Known-answer tests of the spine measurement on synthetic volumes (no files needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from OpportunisticBMDLib import pipeline, qc, rois, spine
from OpportunisticBMDLib.calibration import composition as cal
from OpportunisticBMDLib.errors import InputError, SegmentationError
from OpportunisticBMDLib.labels import LABELS, vertebra_label
from OpportunisticBMDLib.results import acr_category, csv_row
from OpportunisticBMDLib.settings import CalibrationSettings
from OpportunisticBMDLib.volume import Volume, ball_kernel

TRAB_HU, CORTEX_HU, PSOAS_HU, FAT_HU, SOFT_HU = 150.0, 700.0, 50.0, -100.0, 40.0
SPACING = (2.0, 1.0, 1.0)  # z, y, x mm


def _vertebra(shape, centre_kji, spacing, body_radius_mm=14.0, body_half_height_mm=11.0):
    """(body cylinder, posterior arch) bool masks: pedicles 6 mm wide, lamina and spinous process."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    z = (k - centre_kji[0]) * spacing[0]
    y = (j - centre_kji[1]) * spacing[1]
    x = (i - centre_kji[2]) * spacing[2]
    in_height = np.abs(z) <= body_half_height_mm
    body = in_height & (x**2 + y**2 <= body_radius_mm**2)
    slab = np.abs(z) <= 7.0  # the arch is lower than the body
    pedicles = slab & (y > body_radius_mm - 3) & (y < body_radius_mm + 12) & (np.abs(np.abs(x) - 8.0) <= 3.0)
    lamina = slab & (y >= body_radius_mm + 12) & (y <= body_radius_mm + 16) & (np.abs(x) <= 11.0)
    spinous = slab & (y > body_radius_mm + 16) & (y <= body_radius_mm + 30) & (np.abs(x) <= 2.5)
    return body, (pedicles | lamina | spinous) & ~body


def synthetic_patient():
    """CT + labels: L1 and L2 (trabecular 150 HU, 2 mm cortex 700 HU), psoas 50 HU, anterior
    subcutaneous fat -100 HU behind 2 mm of skin and in front of an abdominal wall muscle, air outside."""
    shape = (40, 120, 120)
    ct = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int16)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    outline = ((j - 60) / 50.0) ** 2 + ((i - 60) / 55.0) ** 2 <= 1.0
    ct[outline] = SOFT_HU
    # anterior wall: skin 2 mm (SOFT_HU), fat 12 mm, muscle layer 8 mm
    front = np.argmax(outline, axis=1)  # first body row (j) per (k, i)
    depth = j - front[:, None, :]
    ct[outline & (depth >= 2) & (depth < 14)] = FAT_HU
    labels[outline] = LABELS["body"]
    for level, kc in (("L1", 29), ("L2", 11)):
        body, arch = _vertebra(shape, (kc, 80, 60), SPACING)
        shell = body & ~spine.erode_mm(body, 2.0, SPACING)
        ct[body] = TRAB_HU
        ct[shell | arch] = CORTEX_HU
        labels[body | arch] = vertebra_label(level)
    for side, ic in (("psoas_left", 85), ("psoas_right", 35)):
        psoas = ((j - 85) / 10.0) ** 2 + ((i - ic) / 9.0) ** 2 <= 1.0
        ct[psoas] = PSOAS_HU
        labels[psoas] = LABELS[side]
    meta = {"path": "synthetic"}
    return Volume(ct, SPACING, metadata=meta), Volume(labels, SPACING)


# kVp and age unknown: equivalent densities for 120 kVp on a half-fatty marrow base (~ the named constants)
MUSCLE_D_120, FAT_D_120 = cal.muscle_fat_densities(cal.REFERENCE_KVP, cal.REFERENCE_MARROW_FAT_FRACTION)


def hand_vbmd(spine_hu, muscle_hu=PSOAS_HU, fat_hu=FAT_HU, muscle_d=MUSCLE_D_120, fat_d=FAT_D_120):
    # vBMD = MUSCLE_d + (SPINE_ct - MUSCLE_ct) x (MUSCLE_d - FAT_d) / (MUSCLE_ct - FAT_ct)
    return muscle_d + (spine_hu - muscle_hu) * (muscle_d - fat_d) / (muscle_hu - fat_hu)


@pytest.fixture(scope="module")
def patient():
    return synthetic_patient()


@pytest.fixture(scope="module")
def analysed(patient):
    ct, labels = patient
    return pipeline.analyze(ct, labels, pipeline.AnalysisOptions())


def test_vbmd_equals_the_formula_by_hand(analysed):
    res = analysed.results
    assert res["calibration"]["muscle_hu"] == pytest.approx(PSOAS_HU)
    assert res["calibration"]["fat_hu"] == pytest.approx(FAT_HU)
    for level in ("L1", "L2"):
        entry = res["spine"]["levels"][level]
        assert entry["trabecular_hu_mean"] == pytest.approx(TRAB_HU)  # cortex fully removed
        assert entry["vbmd_mg_cm3"] == pytest.approx(hand_vbmd(TRAB_HU), rel=1e-6)
    summary = res["spine"]["summary"]
    assert summary["levels_used"] == ["L1", "L2"]
    assert summary["vbmd_mg_cm3"] == pytest.approx(hand_vbmd(TRAB_HU), rel=1e-6)
    assert summary["category"] == acr_category(hand_vbmd(TRAB_HU)) == "osteopenia"  # ~ 117.0 mg/cm3


def test_density_overrides_change_the_line(patient):
    ct, labels = patient
    options = pipeline.AnalysisOptions(muscle_density_mg_cm3=40.0, fat_density_mg_cm3=-80.0)
    res = pipeline.analyze(ct, labels, options).results
    assert res["spine"]["levels"]["L1"]["vbmd_mg_cm3"] == pytest.approx(hand_vbmd(TRAB_HU, muscle_d=40.0, fat_d=-80.0))
    assert res["calibration"]["muscle_density_mg_cm3"] == 40.0


def test_rois_lie_in_their_structures(patient, analysed):
    ct, labels = patient
    r = analysed.rois
    assert (labels.array[r["trabecular_L1"]] == vertebra_label("L1")).all()
    assert (ct.array[r["trabecular_L1"]] == TRAB_HU).all()
    assert np.isin(labels.array[r["muscle_roi"]], (LABELS["psoas_left"], LABELS["psoas_right"])).all()
    assert (ct.array[r["fat_roi"]] == FAT_HU).all()
    # anterior wall only: every fat voxel lies in front of the vertebrae
    assert np.nonzero(r["fat_roi"])[1].max() < np.nonzero(labels.array == vertebra_label("L1"))[1].min()
    assert analysed.results["tissues"]["fat_thickness_mm"] == pytest.approx(12.0, abs=1.0)


def test_edited_muscle_roi_changes_vbmd_as_the_formula_says(patient, analysed):
    """Recompute: a user paints some fat-density voxels into the muscle ROI -> lower muscle HU."""
    ct, labels = patient
    edited = dict(analysed.rois)
    muscle = edited["muscle_roi"].copy()
    fat_voxels = np.argwhere(edited["fat_roi"])[: muscle.sum() // 4]
    muscle[tuple(fat_voxels.T)] = True
    edited["muscle_roi"] = muscle
    res = pipeline.measure(ct, edited, pipeline.AnalysisOptions(), labels=labels).results
    n_m, n_f = analysed.rois["muscle_roi"].sum(), len(fat_voxels)
    muscle_hu = (n_m * PSOAS_HU + n_f * FAT_HU) / (n_m + n_f)
    assert res["calibration"]["muscle_hu"] == pytest.approx(muscle_hu, rel=1e-5)
    expected = hand_vbmd(TRAB_HU, muscle_hu=muscle_hu)
    assert res["spine"]["levels"]["L1"]["vbmd_mg_cm3"] == pytest.approx(expected, rel=1e-5)


def test_body_isolation_drops_posterior_elements():
    shape = (30, 90, 80)
    body, arch = _vertebra(shape, (15, 35, 40), SPACING)
    isolated = spine.isolate_body(body | arch, SPACING)
    assert (isolated & body).sum() >= 0.95 * body.sum()
    # only pedicle roots beside the posterior wall remain (~5 %); nothing behind the wall
    assert (isolated & arch).sum() <= 0.08 * arch.sum()
    assert np.nonzero(isolated)[1].max() <= 35 + 14 + 1
    roi, _ = spine.trabecular_roi(isolated, SPACING, spine.DEFAULT_EROSION_RADIUS_MM)
    assert roi.any() and not (roi & arch).any()
    # with a given body mask, the intersection is used
    given = spine.isolate_body(body | arch, SPACING, body_mask=body)
    assert np.array_equal(given, body)


@pytest.mark.parametrize("spacing", [(3.0, 0.8, 0.8), (0.8, 0.8, 3.0), (1.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_erosion_radius_is_in_mm_under_anisotropic_spacing(spacing):
    mask = np.zeros((24, 40, 40), dtype=bool)
    mask[4:20, 5:35, 5:35] = True
    eroded = spine.erode_mm(mask, 3.2, spacing)
    # equal to a binary erosion with the library's ball kernel (outside the array counts as outside)
    reference = ndi.binary_erosion(mask, ball_kernel(3.2, spacing), border_value=0)
    assert np.array_equal(eroded, reference)
    # layers removed per side: the first n with n * spacing > 3.2 survives
    for axis, s in enumerate(spacing):
        removed = int(np.floor(3.2 / s + 1e-9))
        profile = eroded.any(axis=tuple(a for a in range(3) if a != axis))
        first = int(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0][0])
        assert int(np.nonzero(profile)[0][0]) - first == removed


def test_thin_body_keeps_a_core_and_is_flagged():
    body = np.zeros((10, 20, 20), dtype=bool)
    body[3:5, 5:15, 5:15] = True  # 2 slices of 3 mm: no voxel is more than 3.2 mm inside in z
    roi, radius = spine.trabecular_roi(body, (3.0, 1.0, 1.0), 3.2)
    assert roi.sum() >= spine.MIN_ROI_VOXELS and (roi <= body).all()
    assert radius < 3.2
    ct = Volume(np.zeros(body.shape, np.float32), (3.0, 1.0, 1.0))
    m = spine.measure_level(ct, "L1", roi, body, body, 3.2, radius)
    codes = {f["code"] for f in qc.level_flags("L1", m.as_dict())}
    assert "erosion_reduced" in codes and "roi_too_small" in codes


def test_heights_and_fracture_flag():
    shape = (40, 60, 60)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    box = (np.abs(i - 30) <= 12) & (j >= 15) & (j <= 45)
    # wedge: 24 mm tall at the back, 12 mm at the front (1 mm slices)
    top = 8 + 12 + (j - 15) / 30.0 * 12
    wedge = box & (k >= 8) & (k < top)
    h = spine.body_heights_mm(wedge, (1.0, 1.0, 1.0))
    assert h["posterior"] == pytest.approx(24, abs=1.5) and h["anterior"] <= 16
    ct = Volume(np.zeros(shape, np.float32), (1.0, 1.0, 1.0))
    m = spine.measure_level(ct, "L1", wedge, wedge, wedge).as_dict()
    assert m["height_loss"] >= 0.3
    assert "height_loss" in {f["code"] for f in qc.level_flags("L1", m)}
    square = box & (k >= 8) & (k < 32)
    m2 = spine.measure_level(ct, "L1", square, square, square).as_dict()
    assert m2["height_loss"] == pytest.approx(0.0) and not qc.level_flags("L1", m2)


def test_hu_method_reports_no_vbmd(patient):
    ct, labels = patient
    res = pipeline.analyze(ct, labels, pipeline.AnalysisOptions(calibration="hu")).results
    assert res["spine"]["levels"]["L1"]["vbmd_mg_cm3"] is None
    assert res["spine"]["levels"]["L1"]["trabecular_hu_mean"] == pytest.approx(TRAB_HU)
    assert res["spine"]["summary"]["category"] is None and "not calibrated" in res["spine"]["summary"]["note"]
    assert res["calibration"]["slope"] is None


def test_phantom_method_from_params_and_file(patient, tmp_path):
    ct, labels = patient
    line = CalibrationSettings(slope=0.8, intercept=-5.0)
    opts = pipeline.AnalysisOptions(calibration="phantom", calibration_settings=line)
    res = pipeline.analyze(ct, labels, opts).results
    assert res["spine"]["levels"]["L2"]["vbmd_mg_cm3"] == pytest.approx(-5.0 + 0.8 * TRAB_HU)
    f = tmp_path / "calib.json"
    f.write_text('{"slope": 0.5, "intercept": 10.0}')
    opts = pipeline.AnalysisOptions(calibration="phantom", calibration_settings=CalibrationSettings(file=str(f)))
    assert pipeline.analyze(ct, labels, opts).results["spine"]["summary"]["vbmd_mg_cm3"] == pytest.approx(85.0)
    with pytest.raises(InputError, match="slope and an intercept"):
        pipeline.analyze(ct, labels, pipeline.AnalysisOptions(calibration="phantom"))
    with pytest.raises(InputError, match="unknown calibration"):
        pipeline.analyze(ct, labels, pipeline.AnalysisOptions(calibration="nonsense"))


def test_no_vertebra_and_empty_rois_fail_clearly(patient):
    ct, labels = patient
    empty = labels.like(np.where(labels.array == LABELS["body"], LABELS["body"], 0).astype(np.int16))
    with pytest.raises(SegmentationError, match="no vertebra"):
        pipeline.derive_rois(ct, empty, pipeline.AnalysisOptions())
    good = pipeline.derive_rois(ct, labels, pipeline.AnalysisOptions())
    good["muscle_roi"] = np.zeros_like(good["muscle_roi"])
    with pytest.raises(SegmentationError, match="muscle ROI"):
        pipeline.measure(ct, good, pipeline.AnalysisOptions())


def test_missing_level_cut_level_and_summary_fallback(patient):
    ct, labels = patient
    only_l2 = labels.like(np.where(labels.array == vertebra_label("L1"), 0, labels.array).astype(np.int16))
    res = pipeline.analyze(ct, only_l2).results
    assert res["spine"]["summary"]["levels_used"] == ["L2"]
    assert "L1" in res["spine"]["summary"]["note"] or "only L2" in res["spine"]["summary"]["note"]
    assert any(q["code"] == "level_missing" and "L1" in q["message"] for q in res["qc"])
    # crop the top slices through L1: it is then cut by the field of view and flagged
    cropped_ct = Volume(ct.array[:32], SPACING, metadata=dict(ct.metadata))
    cropped_lab = Volume(labels.array[:32], SPACING)
    res = pipeline.analyze(cropped_ct, cropped_lab).results
    assert res["spine"]["levels"]["L1"]["cut_by_fov"] is True
    assert any(q["code"] == "level_cut_by_fov" for q in res["qc"])


def test_contrast_and_metal_flags(patient):
    ct, labels = patient
    arr, lab = ct.array.copy(), labels.array.copy()
    aorta = np.zeros(arr.shape, bool)
    aorta[:, 62:68, 50:56] = True
    arr[aorta], lab[aorta] = 250.0, LABELS["aorta"]
    arr[20, 95, 60] = 3000.0  # metal 15 mm behind L1/L2's ROIs
    res = pipeline.analyze(Volume(arr, SPACING, metadata={"contrast_agent": "Ultravist"}), Volume(lab, SPACING))
    codes = [q["code"] for q in res.results["qc"]]
    assert codes.count("contrast") == 2 and "metal_near_roi" in codes
    assert res.results["spine"]["levels"]["L1"]["exclusion_reasons"] == ["metal_near_roi"]


def test_reference_densities_match_the_materials_model():
    from OpportunisticBMDLib import materials

    beam = materials.Beam(kvp=cal.REFERENCE_KVP)
    base = materials.trabecular_bone(0.0, cal.REFERENCE_MARROW_FAT_FRACTION)
    lean_d = materials.ha_equivalent_mg_cm3("muscle", beam, base=base)
    fat_d = materials.ha_equivalent_mg_cm3("adipose", beam, base=base)
    # the psoas holds 6.9 % adipose tissue (older adults, Sollmann 2020): attenuation mixes linearly
    f = cal.PSOAS_FAT_FRACTION_OLDER
    muscle_d = (1 - f) * lean_d + f * fat_d
    assert lean_d - muscle_d == pytest.approx(f * (lean_d - fat_d)) and 6.0 < lean_d - muscle_d < 9.0
    assert cal.MUSCLE_DENSITY_MG_CM3 == pytest.approx(muscle_d, abs=0.1)
    assert cal.FAT_DENSITY_MG_CM3 == pytest.approx(fat_d, abs=0.1)
    assert cal.muscle_fat_densities() == pytest.approx((muscle_d, fat_d))
    # harder beam: both further from the base (muscle up, fat down); fattier base: both up
    muscle_140, fat_140 = cal.muscle_fat_densities(140.0, 0.5)
    assert muscle_140 > muscle_d and fat_140 < fat_d
    assert all(a > b for a, b in zip(cal.muscle_fat_densities(120.0, 0.7), (muscle_d, fat_d), strict=True))


def test_muscle_fat_densities_follow_header_kvp_and_age(patient):
    ct, labels = patient
    unknown = pipeline.analyze(ct, labels, pipeline.AnalysisOptions()).results
    assert unknown["calibration"]["details"]["kvp_source"] == "assumed"
    assert "kvp_assumed" in [q["code"] for q in unknown["qc"]]
    header_ct = ct.like(ct.array, **ct.metadata, kvp="80")  # as io.read_ct gives DICOM tag KVP
    options = pipeline.AnalysisOptions(patient_age=70.0)
    known = pipeline.analyze(header_ct, labels, options).results
    calib = known["calibration"]
    from OpportunisticBMDLib.calibration.composition import expected_marrow_fat_fraction

    fat_fraction = round(expected_marrow_fat_fraction(70.0), 3)
    assert calib["details"]["kvp"] == 80.0 and calib["details"]["kvp_source"] == "header"
    assert calib["details"]["base_marrow_fat_fraction"] == fat_fraction
    assert calib["details"]["psoas_fat_fraction"] == cal.PSOAS_FAT_FRACTION_OLDER
    assert (calib["muscle_density_mg_cm3"], calib["fat_density_mg_cm3"]) == pytest.approx(
        cal.muscle_fat_densities(80.0, fat_fraction, cal.PSOAS_FAT_FRACTION_OLDER))
    # a young patient's psoas is leaner (4.5 %): on the same marrow base it is assigned a higher density
    young = pipeline.analyze(header_ct, labels, pipeline.AnalysisOptions(patient_age=25.0)).results["calibration"]
    young_marrow = young["details"]["base_marrow_fat_fraction"]
    assert young["details"]["psoas_fat_fraction"] == cal.PSOAS_FAT_FRACTION_YOUNG
    assert young["muscle_density_mg_cm3"] == pytest.approx(
        cal.muscle_fat_densities(80.0, young_marrow, cal.PSOAS_FAT_FRACTION_YOUNG)[0])
    assert young["muscle_density_mg_cm3"] > cal.muscle_fat_densities(80.0, young_marrow)[0]
    # a measured psoas fat fraction (e.g. from MRI) overrides the typical value
    own = pipeline.analyze(header_ct, labels, pipeline.AnalysisOptions(
        patient_age=70.0, calibration_settings=CalibrationSettings(psoas_fat_fraction=0.0))).results["calibration"]
    assert own["details"]["psoas_fat_source"] == "user"
    assert own["muscle_density_mg_cm3"] == pytest.approx(cal.muscle_fat_densities(80.0, fat_fraction, 0.0)[0])
    assert "kvp_assumed" not in [q["code"] for q in known["qc"]]
    # user overrides still win
    options = pipeline.AnalysisOptions(muscle_density_mg_cm3=40.0, fat_density_mg_cm3=-80.0)
    calib = pipeline.analyze(header_ct, labels, options).results["calibration"]
    assert (calib["muscle_density_mg_cm3"], calib["fat_density_mg_cm3"]) == (40.0, -80.0)


def test_acr_categories_and_csv_row(analysed):
    assert acr_category(120.1) == "normal" and acr_category(120.0) == "osteopenia"
    assert acr_category(80.0) == "osteopenia" and acr_category(79.9) == "osteoporosis"
    assert acr_category(None) is None and acr_category(float("nan")) is None
    row = csv_row(analysed.results)
    assert row["summary_vbmd_mg_cm3"] == analysed.results["spine"]["summary"]["vbmd_mg_cm3"]
    assert row["L1_trabecular_hu_mean"] == pytest.approx(TRAB_HU) and row["summary_levels_used"] == "L1-L2"


def test_fat_layer_is_between_skin_and_muscle(patient):
    ct, labels = patient
    spine_mask = labels.array == vertebra_label("L1")
    layer = rois.anterior_fat_roi(ct, (0, ct.shape[0] - 1), spine_mask)
    assert layer.mask.any() and (ct.array[layer.mask] == FAT_HU).all()
    assert layer.thickness_mm == pytest.approx(12.0, abs=1.0)


def test_without_labels_and_without_models_says_pass_seg(patient, monkeypatch):
    import sys

    from OpportunisticBMDLib.errors import ModelError

    ct, _ = patient
    monkeypatch.setitem(sys.modules, "OpportunisticBMDLib.models.inference", None)  # models not installed
    with pytest.raises(ModelError, match="--seg LABELS"):
        pipeline.analyze(ct, None, pipeline.AnalysisOptions())


def test_flagged_levels_are_left_out_of_the_summary(patient):
    """A level whose ROI caught dense bone (or metal nearby) is measured but not averaged."""
    ct, labels = patient
    arr = ct.array.copy()
    roi_l1 = pipeline.derive_rois(ct, labels, pipeline.AnalysisOptions())["trabecular_L1"]
    arr[roi_l1] = 600.0  # sclerotic L1
    res = pipeline.analyze(Volume(arr, SPACING, metadata=dict(ct.metadata)), labels).results
    l1 = res["spine"]["levels"]["L1"]
    assert l1["excluded"] and l1["exclusion_reasons"] == ["trabecular_hu_implausible"]
    assert res["spine"]["summary"]["levels_used"] == ["L2"]
    assert res["spine"]["summary"]["vbmd_mg_cm3"] == pytest.approx(hand_vbmd(TRAB_HU))
