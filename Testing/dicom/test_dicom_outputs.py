"""Issue 16, DICOM outputs: ``obmd analyze`` on the shared real DICOM series writes OUT/dicom/ (SEG, SR) in
the source's study and frame of reference; on a NIfTI digital patient with ``--dicom-out`` also a CT
series, with hips. Every object passes dciodvfy (dicom3tools) without errors; highdicom reads the SEG and
SR back; every SEG segment covers the same physical voxels as the NIfTI mask of the same ROI; every SR
number equals results.json and a category appears only where results.json gives one."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_checks import DCIODVFY, dciodvfy, nifti_points_mm, seg_points_mm, segment_numbers, sr_numbers
from web_harness import free_port

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.dicom import sources

DICOM_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen"
SERIES, LABELS = DICOM_DIR / "series", DICOM_DIR / "ct_seg_total.nii.gz"
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) not installed")


@pytest.fixture(scope="module")
def real_out(tmp_path_factory) -> Path:
    if not SERIES.is_dir():
        pytest.fail(f"shared DICOM series missing: {SERIES}")
    out = tmp_path_factory.mktemp("real") / "out"
    # not measurable (both levels cut by the field of view): exit 3, and the DICOM outputs say so
    assert main(["analyze", str(SERIES), "--seg", str(LABELS), "--out", str(out), "--quiet"]) == 3
    return out


@pytest.fixture(scope="module")
def patient_out(tmp_path_factory) -> Path:
    patient = tmp_path_factory.mktemp("dp")
    assert main(["phantom", "--seed", "500", "--fov-levels", "L1", "femur", "--out", str(patient)]) == 0
    out = tmp_path_factory.mktemp("dp-out") / "out"
    assert main(["analyze", str(patient / "ct.nii.gz"), "--seg", str(patient / "labels.nii.gz"), "--out", str(out),
                 "--dicom-out", "--quiet"]) == 0
    return out


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _check_seg_against_masks(out: Path) -> hd.seg.Segmentation:
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    numbers = segment_numbers(seg)
    masks = sorted((out / "masks").glob("*.nii.gz"))
    assert masks and {m.name.removesuffix(".nii.gz") for m in masks} <= set(numbers)
    for mask in masks:
        expected = nifti_points_mm(mask)
        got = seg_points_mm(seg, numbers[mask.name.removesuffix(".nii.gz")])
        assert len(expected) > 0 and got.shape == expected.shape, mask.name
        np.testing.assert_allclose(got, expected, atol=0.01, err_msg=mask.name)
    return seg


def _check_levels(results: dict, report: dict, numbers: dict[str, int]) -> None:
    for level, values in results["spine"]["levels"].items():
        group = report[f"{level} trabecular ROI"]
        assert group["vBMD"] == (pytest.approx(values["vbmd_mg_cm3"]), "mg/cm3")
        assert group["112031"] == (pytest.approx(values["trabecular_hu_mean"]), "[hnsf'U]")
        assert group["118565006"] == (pytest.approx(values["roi_volume_mm3"]), "mm3")
        assert group["segment"] == numbers[f"trabecular_{level}"]
        if values["valid"]:
            assert group["text"][0] == "valid"
        else:
            assert group["text"][0].startswith("not valid: ")
            assert all(r in group["text"][0] for r in values["invalid_reasons"])


@needs_dciodvfy
def test_real_series_outputs_valid_and_in_the_source_study(real_out):
    results = _results(real_out)
    for name in ("seg.dcm", "sr.dcm", "report_pdf.dcm"):
        errors, _ = dciodvfy(real_out / "dicom" / name)
        assert errors == [], (name, errors)
    # the shared series is anonymised (blank study/series UIDs): deterministic UIDs, said in results.json
    source = sources.read_source_series(SERIES)
    assert results["dicom"]["uids_generated"] is True
    assert any("StudyInstanceUID blank" in note for note in results["dicom"]["notes"])
    assert results["dicom"]["study_instance_uid"] == source.study_uid == sources.read_source_series(SERIES).study_uid
    seg = pydicom.dcmread(real_out / "dicom" / "seg.dcm")
    report = pydicom.dcmread(real_out / "dicom" / "sr.dcm")
    assert seg.StudyInstanceUID == report.StudyInstanceUID == source.study_uid
    assert seg.FrameOfReferenceUID == pydicom.dcmread(next(SERIES.iterdir())).FrameOfReferenceUID
    assert len({seg.SeriesInstanceUID, report.SeriesInstanceUID, source.series_uid}) == 3
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= {str(ds.SOPInstanceUID) for ds in source.datasets}
    # each frame lies on the source slice it says it was derived from
    position = {str(ds.SOPInstanceUID): [float(v) for v in ds.ImagePositionPatient] for ds in source.datasets}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx(position[uid])


def test_real_series_seg_matches_masks_and_sr_matches_results(real_out):
    results = _results(real_out)
    seg = _check_seg_against_masks(real_out)
    numbers = segment_numbers(seg)
    assert {"vertebra_T11", "vertebra_T12"} <= set(numbers)
    report = sr_numbers(real_out / "dicom" / "sr.dcm")
    _check_levels(results, report, numbers)
    summary = report["spine summary"]
    assert results["status"] == "not_measurable" and results["spine"]["summary"]["category"] is None
    assert "category" not in summary and "vBMD" not in summary  # nothing results.json withholds
    assert any(t.startswith("no category: not measurable") for t in summary["text"])
    status = report["status and quality control"]["text"]
    assert "status: not_measurable" in status
    assert sum(t.startswith("qc ") for t in status) == len(results["qc"])
    cal = report["calibration"]
    assert cal["cal-slope"][0] == pytest.approx(results["calibration"]["slope"])
    assert cal["cal-intercept"][0] == pytest.approx(results["calibration"]["intercept"])
    assert report["muscle reference ROI"]["112031"][0] == pytest.approx(results["calibration"]["muscle_hu"])
    assert report["muscle reference ROI"]["segment"] == numbers["muscle_roi"]


@needs_dciodvfy
def test_nifti_patient_with_hips(patient_out):
    results = _results(patient_out)
    assert results["status"] == "complete" and results["spine"]["summary"]["category"]
    ct_files = sorted((patient_out / "dicom" / "ct").glob("*.dcm"))
    assert len(ct_files) == results["input"]["shape_kji"][0]
    for path in [patient_out / "dicom" / name for name in ("seg.dcm", "sr.dcm", "report_pdf.dcm")] + ct_files[:1]:
        errors, _ = dciodvfy(path)
        assert errors == [], (path.name, errors)
    assert results["dicom"]["uids_generated"] is True
    assert any("new study" in note for note in results["dicom"]["notes"])
    seg = _check_seg_against_masks(patient_out)
    numbers = segment_numbers(seg)
    report = sr_numbers(patient_out / "dicom" / "sr.dcm")
    _check_levels(results, report, numbers)
    summary = results["spine"]["summary"]
    group = report["spine summary " + "-".join(summary["levels_used"])]
    assert group["vBMD"] == (pytest.approx(summary["vbmd_mg_cm3"]), "mg/cm3")
    assert group["category"].lower() == summary["category"]
    for side in ("left", "right"):
        block = results["hip"][side]
        assert report[f"{side} hip category"]["category"].lower() == block["category"]
        for region in ("neck", "trochanter", "intertrochanter", "total_hip"):
            got = report[f"{side} hip {region.replace('_', ' ')}"]
            assert got["aBMD"] == (pytest.approx(block[region]["abmd_g_cm2"]), "g/cm2")
            for key, name in (("t_score", "T-score"), ("z_score", "Z-score")):  # absent where results.json has null
                assert (name in got) == (block[region][key] is not None), (side, region, key)
                if name in got:
                    assert got[name][0] == pytest.approx(block[region][key])
            assert got["segment"] == numbers[f"hip_{region}_roi_{side}"]
        assert "T-score" in report[f"{side} hip neck"] and "T-score" in report[f"{side} hip total hip"]


def test_encapsulated_pdf_is_the_report(real_out):
    """OUT/dicom/report_pdf.dcm holds OUT/report.pdf byte for byte, in the source's study, as a DOC series."""
    back = pydicom.dcmread(real_out / "dicom" / "report_pdf.dcm")
    data = (real_out / "report.pdf").read_bytes()
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf" and back.Modality == "DOC"
    assert back.EncapsulatedDocument[: len(data)] == data and back.EncapsulatedDocumentLength == len(data)
    assert back.StudyInstanceUID == sources.read_source_series(SERIES).study_uid
    assert back.SeriesInstanceUID == _results(real_out)["dicom"]["objects"]["report_pdf.dcm"]["series_instance_uid"]


