"""MRML bridge round trips on a real headless slicer-core scene with the shared real CT."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer")

from mrml_helpers import edit_segment  # noqa: E402

from OpportunisticBMDLib.io import read_ct, read_labels  # noqa: E402
from OpportunisticBMDLib.labels import LABELS, totalseg_to_ours  # noqa: E402
from OpportunisticBMDLib.mrml import (  # noqa: E402
    edits,
    hierarchy,
    labelmaps,
    markups,
    segment_arrays,
    segment_names,
    segments,
    tables,
    volumes,
)
from OpportunisticBMDLib.mrml import scene as mrml_scene  # noqa: E402
from OpportunisticBMDLib.mrml.logic import BMDLogic  # noqa: E402
from OpportunisticBMDLib.volume import SourceGeometry, Volume  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def scene():
    scene, _app, _logics = mrml_scene.create_headless_scene()
    return scene


@pytest.fixture(scope="module")
def ct_node(scene, shared_data):
    return mrml_scene.load_volume(shared_data / "ct.nii.gz", name="ct")


@pytest.fixture(scope="module")
def ct(shared_data):
    return read_ct(shared_data / "ct.nii.gz")


@pytest.fixture(scope="module")
def labels(shared_data, ct):
    total = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct)
    return total.like(totalseg_to_ours(total.array))


def test_volume_node_matches_file_reader(ct_node, ct):
    volume = volumes.volume_from_node(ct_node)
    assert np.array_equal(volume.array, ct.array) and volume.array.dtype == np.float32
    assert volume.spacing_mm == ct.spacing_mm and volume.direction == ct.direction
    assert np.allclose(volume.origin_lps_mm, ct.origin_lps_mm, atol=1e-9)


def test_volume_round_trip_is_exact(scene, ct_node, ct):
    import slicer.util

    node = volumes.node_from_volume(ct, "ct copy")
    assert np.array_equal(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(ct_node))
    back = volumes.volume_from_node(node)
    assert np.array_equal(back.array, ct.array)
    assert back.origin_lps_mm == ct.origin_lps_mm and back.source_geometry == ct.source_geometry
    scene.RemoveNode(node)


def test_oblique_free_permuted_grid_puts_voxels_at_the_same_place(scene):
    """A sagittal-stored volume: a marked voxel is at the same RAS point in the node and in the Volume."""
    import vtk

    rng = np.random.default_rng(0)
    array = rng.permutation(12 * 10 * 8).reshape(12, 10, 8).astype(np.float32)  # unique values
    source = SourceGeometry(  # file axes: x = -S, y = A, z = L (permuted and flipped)
        size_xyz=(12, 10, 8), spacing_xyz_mm=(1.5, 0.7, 2.0), origin_lps_mm=(10.0, -20.0, 30.0),
        direction=(0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
    )
    import SimpleITK as sitk

    from OpportunisticBMDLib.io import volume_from_sitk

    image = sitk.GetImageFromArray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)).copy())  # file order
    image.SetSpacing(source.spacing_xyz_mm)
    image.SetOrigin(source.origin_lps_mm)
    image.SetDirection(source.direction)
    volume = volume_from_sitk(image)
    node = volumes.node_from_volume(volume, "sagittal")
    back = volumes.volume_from_node(node)
    assert np.array_equal(back.array, volume.array) and back.source_geometry == volume.source_geometry
    kji = np.array([3, 4, 5])
    value = volume.array[tuple(kji)]
    import slicer.util

    node_array = slicer.util.arrayFromVolume(node)
    hits = np.argwhere(node_array == value)
    assert len(hits) == 1
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ras = np.array(ijk_to_ras.MultiplyPoint([*hits[0][::-1].astype(float), 1.0])[:3])
    lps = volume.index_to_lps_mm(kji)
    assert np.allclose(ras * [-1, -1, 1], lps, atol=1e-6)
    scene.RemoveNode(node)


def test_labels_segmentation_round_trip(scene, ct_node, ct, labels):
    import slicer

    seg = labelmaps.labels_to_segmentation(labels, ct_node)
    segmentation = seg.GetSegmentation()
    present = sorted(int(v) for v in np.unique(labels.array) if v)
    assert segmentation.GetNumberOfSegments() == len(present)
    l1 = segmentation.GetSegment("vertebra_L1")
    assert l1.GetName() == "L1 vertebra"
    assert "66794005" in edits.segment_tag(seg, "vertebra_L1", slicer.vtkSegment.GetTerminologyEntryTagName())
    assert np.allclose(l1.GetColor(), segment_names.color_for("vertebra_L1"))
    back = labelmaps.segmentation_to_labels(seg, ct_node, ct)
    assert np.array_equal(back.array, labels.array)
    # the fast read of the shared layers equals Slicer's own export (the fallback path)
    ids = list(seg.GetSegmentation().GetSegmentIDs())
    label_ids = [LABELS[i] for i in ids]
    exported = np.asarray([0, *label_ids], dtype=np.int16)[labelmaps._export_segments(seg, ids, ct_node)]
    assert np.array_equal(labelmaps._labels_from_layers(seg, ids, label_ids, ct_node), exported)
    scene.RemoveNode(seg)


def test_totalseg_named_segments_map_to_our_schema(scene, ct_node, ct, labels):
    seg = segments.new_segmentation_node(ct_node, "ts")
    import slicer.util

    mask = labels.array == LABELS["vertebra_L2"]
    seg.GetSegmentation().AddEmptySegment("x", "vertebrae_L2")
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        volumes.ours_to_node_array(mask.astype(np.uint8), ct, ct_node), seg, "x", ct_node
    )
    back = labelmaps.segmentation_to_labels(seg, ct_node, ct)
    assert np.array_equal(back.array == LABELS["vertebra_L2"], mask) and set(np.unique(back.array)) == {0, 5}
    scene.RemoveNode(seg)


def test_segments_named_for_display_or_by_terminology_map_to_our_schema(scene, ct_node, ct, labels):
    import slicer

    seg = segments.new_segmentation_node(ct_node, "other tool")
    segmentation = seg.GetSegmentation()
    cases = {
        "a": ("L1 vertebra", None, "vertebra_L1"),
        "b": ("Segment_7", "Segmentation category and type - x~SCT^123037004^Anatomical Structure~SCT^68455001^"
                           "Iliopsoas muscle~SCT^7771000^Left~Anatomic codes - DICOM master list~^^~^^", "psoas_left"),
        "c": ("whatever", None, None),
    }
    for segment_id, (name, entry, _) in cases.items():
        segmentation.AddEmptySegment(segment_id, name)
        if entry:
            segmentation.GetSegment(segment_id).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
        segment_arrays.write_segment_array(seg, segment_id, volumes.ours_to_node_array(
            labels.array == LABELS[cases[segment_id][2] or "vertebra_L3"], ct, ct_node), ct_node)
    back = labelmaps.segmentation_to_labels(seg, ct_node, ct)
    assert set(np.unique(back.array)) == {0, LABELS["vertebra_L1"], LABELS["psoas_left"]}
    assert np.array_equal(back.array == LABELS["psoas_left"], labels.array == LABELS["psoas_left"])
    rois = segments.rois_to_segmentation({"fat_roi": labels.array == LABELS["psoas_right"]}, ct, ct_node)
    assert not labelmaps.segmentation_to_labels(rois, ct_node, ct).array.any()  # ROIs are not labels
    scene.RemoveNode(seg)
    scene.RemoveNode(rois)


def test_roi_round_trip_edit_tag_and_no_overwrite(scene, ct_node, ct, labels):
    rois = {
        "trabecular_L1": labels.array == LABELS["vertebra_L1"],
        "muscle_roi": labels.array == LABELS["psoas_left"],
        "fat_roi": np.zeros(ct.shape, bool),
    }
    rois["fat_roi"][40:45, 10:20, 30:60] = True
    seg = segments.rois_to_segmentation(rois, ct, ct_node)
    assert seg.GetSegmentation().GetSegment("muscle_roi").GetName() == "Muscle ROI (psoas)"
    assert seg.GetSegmentation().GetSegment("trabecular_L1").GetName() == "Trabecular ROI L1"
    back = segments.segmentation_to_rois(seg, ct_node, ct)
    assert set(back) == set(rois) and all(np.array_equal(back[k], rois[k]) for k in rois)
    assert edits.update_edited_tags(seg, ct_node) == []

    seen = []
    edits.watch_edits(seg, seen.append)
    erase = np.zeros(ct.shape, bool)
    erase[: ct.shape[0] // 2 + 10] = True  # inferior part of the volume
    edit_segment(scene, seg, "muscle_roi", ct_node, volumes.ours_to_node_array(erase, ct, ct_node))
    assert seen and set(seen) == {"muscle_roi"} and edits.is_edited(seg, "muscle_roi")
    edited = segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"]
    assert np.array_equal(edited, rois["muscle_roi"] & ~erase)

    # A new analysis does not overwrite the edited segment unless asked to.
    segments.rois_to_segmentation(rois, ct, ct_node, seg)
    assert np.array_equal(segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"], edited)
    segments.rois_to_segmentation(rois, ct, ct_node, seg, overwrite_edited=True)
    assert np.array_equal(segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"], rois["muscle_roi"])
    assert not edits.is_edited(seg, "muscle_roi")
    scene.RemoveNode(seg)


def test_edit_detected_by_digest_without_observer(scene, ct_node, ct, labels):
    rois = {"muscle_roi": labels.array == LABELS["psoas_right"]}
    seg = segments.rois_to_segmentation(rois, ct, ct_node)
    add = np.zeros(ct.shape, bool)
    add[50:52, 2:4, 2:4] = True  # air in front of the body: outside the psoas
    edit_segment(scene, seg, "muscle_roi", ct_node, volumes.ours_to_node_array(add, ct, ct_node), mode="add")
    assert not edits.is_edited(seg, "muscle_roi")  # no observer was installed
    assert edits.update_edited_tags(seg, ct_node) == ["muscle_roi"] and edits.is_edited(seg, "muscle_roi")
    scene.RemoveNode(seg)


RESULTS = {
    "spine": {
        "levels": {
            "T12": {"vbmd_mg_cm3": 151.5, "trabecular_hu_mean": 160.2, "trabecular_hu_median": 158.0,
                    "trabecular_hu_sd": 31.0, "voxel_count": 410, "roi_volume_mm3": 11070.0},
            "L1": {"vbmd_mg_cm3": 140.25, "trabecular_hu_mean": 150.0, "trabecular_hu_median": 149.0,
                   "trabecular_hu_sd": 29.5, "voxel_count": 455, "roi_volume_mm3": 12285.0},
        },
        "summary": {"vbmd_mg_cm3": 140.25, "levels_used": ["L1"], "category": "normal"},
    },
    "calibration": {"method": "muscle-fat", "slope": 0.8, "intercept": 1.5, "muscle_hu": 50.0, "fat_hu": -100.0},
    "qc": [{"code": "L2_missing", "severity": "info", "message": "x"}],
}


def test_results_table(scene):
    table = tables.results_to_table(RESULTS)
    rows = tables.table_rows(table)
    assert [r["Level"] for r in rows] == ["T12", "L1", "Summary (L1)"]
    assert rows[1]["vBMD"] == 140.25 and rows[0]["Voxel count"] == 410 and rows[2]["Category"] == "normal"
    assert np.isnan(rows[2]["HU SD"])
    assert table.GetColumnUnitLabel("vBMD") == "mg/cm3" and table.GetColumnUnitLabel("ROI volume") == "mm3"
    assert "trabecular" in table.GetColumnDescription("vBMD")
    assert table.GetAttribute("OBMD.calibration.slope") == "0.8"
    assert tables.table_to_results(table) == json.loads(json.dumps(RESULTS))
    tables.results_to_table(RESULTS, table)  # update in place: same rows, not appended
    assert table.GetNumberOfRows() == 3
    scene.RemoveNode(table)


def test_keypoints_round_trip(scene, ct):
    keypoints = {"L1 centre": np.array([60.0, 55.5, 61.25]), "femur head right": np.array([5.0, 40.0, 30.0])}
    node = markups.keypoints_to_markups(keypoints, ct)
    assert node.GetNumberOfControlPoints() == 2 and node.GetNthControlPointLabel(0) == "L1 centre"
    back = markups.markups_to_keypoints(node, ct)
    assert set(back) == set(keypoints)
    assert all(np.allclose(back[k], keypoints[k], atol=1e-9) for k in keypoints)
    scene.RemoveNode(node)


def test_export_training_case_appends(tmp_path, scene, shared_data, ct, labels):
    import SimpleITK as sitk

    node = mrml_scene.load_volume(shared_data / "ct.nii.gz", name="export ct")
    seg = labelmaps.labels_to_segmentation(labels, node)
    dataset = tmp_path / "Dataset501_OBMD"
    logic = BMDLogic()
    first = logic.export_training_case(node, seg, dataset)
    second = logic.export_training_case(node, seg, dataset)
    assert first["image"].name == "exportct_000_0000.nii.gz" and second["label"].name == "exportct_001.nii.gz"
    data = json.loads((dataset / "dataset.json").read_text())
    assert data["numTraining"] == 2 and data["labels"] == LABELS and data["channel_names"] == {"0": "CT"}
    assert data["file_ending"] == ".nii.gz"
    for case in ("exportct_000", "exportct_001"):
        assert (dataset / "imagesTr" / f"{case}_0000.nii.gz").exists()
    written = read_labels(second["label"], like=ct)
    assert np.array_equal(written.array, labels.array)
    image = sitk.ReadImage(str(first["image"]))
    original = sitk.ReadImage(str(shared_data / "ct.nii.gz"))
    assert image.GetSize() == original.GetSize() and np.allclose(image.GetOrigin(), original.GetOrigin(), atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original).astype(np.int16))
    with pytest.raises(FileExistsError):
        logic.export_training_case(node, seg, dataset, case_id="exportct_000")
    training = pytest.importorskip("OpportunisticBMDLib.models.training")
    assert len(training.nnunet_templates(dataset)) == 2  # what `obmd train` reads


def test_volume_without_source_geometry(scene):
    volume = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (2.0, 1.0, 0.5), (1.0, 2.0, 3.0))
    back = volumes.volume_from_node(volumes.node_from_volume(volume, "plain"))
    assert np.array_equal(back.array, volume.array) and back.origin_lps_mm == volume.origin_lps_mm
    assert back.spacing_mm == volume.spacing_mm


def test_edit_segment_voxels_counts_as_a_user_edit(scene, ct_node, ct, labels):
    rois = {"fat_roi": labels.array == LABELS["psoas_right"], "muscle_roi": labels.array == LABELS["psoas_left"]}
    seg = segments.rois_to_segmentation(rois, ct, ct_node)
    seen = []
    edits.watch_edits(seg, seen.append)
    smaller = rois["fat_roi"].copy()
    smaller[: ct.shape[0] // 2] = False
    segments.edit_segment_voxels(seg, "fat_roi", smaller, ct, ct_node)
    assert set(seen) == {"fat_roi"} and edits.is_edited(seg, "fat_roi")
    n_reports = len(seen)
    seg.GetSegmentation().GetSegment("muscle_roi").SetName("renamed")  # not an edit of the voxels
    assert len(seen) == n_reports and not edits.is_edited(seg, "muscle_roi")
    assert edits.update_edited_tags(seg, ct_node) == ["fat_roi"]
    assert np.array_equal(segments.segmentation_to_rois(seg, ct_node, ct)["fat_roi"], smaller)
    scene.RemoveNode(seg)


def test_hip_table(scene):
    results = {
        "hip": {
            "right": {
                "neck": {"abmd_g_cm2": 0.75, "area_cm2": 5.1, "bmc_g": 3.8, "t_score": -0.9,
                         "t_score_calibration_sd": 0.19},
                "total_hip": {"abmd_g_cm2": 0.85, "area_cm2": 35.0, "bmc_g": 29.8, "t_score": -0.75},
                "category": "normal",
            },
            "left": {"excluded_reason": "metal implant"},
        }
    }
    assert tables.hip_results_to_table({"spine": {}}) is None
    table = tables.hip_results_to_table(results)
    rows = tables.table_rows(table)
    assert [(r["Side"], r["Region"]) for r in rows] == [("left", "excluded"), ("right", "neck"), ("right", "total hip")]
    assert rows[0]["Category"] == "metal implant" and np.isnan(rows[0]["aBMD"])
    assert rows[1]["aBMD"] == 0.75 and rows[2]["T-score"] == -0.75 and rows[2]["Category"] == "normal"
    assert rows[1]["T-score calibration SD"] == 0.19 and np.isnan(rows[2]["T-score calibration SD"])
    assert table.GetColumnUnitLabel("aBMD") == "g/cm2" and table.GetAttribute("OBMD.TableKind") == "hip"
    scene.RemoveNode(table)


def test_scene_file_io_round_trips(tmp_path, scene, ct_node, ct, labels):
    import slicer

    seg = labelmaps.labels_to_segmentation(labels, ct_node, name="io labels")
    mrml_scene.save_node(seg, tmp_path / "labels.seg.nrrd")
    seg2 = mrml_scene.load_segmentation(tmp_path / "labels.seg.nrrd")
    assert np.array_equal(labelmaps.segmentation_to_labels(seg2, ct_node, ct).array, labels.array)
    assert seg2.GetSegmentation().GetSegment("vertebra_L1").GetName() == "L1 vertebra"

    points = markups.keypoints_to_markups({"L1 centre": np.array([60.0, 55.0, 61.0])}, ct)
    mrml_scene.save_node(points, tmp_path / "points.mrk.json")
    points2 = mrml_scene.load_markups(tmp_path / "points.mrk.json")
    assert np.allclose(markups.markups_to_keypoints(points2, ct)["L1 centre"], [60.0, 55.0, 61.0], atol=1e-6)

    mrml_scene.save_node(ct_node, tmp_path / "ct.nrrd")
    reread = mrml_scene.load_volume(tmp_path / "ct.nrrd", name="reread")
    assert np.array_equal(volumes.volume_from_node(reread).array, ct.array)
    rois = segments.rois_to_segmentation({"muscle_roi": labels.array == LABELS["psoas_left"]}, ct, ct_node)
    tag = edits.segment_tag(rois, "muscle_roi", slicer.vtkSegment.GetTerminologyEntryTagName())
    assert "68455001" in tag  # iliopsoas
    for node in (seg, seg2, points, points2, reread, rois):
        scene.RemoveNode(node)


def test_overlapping_and_empty_rois_round_trip(scene, ct_node, ct):
    a = np.zeros(ct.shape, bool)
    a[40:60, 30:50, 30:70] = True
    b = np.zeros(ct.shape, bool)
    b[50:70, 40:60, 50:90] = True  # overlaps a
    rois = {"muscle_roi": a, "fat_roi": b, "trabecular_L5": np.zeros(ct.shape, bool)}
    seg = segments.rois_to_segmentation(rois, ct, ct_node)
    back = segments.segmentation_to_rois(seg, ct_node, ct)
    assert all(np.array_equal(back[k], rois[k]) for k in rois)
    # the fast read of the internal labelmap agrees with Slicer's own export
    import slicer.util

    for key in rois:
        exported = slicer.util.arrayFromSegmentBinaryLabelmap(seg, key, ct_node) > 0
        assert np.array_equal(segment_arrays.segment_mask(seg, key, ct_node), exported), key
    scene.RemoveNode(seg)


def test_oblique_grid_round_trips(scene):
    """A gantry-tilted/oblique, flipped grid: volume, ROI segments and labels come back exactly."""
    import SimpleITK as sitk

    from OpportunisticBMDLib.io import volume_from_sitk

    angle = np.deg2rad(12.0)
    c, s_ = np.cos(angle), np.sin(angle)
    direction = np.array([[c, 0.0, s_], [0.0, -1.0, 0.0], [-s_, 0.0, c]])  # tilted about y, j flipped
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.normal(0, 100, size=(20, 30, 25)).astype(np.float32))
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((5.0, -7.0, 11.0))
    image.SetDirection(direction.ravel().tolist())
    volume = volume_from_sitk(image)
    node = volumes.node_from_volume(volume, "oblique")
    back = volumes.volume_from_node(node)
    assert np.array_equal(back.array, volume.array) and np.allclose(back.direction, volume.direction, atol=1e-12)
    roi = np.zeros(volume.shape, bool)
    roi[5:12, 3:20, 4:9] = True
    labels = volume.like(np.where(roi, LABELS["vertebra_L1"], 0).astype(np.int16))
    seg = segments.rois_to_segmentation({"trabecular_L1": roi}, volume, node)
    assert np.array_equal(segments.segmentation_to_rois(seg, node, volume)["trabecular_L1"], roi)
    label_seg = labelmaps.labels_to_segmentation(labels, node)
    assert np.array_equal(labelmaps.segmentation_to_labels(label_seg, node, volume).array, labels.array)
    for n in (seg, label_seg, node):
        scene.RemoveNode(n)


def test_outputs_go_under_the_input_study(scene, ct):
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "CT study")
    node = volumes.node_from_volume(ct, "study ct")
    sh.CreateItem(study, node)  # desktop Slicer makes this item itself
    table = tables.results_to_table({"spine": {"levels": {}, "summary": {}}})
    seg = segments.rois_to_segmentation({"muscle_roi": np.zeros(ct.shape, bool)}, ct, node)
    hierarchy.place_in_study(node, table, seg, None)
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study
    for n in (table, seg, node):
        scene.RemoveNode(n)


# Reloading a .mrb clears the scene: keep this test last in the module.
def test_mrb_keeps_edits(tmp_path, scene, ct_node, ct, labels):
    import slicer

    rois = {"muscle_roi": labels.array == LABELS["psoas_left"], "trabecular_L2": labels.array == LABELS["vertebra_L2"]}
    seg = segments.rois_to_segmentation(rois, ct, ct_node, name="mrb rois")
    erase = np.zeros(ct.shape, bool)
    erase[:, :, ct.shape[2] // 2 :] = True  # patient's left half (axis i runs right -> left)
    edit_segment(scene, seg, "muscle_roi", ct_node, volumes.ours_to_node_array(erase, ct, ct_node))
    edits.update_edited_tags(seg, ct_node)
    table = tables.results_to_table(RESULTS, name="mrb table")
    edited = segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"]
    path = mrml_scene.save_scene_mrb(tmp_path / "scene.mrb")

    mrml_scene.load_scene_mrb(path)
    seg2 = slicer.mrmlScene.GetFirstNodeByName("mrb rois")
    ct2 = slicer.mrmlScene.GetFirstNodeByName("ct")
    assert seg2 is not None and ct2 is not None
    assert edits.is_edited(seg2, "muscle_roi") and not edits.is_edited(seg2, "trabecular_L2")
    back = segments.segmentation_to_rois(seg2, ct2, ct)
    assert np.array_equal(back["muscle_roi"], edited) and edited.sum() < rois["muscle_roi"].sum()
    assert np.array_equal(back["trabecular_L2"], rois["trabecular_L2"])
    assert tables.table_to_results(slicer.mrmlScene.GetFirstNodeByName("mrb table")) == json.loads(json.dumps(RESULTS))
    assert np.array_equal(volumes.volume_from_node(ct2).array, ct.array)
    del table


@pytest.fixture(scope="module")
def small_patient(tmp_path_factory):
    """A digital patient file with its header sidecar (ct.json: KVP, PatientAge, PatientSex)."""
    from OpportunisticBMDLib.cli import main

    out = tmp_path_factory.mktemp("dp-header")
    assert main(["phantom", "--region", "spine", "--seed", "4", "--spacing-mm", "2", "2", "3", "--no-hip-truth",
                 "--out", str(out)]) == 0
    return out


def test_header_travels_with_the_node_and_reaches_the_calibration(scene, small_patient):
    """Age and kVp set the calibration's marrow base: lost between file and node, a Slicer user would get
    the 'age unknown' base and a widened SD where the CLI gets the patient's."""
    header = json.loads((small_patient / "ct.json").read_text())
    node = mrml_scene.load_volume(small_patient / "ct.nii.gz", name="dp-header")
    assert node.GetAttribute(volumes.ATTR_HEADER_PREFIX + "kvp") == str(header["KVP"])
    back = volumes.volume_from_node(node)
    assert float(back.metadata["kvp"]) == header["KVP"] and back.metadata["patient_age"] == header["PatientAge"]
    # a node the library makes from a file keeps it too
    made = volumes.volume_from_node(volumes.node_from_volume(read_ct(small_patient / "ct.nii.gz"), "dp-header-2"))
    assert made.metadata["patient_age"] == header["PatientAge"] and made.metadata["patient_sex"] == header["PatientSex"]
    labels = read_labels(small_patient / "labels.nii.gz", like=back)
    seg = labelmaps.labels_to_segmentation(labels, node, name="dp labels")
    results = BMDLogic().analyze(node, seg).result.results
    details = results["calibration"]["details"]
    assert details["kvp_source"] == "header" and details["kvp"] == header["KVP"]
    assert details["marrow_fat"]["source"] == "age-typical"  # the age reached the calibration
    cli_age = int(header["PatientAge"][:3])
    from OpportunisticBMDLib.calibration.composition import expected_marrow_fat_fraction

    assert details["base_marrow_fat_fraction"] == pytest.approx(round(expected_marrow_fat_fraction(cli_age), 3))


