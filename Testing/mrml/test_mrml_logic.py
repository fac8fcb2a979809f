"""BMDLogic on a real headless MRML scene (slicer-core) with the shared real CT and its
TotalSegmentator labels: analyze, check the table, edit the muscle ROI with the segment editor
logic, recompute, check the change against the muscle-fat formula by hand, reload from .mrb,
report and background job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("slicer")
pipeline = pytest.importorskip("OpportunisticBMDLib.pipeline")

from mrml_helpers import assert_segments_equal_masks, edit_segment, load_seg_as_segmentation  # noqa: E402

from OpportunisticBMDLib.io import read_ct, read_labels  # noqa: E402
from OpportunisticBMDLib.labels import LABELS, totalseg_to_ours  # noqa: E402
from OpportunisticBMDLib.mrml import edits, labelmaps, segment_arrays, segments, tables, volumes  # noqa: E402
from OpportunisticBMDLib.mrml import scene as mrml_scene  # noqa: E402
from OpportunisticBMDLib.mrml.background_job import AnalysisJob  # noqa: E402
from OpportunisticBMDLib.mrml.logic import BMDLogic  # noqa: E402
from OpportunisticBMDLib.report_folder import ReportFolderOptions  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def case(shared_data):
    """Scene with the CT and TotalSegmentator labels as nodes, analysed once; plus the direct result."""
    mrml_scene.create_headless_scene()
    ct_node = mrml_scene.load_volume(shared_data / "ct.nii.gz", name="ct")
    labels_node = mrml_scene.load_volume(shared_data / "ct_seg_total.nii.gz", name="ct labels", labelmap=True)
    ct = read_ct(shared_data / "ct.nii.gz")
    total = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct)
    labels = total.like(totalseg_to_ours(total.array))
    logic = BMDLogic()
    outputs = logic.analyze(ct_node, labels_node)
    direct = pipeline.analyze(ct, labels, pipeline.AnalysisOptions())
    return {"ct_node": ct_node, "labels_node": labels_node, "ct": ct, "labels": labels, "logic": logic,
            "outputs": outputs, "direct": direct}


def _vbmd_by_level(table_node) -> dict[str, float]:
    return {r["Level"]: r["vBMD"] for r in tables.table_rows(table_node) if not r["Level"].startswith("Summary")}


def test_analyze_table_matches_pipeline(case):
    outputs, direct = case["outputs"], case["direct"]
    table = outputs.table_node
    rows = tables.table_rows(table)
    levels = [r["Level"] for r in rows if not r["Level"].startswith("Summary")]
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= set(levels)
    assert levels == list(direct.results["spine"]["levels"])
    assert rows[-1]["Level"].startswith("Summary")
    assert table.GetColumnUnitLabel("vBMD") == "mg/cm3" and table.GetColumnUnitLabel("HU mean") == "HU"
    by_level = _vbmd_by_level(table)
    for level in ("T12", "L1", "L2", "L3", "L4", "L5"):
        expected = direct.results["spine"]["levels"][level]["vbmd_mg_cm3"]
        assert np.isfinite(by_level[level]) and by_level[level] == pytest.approx(expected, rel=1e-12)
        assert 20 < by_level[level] < 400  # plausible adult trabecular vBMD
    assert table.GetAttribute("OBMD.calibration.method") == direct.results["calibration"]["method"]


def test_analyze_segments_are_the_pipeline_rois(case):
    outputs, direct, ct_node, ct = case["outputs"], case["direct"], case["ct_node"], case["ct"]
    seg = outputs.roi_segmentation_node
    names = {seg.GetSegmentation().GetSegment(i).GetName() for i in seg.GetSegmentation().GetSegmentIDs()}
    assert {"Trabecular ROI L1", "Muscle ROI (psoas)", "Fat ROI (subcutaneous)"} <= names
    back = segments.segmentation_to_rois(seg, ct_node, ct)
    for key, mask in direct.rois.items():
        assert np.array_equal(back[key], mask), key
    assert outputs.markups_node.GetNumberOfControlPoints() >= 6  # one centre per vertebra T11..L5
    sh = __import__("slicer").vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ct_node.GetScene())
    parent = sh.GetItemParent(sh.GetItemByDataNode(ct_node))
    assert sh.GetItemParent(sh.GetItemByDataNode(outputs.table_node)) == parent


def test_edit_muscle_roi_then_recompute_changes_vbmd_as_the_formula_says(case):
    ct_node, ct, logic, outputs = case["ct_node"], case["ct"], case["logic"], case["outputs"]
    seg = outputs.roi_segmentation_node
    before = tables.table_to_results(outputs.table_node)
    muscle = segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"]
    # Erase the psoas ROI on the patient's left (axis i runs right -> left): a real user edit.
    midline_i = int(np.median(np.argwhere(case["labels"].array == LABELS["vertebra_L1"])[:, 2]))
    erase = np.zeros(ct.shape, bool)
    erase[:, :, midline_i:] = True
    edit_segment(seg.GetScene(), seg, "muscle_roi", ct_node, volumes.ours_to_node_array(erase, ct, ct_node))
    edited_mask = muscle & ~erase
    assert 0 < edited_mask.sum() < muscle.sum()

    out = logic.recompute(ct_node, seg, table_node=outputs.table_node)
    assert out.table_node is outputs.table_node and edits.is_edited(seg, "muscle_roi")
    after = tables.table_to_results(out.table_node)
    cal = after["calibration"]
    muscle_hu = float(ct.array[edited_mask].mean())
    assert cal["muscle_hu"] == pytest.approx(muscle_hu, abs=1e-3)
    assert cal["fat_hu"] == pytest.approx(before["calibration"]["fat_hu"], abs=1e-9)
    m_d, f_d, f_ct = cal["muscle_density_mg_cm3"], cal["fat_density_mg_cm3"], cal["fat_hu"]
    for level, values in before["spine"]["levels"].items():
        spine_hu = values["trabecular_hu_mean"]
        # Radiologic Practice 2024 muscle-fat formula (../shared/notes/references.md), by hand:
        expected = m_d + (spine_hu - muscle_hu) * (m_d - f_d) / (muscle_hu - f_ct)
        assert after["spine"]["levels"][level]["vbmd_mg_cm3"] == pytest.approx(expected, abs=1e-3), level
        assert after["spine"]["levels"][level]["trabecular_hu_mean"] == pytest.approx(spine_hu, abs=1e-9)
    assert cal["muscle_hu"] != pytest.approx(before["calibration"]["muscle_hu"], abs=0.05)
    assert _vbmd_by_level(out.table_node)["L1"] == pytest.approx(after["spine"]["levels"]["L1"]["vbmd_mg_cm3"])
    if before.get("hip"):  # the edit moved the line: Recompute redid the hip with it (no stale numbers)
        necks = [(side, b["neck"]["abmd_g_cm2"]) for side, b in before["hip"].items()
                 if isinstance(b, dict) and (b.get("neck") or {}).get("abmd_g_cm2") is not None]
        assert necks and all(after["hip"][side]["neck"]["abmd_g_cm2"] != pytest.approx(v, rel=1e-6)
                             for side, v in necks)
        assert "hip_not_recomputed" not in {flag["code"] for flag in after["qc"]}
        kept = logic.recompute(ct_node, seg, table_node=outputs.table_node, recompute_hip=False,
                               options={"calibration": "internal-multi"})
        kept_results = tables.table_to_results(kept.table_node)  # asked not to: kept, and said so
        assert kept_results["hip"] == after["hip"]
        assert "hip_not_recomputed" in {flag["code"] for flag in kept_results["qc"]}
        # the kept hip keeps its QC flags in the scan's list (a T-score never loses the warnings that qualify it)
        hip_flags = [flag for block in after["hip"].values() if isinstance(block, dict) for flag in block["qc"]]
        assert hip_flags and all(flag in kept_results["qc"] for flag in hip_flags) and not kept.extra["hip_recomputed"]
        logic.recompute(ct_node, seg, table_node=outputs.table_node)  # back to muscle-fat for what follows

    # Analyze again: the edited segment is kept and the numbers come from it.
    again = logic.analyze(ct_node, case["labels_node"], outputs=outputs)
    assert np.array_equal(segments.segmentation_to_rois(seg, ct_node, ct)["muscle_roi"], edited_mask)
    again_results = tables.table_to_results(again.table_node)
    assert again_results["calibration"]["muscle_hu"] == pytest.approx(muscle_hu, abs=1e-3)
    if before.get("hip"):  # Analyze redoes the hip with the calibration from the edited ROI
        assert again_results.get("hip") and "hip_not_recomputed" not in {f["code"] for f in again_results["qc"]}
    case["edited"] = {"mask": edited_mask, "results": after}


def test_mrb_reload_keeps_edits_and_numbers(case, tmp_path):
    import slicer

    if "edited" not in case:
        pytest.skip("needs the edit test first")
    path = mrml_scene.save_scene_mrb(tmp_path / "edited.mrb")
    roi_name = case["outputs"].roi_segmentation_node.GetName()
    mrml_scene.load_scene_mrb(path)
    ct_node = slicer.mrmlScene.GetFirstNodeByName("ct")
    seg = slicer.mrmlScene.GetFirstNodeByName(roi_name)
    assert edits.is_edited(seg, "muscle_roi")
    assert np.array_equal(segments.segmentation_to_rois(seg, ct_node, case["ct"])["muscle_roi"], case["edited"]["mask"])
    out = BMDLogic().recompute(ct_node, seg)
    assert out.result.results["calibration"]["muscle_hu"] == pytest.approx(
        case["edited"]["results"]["calibration"]["muscle_hu"], abs=1e-9
    )
    case.update(ct_node=ct_node, reloaded_roi=seg, reloaded=out)


def test_save_report_writes_what_obmd_analyze_writes(case, tmp_path):
    files = case["logic"].save_report(case["direct"], case["ct"], tmp_path / "report").files
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert "dicom" not in results and not (tmp_path / "report" / "dicom").exists()  # a NIfTI CT: no DICOM asked
    assert results["spine"]["levels"]["L1"]["vbmd_mg_cm3"] == pytest.approx(
        case["direct"].results["spine"]["levels"]["L1"]["vbmd_mg_cm3"]
    )
    assert all(p.exists() for p in files.values())
    # the PDF report too (Save report goes through pipeline.write_outputs), with the summary the table shows
    assert files["report.pdf"] == tmp_path / "report" / "report.pdf"
    text = " ".join(subprocess.run(["pdftotext", str(files["report.pdf"]), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    summary = results["spine"]["summary"]
    assert f"Trabecular vBMD, L1–L2: {summary['vbmd_mg_cm3']:.1f}" in text
    assert f"ACR category: {summary['category']}" in text and "Not a medical device" in text
    pictures = case["logic"].hip_picture_files(case["direct"], tmp_path / "pictures")
    assert bool(pictures) == bool(case["direct"].pictures)  # what the panel shows under the hip table
    assert all(p.suffix == ".png" and p.stat().st_size > 1000 for p in pictures.values())


def test_background_job_gives_the_same_table(case, tmp_path):
    scene, _app, _logics = mrml_scene.create_headless_scene()
    ct_node = volumes.node_from_volume(case["ct"], "bg ct")
    seg = labelmaps.labels_to_segmentation(case["labels"], ct_node)
    job = AnalysisJob.start(ct_node, seg, None, tmp_path)
    assert job.wait(120) == 0, "\n".join(job.lines[-5:])
    reported = job.poll()
    fractions = [f for f, _ in reported if f is not None]
    assert fractions and max(fractions) == 1.0, reported  # the progress bar lines were parsed
    assert job.returncode == 0 and not job.cancelled
    logic = BMDLogic()
    outputs = logic.analyze(ct_node, seg, result=job.result())
    files = logic.save_report(outputs.result, outputs.ct, tmp_path / "report").files  # from the job's result
    assert (tmp_path / "report" / "results.json").exists() and all(p.exists() for p in files.values())
    if case["direct"].pictures:
        assert job.picture_files and all(p.suffix == ".png" for p in job.picture_files.values())
    direct = case["direct"].results["spine"]["levels"]
    got = _vbmd_by_level(outputs.table_node)
    for level, values in direct.items():
        assert got[level] == pytest.approx(values["vbmd_mg_cm3"], rel=1e-9), level
    rois = segments.segmentation_to_rois(outputs.roi_segmentation_node, ct_node, case["ct"])
    assert np.array_equal(rois["muscle_roi"], case["direct"].rois["muscle_roi"])


def test_module_self_test_runs_headless():
    """The Slicer module's self-test body (a digital patient, edit, recompute) on slicer-core."""
    from OpportunisticBMDLib.mrml.self_test import run_self_test

    mrml_scene.create_headless_scene()
    figures = run_self_test(seed=1, region="spine")
    assert {"L1", "L2"} <= set(figures["levels"])
    assert figures["muscle_hu_after"] != pytest.approx(figures["muscle_hu_before"], abs=0.01)


