"""The browser app's workflow without a browser: the same objects ``obmd web`` serves, driven in-process.

Real shared CT with its TotalSegmentator labels, trame-slicer's scene and segment editor, the shared
BMDLogic. Checks what the page relies on: analysis in the worker thread fills the page state; an edit
is noticed only when voxels change; Recompute and the calibration selector give consistent numbers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def app(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from OpportunisticBMDLib.web.offscreen import configure_offscreen_rendering

    configure_offscreen_rendering()
    from trame.app import get_server

    from OpportunisticBMDLib.web.app import OBMDWebApp
    from OpportunisticBMDLib.web.cases import load_ct_case

    out = tmp_path_factory.mktemp("web")
    ct, labels, name = load_ct_case(shared_data / "ct.nii.gz", shared_data / "ct_seg_total.nii.gz")
    server = get_server("obmd-web-test", client_type="vue3")
    web = OBMDWebApp(server, out_dir=out / "reports", dataset_dir=out / "dataset")
    web.workflow.load_volume(ct, name, labels)
    asyncio.run(web.workflow.analyze())
    return web


def _calibration(state) -> dict:
    return {row["key"]: row["raw"] for row in state.obmd_view["calibration"]}


def test_analysis_fills_the_page_state(app) -> None:
    state = app.state
    assert state.obmd_error == "" and state.obmd_has_results and not state.obmd_busy and not state.obmd_stale
    levels = {row["level"]: row for row in state.obmd_view["levels"]}
    assert {"L1", "L2"} <= set(levels)
    calibration = _calibration(state)
    for row in levels.values():  # the table is the calibration line at the trabecular HU
        assert row["vbmd_mg_cm3"] == pytest.approx(calibration["slope"] * row["hu_mean"] + calibration["intercept"],
                                                   abs=1e-6)
    ids = [item["id"] for item in state.obmd_roi_segments]
    assert ids[:2] == ["muscle_roi", "fat_roi"] and "trabecular_L1" in ids


def test_edit_is_noticed_only_when_voxels_change_then_recompute(app) -> None:
    import slicer

    from OpportunisticBMDLib.mrml import edits, segment_arrays, volumes

    workflow, state = app.workflow, app.state
    case = workflow.case
    seg = case.outputs.roi_segmentation_node
    assert not workflow.check_edit("muscle_roi")  # nothing changed yet
    muscle_before = _calibration(state)["muscle_hu"]
    mask = segment_arrays.segment_mask(seg, "muscle_roi", case.volume_node)
    kept = mask.copy()
    kept[:, :, : mask.shape[2] // 2] = False  # erase one side of the psoas ROI
    assert 0 < kept.sum() < mask.sum()
    slicer.util.updateSegmentBinaryLabelmapFromArray(kept.astype(np.uint8), seg, "muscle_roi", case.volume_node)
    assert workflow.check_edit("muscle_roi")
    assert state.obmd_stale and state.obmd_edited == ["muscle_roi"] and edits.is_edited(seg, "muscle_roi")
    asyncio.run(app.recompute())
    assert not state.obmd_stale and state.obmd_error == ""
    muscle_after = _calibration(state)["muscle_hu"]
    expected = float(case.ct.array[volumes.node_array_to_ours(kept, case.volume_node)].mean())
    assert muscle_after == pytest.approx(expected, abs=1e-3) and muscle_after != pytest.approx(muscle_before)
    assert not workflow.check_edit("muscle_roi")  # measured again: no longer out of date


def test_calibration_selector_recomputes(app) -> None:
    state = app.state
    summary_muscle_fat = state.obmd_view["summary"]["vbmd_mg_cm3"]
    asyncio.run(app.set_calibration("internal-multi"))
    assert _calibration(state)["method"] == "internal-multi" and state.obmd_error == ""
    assert state.obmd_view["summary"]["vbmd_mg_cm3"] != pytest.approx(summary_muscle_fat)
    asyncio.run(app.set_calibration("muscle-fat"))
    assert state.obmd_view["summary"]["vbmd_mg_cm3"] == pytest.approx(summary_muscle_fat)


def test_composition_fields_recompute(app) -> None:
    """The patient's marrow fat given (percent, as typed in the page): the line's base moves and its error
    leaves the stated SD; blank returns to the age-typical base."""
    state = app.state
    typical = _calibration(state)
    assert 0.3 <= typical["marrow_fat_fraction"] <= 0.75
    summary_typical = state.obmd_view["summary"]["vbmd_mg_cm3"]
    def right_neck() -> float:
        hip = app.workflow.case.outputs.result.results["hip"]["right"]
        return hip["neck"]["abmd_g_cm2"]

    neck_typical = right_neck()
    asyncio.run(app.set_composition("", "75"))
    given = _calibration(state)
    assert given["marrow_fat_fraction"] == pytest.approx(0.75) and state.obmd_error == ""
    # fattier marrow than assumed: the same HU is more mineral (QCT's fat error, now corrected for)
    assert state.obmd_view["summary"]["vbmd_mg_cm3"] > summary_typical
    # the hip is redone with the new calibration (not the last Analyze's numbers with a stale note)
    assert right_neck() > neck_typical
    assert "hip_not_recomputed" not in {q["code"] for q in app.workflow.case.outputs.result.results["qc"]}
    asyncio.run(app.set_composition("120", ""))  # refused with the reason, nothing changed
    assert "Psoas fat '120'" in state.obmd_error and _calibration(state)["marrow_fat_fraction"] == pytest.approx(0.75)
    asyncio.run(app.set_composition("", ""))
    assert _calibration(state)["marrow_fat_fraction"] == pytest.approx(typical["marrow_fat_fraction"])
    assert state.obmd_view["summary"]["vbmd_mg_cm3"] == pytest.approx(summary_typical)
    assert right_neck() == pytest.approx(neck_typical)


def test_save_report_and_export(app) -> None:
    import json

    report = asyncio.run(app.workflow.save_report())
    saved = json.loads((report / "results.json").read_text())
    assert saved["spine"]["summary"]["vbmd_mg_cm3"] == pytest.approx(app.state.obmd_view["summary"]["vbmd_mg_cm3"])
    files = app.workflow.export_training_case()
    data = json.loads(files["dataset_json"].read_text())
    assert files["image"].exists() and files["label"].exists() and data["numTraining"] == 1


def test_delete_is_asked_marks_edited_and_undo_clears(app) -> None:
    """The trash icon only asks; a confirmed delete marks the segment edited (deleted) and the numbers out of
    date; the editor's Undo back to what Analyze wrote clears both the mark and the segment's edited tag."""
    from OpportunisticBMDLib.mrml import edits

    state, workflow = app.state, app.workflow
    seg = workflow.case.outputs.roi_segmentation_node
    edited_before = list(state.obmd_edited)
    app.ask_delete_segment("trabecular_L3")
    assert state.obmd_confirm_delete["id"] == "trabecular_L3" and seg.GetSegmentation().GetSegment("trabecular_L3")
    workflow.cancel_delete_segment()
    assert state.obmd_confirm_delete is None and seg.GetSegmentation().GetSegment("trabecular_L3") is not None
    app.ask_delete_segment("trabecular_L3")
    app.confirm_delete_segment()
    assert seg.GetSegmentation().GetSegment("trabecular_L3") is None
    assert "trabecular_L3" in state.obmd_edited and state.obmd_deleted == ["trabecular_L3"] and state.obmd_stale
    app.editor_logic._undo_stack.undo()  # what the editor's Undo button does
    workflow.refresh_edits()
    assert seg.GetSegmentation().GetSegment("trabecular_L3") is not None
    assert state.obmd_edited == edited_before and state.obmd_deleted == [] and not state.obmd_stale
    assert not edits.is_edited(seg, "trabecular_L3")


def test_dicom_case_report_holds_dicom_and_the_zip_too(app, shared_data: Path) -> None:
    """Issue 16: a CT the app read from a DICOM folder (``obmd web SERIES``): Save report writes OUT/dicom as
    ``obmd analyze`` does, and "Download report (zip)" (the real aiohttp route) carries it. Last in this module:
    it replaces the case the tests above share."""
    import io
    import json
    import zipfile
    from types import SimpleNamespace

    import pydicom
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from OpportunisticBMDLib.web.cases import load_ct_case

    workflow = app.workflow
    ct, labels, name = load_ct_case(shared_data / "dicom_upper_abdomen" / "series",
                                    shared_data / "dicom_upper_abdomen" / "ct_seg_total.nii.gz")
    workflow.load_volume(ct, name, labels)
    asyncio.run(workflow.analyze())
    report = asyncio.run(workflow.save_report())
    assert report is not None and app.state.obmd_error == ""
    assert "with DICOM seg.dcm, sr.dcm, report_pdf.dcm" in app.state.obmd_message
    saved = json.loads((report / "results.json").read_text())
    seg = pydicom.dcmread(report / "dicom" / "seg.dcm")
    assert seg.StudyInstanceUID == saved["dicom"]["study_instance_uid"]

    async def download(url: str) -> bytes:
        server = web.Application()
        app.downloads.install(SimpleNamespace(app=server, host="127.0.0.1"))
        async with TestClient(TestServer(server, host="127.0.0.1")) as client:
            response = await client.get(url)
            assert response.status == 200
            return await response.read()

    with zipfile.ZipFile(io.BytesIO(asyncio.run(download(app.state.obmd_report_urls["zip"])))) as archive:
        names = set(archive.namelist())
        for part in ("dicom/seg.dcm", "dicom/sr.dcm", "dicom/report_pdf.dcm", "report.pdf", "results.json"):
            assert f"{report.name}/{part}" in names, part
        assert archive.read(f"{report.name}/dicom/seg.dcm") == (report / "dicom" / "seg.dcm").read_bytes()