def test_header_from_the_dicom_database(scene, monkeypatch):
    """A series loaded by Slicer's DICOM module: the header comes from the DICOM database (a Slicer
    application service slicer-core lacks: stood in for by its one call, instanceValue(uid, 'gggg,eeee'))."""
    import slicer

    tags = {"0018,0060": "100", "0010,1010": "063Y", "0010,0040": "F ", "0008,0060": "CT"}

    class Database:
        def instanceValue(self, uid, tag):  # noqa: N802 (Slicer's name)
            assert uid == "1.2.3.4"
            return tags.get(tag, "")

    monkeypatch.setattr(slicer, "dicomDatabase", Database(), raising=False)
    node = volumes.node_from_volume(Volume(np.zeros((2, 3, 4), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "dicom")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")
    node.SetAttribute(volumes.ATTR_HEADER_PREFIX + "kvp", "120")  # an attribute already set wins
    header = volumes.header_of_node(node)
    assert header == {"kvp": "120", "patient_age": "063Y", "patient_sex": "F", "modality": "CT"}
    tags["0008,0060"] = "MR"  # an MR series is refused with the reason, as a file would be
    from OpportunisticBMDLib import pipeline
    from OpportunisticBMDLib.errors import InputError

    with pytest.raises(InputError, match="modality MR, not CT"):
        pipeline.analyze(volumes.volume_from_node(node), None)