def test_background_job_cancel(case, tmp_path):
    ct_node = volumes.node_from_volume(case["ct"], "cancel ct")
    job = AnalysisJob.start(ct_node, None, None, tmp_path)  # no labels: would run the models
    child = job.proc.pid
    job.cancel()
    assert job.wait(60) != 0 and job.cancelled
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    job.cleanup()
    assert not tmp_path.exists()


def test_recompute_redoes_the_hip_when_only_the_psoas_fat_changed(tmp_path):
    """Under an in-scan pad the psoas fat moves the hip's anchor, not the line: Recompute must still redo
    the hip (not keep the last Analyze's numbers without a note)."""
    from OpportunisticBMDLib.cli import main

    out = tmp_path / "dp"
    assert main(["phantom", "--seed", "502", "--fov-levels", "T12", "femur", "--calibration-pad",
                 "--spacing-mm", "2", "2", "2.5", "--out", str(out)]) == 0
    mrml_scene.create_headless_scene()
    ct_node = mrml_scene.load_volume(out / "ct.nii.gz", name="dp")
    ct = read_ct(out / "ct.nii.gz")
    seg = labelmaps.labels_to_segmentation(read_labels(out / "labels.nii.gz", like=ct), ct_node, name="dp labels")
    logic = BMDLogic()
    first = logic.analyze(ct_node, seg)
    before = tables.table_to_results(first.table_node)
    assert before["calibration"]["method"] == "inscan"
    given = {"calibration_params": {"psoas_fat_fraction": 0.12}}
    again = logic.recompute(ct_node, first.roi_segmentation_node, seg, given, table_node=first.table_node)
    after = again.result.results
    assert after["calibration"]["slope"] == pytest.approx(before["calibration"]["slope"])  # the line did not move
    for side in ("left", "right"):
        anchor = after["hip"][side]["calibration"]["pad_anchor"]
        assert anchor["psoas_fat_source"] == "user" and anchor["psoas_fat_fraction"] == 0.12
        assert after["hip"][side]["neck"]["abmd_g_cm2"] != pytest.approx(before["hip"][side]["neck"]["abmd_g_cm2"],
                                                                        rel=1e-6)