def test_nifti_without_dicom_out_and_bad_addresses(tmp_path, capsys):
    assert main(["analyze", "dicomweb://127.0.0.1/no-study-path", "--out", str(tmp_path / "a")]) == 2
    assert "not a DICOMweb study address" in capsys.readouterr().err
    assert main(["analyze", "--pacs", "http://127.0.0.1:9/dicom-web", "--out", str(tmp_path / "b")]) == 2
    assert "--pacs and --study go together" in capsys.readouterr().err
    assert main(["analyze", str(SERIES), "--store", "--out", str(tmp_path / "c")]) == 2
    assert "--store sends the results back" in capsys.readouterr().err
    port = free_port()  # nobody listens there: unreachable, one line
    assert main(["analyze", f"dicomweb://127.0.0.1:{port}/dicom-web/studies/1.2.3", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"cannot connect to http://127.0.0.1:{port}/dicom-web: Connection refused" in err
    assert "Traceback" not in err and "ConnectionError" not in err
    assert not (tmp_path / "d").exists()


def test_store_without_dicom_objects_and_contradictory_dicom_flags_are_refused_before_anything_runs(tmp_path, capsys):
    """--store sends OUT/dicom/: with --json-only (or --no-dicom-out) nothing would be written, so the command
    stops before fetching or analysing (the server here does not exist: no connection is tried)."""
    port = free_port()
    address = f"dicomweb://127.0.0.1:{port}/dicom-web/studies/1.2.3"
    for flag in ("--json-only", "--no-dicom-out"):
        assert main(["analyze", address, "--store", flag, "--out", str(tmp_path / "e")]) == 2
        err = capsys.readouterr().err
        assert f"--store sends OUT/dicom/ (SEG, SR, PDF) back to the PACS; {flag} writes none" in err, err
        assert "cannot connect" not in err and not (tmp_path / "e").exists()
    with pytest.raises(SystemExit) as stop:
        main(["analyze", str(SERIES), "--dicom-out", "--no-dicom-out", "--out", str(tmp_path / "f")])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_two_series_folder_references_the_chosen_series(tmp_path, capsys):
    """A folder with the series and a bone-kernel copy of it at the same positions: the reader picks the
    soft-tissue one (input.series_choice) and the SEG references exactly its slices."""
    source = sources.read_source_series(SERIES, with_pixels=True)
    folder = tmp_path / "study"
    chosen = sources.write_series_with_uids(source, folder)
    sharp_uid = pydicom.uid.generate_uid()
    for path in chosen:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = sharp_uid, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ConvolutionKernel, ds.SeriesDescription = ["Br64f", "3"], "CT Body 3.0 bone"
        ds.save_as(folder / f"sharp_{path.name}", enforce_file_format=True)
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "--seg", str(LABELS), "--out", str(out), "--quiet"]) == 3
    results = _results(out)
    assert results["input"]["series_choice"]["series_instance_uid"] == source.series_uid
    assert "series: axial soft-tissue series 'CT Body 3.0'" in capsys.readouterr().out
    assert results["dicom"]["uids_generated"] is False
    assert not any("blank" in note for note in results["dicom"]["notes"])
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.series_uid
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= {str(ds.SOPInstanceUID) for ds in source.datasets}