def test_background_job_keeps_the_ct_header(case, tmp_path):
    """The job's copy of the CT carries the node's header (kVp, age, sex) as its sidecar, so the child
    `obmd analyze` calibrates with the same physics and age-typical fat as an in-process Analyze."""
    from OpportunisticBMDLib.io import read_ct

    ct = case["ct"].like(case["ct"].array, kvp=100.0, patient_age="071Y", patient_sex="F")
    ct_node = volumes.node_from_volume(ct, "header ct")
    AnalysisJob.start(ct_node, None, None, tmp_path)  # not run: the files it hands the child are checked
    copy = read_ct(tmp_path / "ct.nii.gz")
    assert (float(copy.metadata["kvp"]), copy.metadata["patient_age"], copy.metadata["patient_sex"]) == (
        100.0, "071Y", "F")


def test_recompute_keeps_the_models_naming_doubt_until_a_vertebra_is_edited(case):
    """Recompute reads the labels back from the scene, which carry no naming evidence: the last Analyze's
    model naming flags travel while the vertebra labels are as the model wrote them (an uncertain naming
    never backs a category after a Recompute with no edit), and stop once a user corrected a vertebra."""
    logic, ct_node = case["logic"], case["ct_node"]
    seg = labelmaps.labels_to_segmentation(case["labels"], ct_node, name="naming labels")
    outputs = logic.analyze(ct_node, seg)
    assert outputs.result.results["spine"]["summary"]["category"] == "osteopenia"
    # what an Analyze on the model's labels would have left in the table (the model itself is slow here)
    previous = json.loads(outputs.table_node.GetAttribute(tables.ATTR_RESULTS))
    previous["input"]["labels_source"] = pipeline.MODEL_LABELS_SOURCE
    previous["qc"].insert(0, {"code": "level_naming_uncertain", "severity": "warning", "message": "ribs only"})
    outputs.table_node.SetAttribute(tables.ATTR_RESULTS, json.dumps(previous))
    again = logic.recompute(ct_node, outputs.roi_segmentation_node, seg, table_node=outputs.table_node)
    summary = again.result.results["spine"]["summary"]
    assert summary["category"] is None and summary["vbmd_mg_cm3"] is None
    assert again.result.results["status"] == "not_measurable"
    assert again.result.results["input"]["labels_source"] == pipeline.MODEL_LABELS_SOURCE
    assert "level_naming_uncertain" in again.result.results["spine"]["levels"]["L1"]["invalid_reasons"]
    twice = logic.recompute(ct_node, outputs.roi_segmentation_node, seg, table_node=again.table_node)
    assert twice.result.results["spine"]["summary"]["category"] is None  # and after a second Recompute
    # the user corrects L1 (one voxel more): the naming is now theirs
    mask = segment_arrays.segment_mask(seg, "vertebra_L1", ct_node)
    k, j, i = (int(v[0]) for v in np.nonzero(mask))
    mask[k, j, i - 1] = True
    segment_arrays.write_segment_array(seg, "vertebra_L1", mask.astype(np.uint8), ct_node)
    edited = logic.recompute(ct_node, outputs.roi_segmentation_node, seg, table_node=twice.table_node)
    assert edited.result.results["spine"]["summary"]["category"] == "osteopenia"