def test_a_hip_region_the_qc_calls_unreliable_is_marked_beside_its_number_in_the_pdf_and_the_sr(tmp_path, capsys):
    """The shared CT: the right femoral neck box is partly outside the field of view (hip_neck_cut_fov), so
    its T-score is marked "unreliable: <reason>" in the PDF's hip table and as a comment of its SR group;
    results.json keeps the number."""
    from test_report_pdf import pdf_text

    shared = DICOM_DIR.parent
    out = tmp_path / "out"
    assert main(["analyze", str(shared / "ct.nii.gz"), "--seg", str(shared / "ct_seg_total.nii.gz"), "--out",
                 str(out), "--dicom-out", "--quiet"]) == 0
    assert (f"wrote {out / 'results.json'}, results.csv, report.pdf, 10 masks and dicom/ (report_pdf.dcm, "
            "seg.dcm, sr.dcm, ct/)") in capsys.readouterr().out
    results = _results(out)
    neck = results["hip"]["right"]["neck"]
    assert "hip_neck_cut_fov" in {q["code"] for q in results["hip"]["right"]["qc"]} and neck["t_score"] < -4
    hip_page = pdf_text(out / "report.pdf")[1].split("Right hip", 1)[1]
    assert (f"Femoral neck {neck['abmd_g_cm2']:.3f} unreliable {neck['t_score']:+.1f} ± "
            f"{neck['t_score_calibration_sd']:.1f} unreliable") in hip_page
    assert "Femoral neck unreliable: the femoral neck box is partly outside the field of view" in hip_page
    # the withheld category's reasons: the side said once (by the heading), no ".;", no "Z-score: Z-score"
    who = hip_page.split("WHO category: withheld: ", 1)[1].split("Z-score not reported", 1)[0]
    assert "right hip:" not in who and ".;" not in who and who.strip().endswith("assumed.")
    assert "Z-score: Z-score" not in hip_page
    group = sr_numbers(out / "dicom" / "sr.dcm")["right hip neck"]
    assert group["T-score"][0] == pytest.approx(neck["t_score"])
    assert any(t.startswith("unreliable: the femoral neck box is partly outside the field of view")
               for t in group["text"]), group["text"]
    (why,) = [t for t in sr_numbers(out / "dicom" / "sr.dcm")["right hip category"]["text"] if "no category" in t]
    assert "right hip:" not in why and ".;" not in why