class _DicomDatabase:
    """Slicer's DICOM database (ctkDICOMDatabase: desktop Slicer only, not in slicer-core) as the module uses
    it: the file of each SOP Instance UID it holds."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def fileForInstance(self, uid: str) -> str:  # noqa: N802 (ctk's name)
        return str(self.files.get(uid, ""))


def test_save_report_of_a_dicom_series_writes_dicom_slicer_reads_back(shared_data, tmp_path):
    """Issue 16: the shared DICOM series read by our loader into a node, analysed, saved: the node kept the
    folder it came from, so Save report writes OUT/dicom (SEG, SR, PDF) in the source's study, and the SEG
    loads back into a segmentation equal to the NIfTI masks. The same CT loaded by Slicer's DICOM module
    (only DICOM.instanceUIDs on the node) finds the series through the DICOM database."""
    import pydicom

    from OpportunisticBMDLib.dicom import sources

    series = shared_data / "dicom_upper_abdomen" / "series"
    scene, _app, _logics = mrml_scene.create_headless_scene()
    ct = read_ct(series)
    total = read_labels(shared_data / "dicom_upper_abdomen" / "ct_seg_total.nii.gz", like=ct)
    ct_node = volumes.node_from_volume(ct, "dicom ct")
    labels_node = labelmaps.labels_to_segmentation(total.like(totalseg_to_ours(total.array)), ct_node)
    logic = BMDLogic()
    outputs = logic.analyze(ct_node, labels_node)
    assert (outputs.ct.metadata["format"], outputs.ct.metadata["path"]) == ("dicom", str(series))  # node round trip
    out = tmp_path / "report"
    saved = logic.save_report(outputs.result, outputs.ct, out)
    assert saved.dicom_files == ["seg.dcm", "sr.dcm", "report_pdf.dcm"]
    assert all((out / "dicom" / name).is_file() for name in saved.dicom_files)
    results = json.loads((out / "results.json").read_text())
    source = sources.read_source_series(series)  # anonymised: the deterministic completed study UID
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm")
    assert seg.StudyInstanceUID == results["dicom"]["study_instance_uid"] == source.study_uid
    assert results["input"]["format"] == "dicom" and results["input"]["ct"] == str(series)
    assert results["dicom"]["objects"]["seg.dcm"]["sop_instance_uid"] == seg.SOPInstanceUID
    assert any("StudyInstanceUID blank" in note for note in saved.notes)
    seg_node, names = load_seg_as_segmentation(out / "dicom" / "seg.dcm", scene)
    checked = assert_segments_equal_masks(seg_node, names, out / "masks", scene)
    assert {"muscle_roi", "fat_roi"} <= set(checked)

    # Analyze in the background (the panel's default): the child read a NIfTI copy, the report names the series
    job = AnalysisJob.start(ct_node, labels_node, None, tmp_path / "job")
    assert job.wait(120) == 3 and job.finished_with_results, "\n".join(job.lines[-5:])  # 3: not measurable
    from_job = logic.analyze(ct_node, labels_node, result=job.result())
    job.cleanup()
    saved_job = logic.save_report(from_job.result, from_job.ct, tmp_path / "from-job")
    job_results = json.loads((tmp_path / "from-job" / "results.json").read_text())
    assert saved_job.dicom_files == ["seg.dcm", "sr.dcm", "report_pdf.dcm"]
    for key in ("ct", "format", "identification"):
        assert job_results["input"][key] == results["input"][key], key
    assert job_results["calibration"]["slope"] == pytest.approx(results["calibration"]["slope"], rel=1e-9)

    # Slicer's DICOM module: a node without our source attributes, its instances in the database
    files = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID): p
             for p in sorted(series.iterdir())}
    plain = volumes.node_from_volume(ct.like(ct.array), "from DICOM module")
    plain.SetAttribute(volumes.ATTR_DICOM_INSTANCES, " ".join(files))
    source_files = volumes.dicom_source_files(plain, _DicomDatabase(files))
    assert sorted(source_files) == sorted(files.values())
    plain_ct = logic.ct_volume(plain)
    assert "path" not in plain_ct.metadata
    again = logic.save_report(outputs.result, plain_ct, tmp_path / "from-database", dicom_source_files=source_files)
    seg_again = pydicom.dcmread(again.files["dicom/seg.dcm"])
    assert seg_again.StudyInstanceUID == source.study_uid and seg_again.SOPInstanceUID != seg.SOPInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in seg_again.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= set(files)
    assert volumes.dicom_source_files(plain, _DicomDatabase(dict(list(files.items())[1:]))) == []  # one missing

    # saved once more without DICOM: results.json says nothing of an earlier save's dicom/
    logic.save_report(outputs.result, outputs.ct, tmp_path / "no-dicom", options=ReportFolderOptions(dicom="never"))
    assert "dicom" not in json.loads((tmp_path / "no-dicom" / "results.json").read_text())
    assert not (tmp_path / "no-dicom" / "dicom").exists()
