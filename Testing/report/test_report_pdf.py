"""``report.pdf`` as ``obmd analyze`` writes it, read back with poppler's ``pdftotext``: the same L1-L2 value,
category and hip T-scores as results.json, the identification the header gave (and nothing else), "not
measurable" with its reason, one page without a hip and two with one, A4 or Letter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.io import read_ct
from OpportunisticBMDLib.report.identification import identification
from OpportunisticBMDLib.report.pdf import ReportFigures, ReportOptions, write_pdf

SIDECAR_EXTRA = {"PatientID": "DP-0003-TEST", "StudyDate": "20240131", "SeriesDescription": "Abdomen 3.0 Br40",
                 "SliceThickness": 3.0, "ManufacturerModelName": "Phantomatic 64"}


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} (Debian poppler-utils) is not installed: bash .ci/system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def pdf_text(path: Path) -> list[str]:
    """The text of each page, whitespace collapsed (reportlab wraps lines where it likes)."""
    out = subprocess.run([_poppler("pdftotext"), str(path), "-"], capture_output=True, text=True, check=True).stdout
    return [" ".join(page.split()) for page in out.split("\f") if page.strip()]


def pdf_info(path: Path) -> dict[str, str]:
    out = subprocess.run([_poppler("pdfinfo"), str(path)], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def _analyze(ct: Path, seg: Path, out: Path) -> tuple[int, dict]:
    rc = main(["analyze", str(ct), "--seg", str(seg), "--out", str(out), "--quiet"])
    return rc, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def with_hip(tmp_path_factory) -> tuple[dict, Path]:
    """A small digital patient, T12 to the femurs (3 mm voxels), its sidecar completed as a scanner's header."""
    patient = tmp_path_factory.mktemp("dp")
    assert main(["phantom", "--seed", "3", "--spacing-mm", "3", "3", "3", "--fov-levels", "T12", "femur",
                 "--out", str(patient)]) == 0
    sidecar = patient / "ct.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **SIDECAR_EXTRA}))
    out = tmp_path_factory.mktemp("dp-out") / "report"
    rc, results = _analyze(patient / "ct.nii.gz", patient / "labels.nii.gz", out)
    assert rc == 0
    return results, out / "report.pdf"


@pytest.fixture(scope="module")
def dicom_not_measurable(shared_data, tmp_path_factory) -> tuple[dict, Path]:
    """The shared DICOM series (T11-T12, both cut by the field of view) with its TotalSegmentator labels."""
    series = shared_data / "dicom_upper_abdomen"
    out = tmp_path_factory.mktemp("dicom-out") / "report"
    rc, results = _analyze(series / "series", series / "ct_seg_total.nii.gz", out)
    assert rc == 3  # not measurable
    return results, out / "report.pdf"


def test_spine_and_hip_numbers_are_those_of_results_json(with_hip):
    results, pdf = with_hip
    pages = pdf_text(pdf)
    assert len(pages) == 2 and pdf_info(pdf)["Pages"] == "2"
    assert pdf_info(pdf)["Page size"].startswith("595.276 x 841.89")  # A4
    summary = results["spine"]["summary"]
    assert summary["levels_used"] == ["L1", "L2"] and summary["category"]
    assert (f"Trabecular vBMD, L1–L2: {summary['vbmd_mg_cm3']:.1f} ± {summary['vbmd_calibration_sd_mg_cm3']:.1f} "
            "mg/cm³") in pages[0]
    assert f"ACR category: {summary['category']}" in pages[0]
    for level, entry in results["spine"]["levels"].items():
        row = f"{level} {entry['vbmd_mg_cm3']:.1f} {entry['trabecular_hu_mean']:.1f}"
        assert row in pages[0], row
    cal = results["calibration"]
    assert f"vBMD = {cal['intercept']:.2f} + {cal['slope']:.4f} × HU" in pages[0]
    assert f"psoas {cal['muscle_hu']:.1f} HU" in pages[0]
    hip_page = pages[1]
    for side in ("right", "left"):
        block = results["hip"][side]
        assert block["category"], side
        side_text = hip_page.split(f"{side.capitalize()} hip", 1)[1]
        assert f"WHO category: {block['category']}" in side_text
        for region, name in (("neck", "Femoral neck"), ("total_hip", "Total hip")):
            r = block[region]
            assert f"{name} {r['abmd_g_cm2']:.3f} {r['t_score']:+.1f} ± {r['t_score_calibration_sd']:.1f}" \
                in side_text, (side, region)
    for page in pages:
        assert "Not a medical device; research use only." in page
        assert f"OpportunisticBMD {results['software']['version']}" in page


def test_identification_from_the_sidecar_and_nothing_else(with_hip):
    results, pdf = with_hip
    ident = results["input"]["identification"]
    assert ident == {"patient_id": "DP-0003-TEST", "patient_age": "062Y", "patient_sex": "F",
                     "study_date": "2024-01-31", "manufacturer": "OpportunisticBMD digital patient",
                     "manufacturer_model_name": "Phantomatic 64", "kvp": 120.0,
                     "series_description": "Abdomen 3.0 Br40", "slice_thickness_mm": 3.0, "patient_age_years": 62.0,
                     "source": "sidecar"}
    page = pdf_text(pdf)[0]
    for text in ("Patient ID DP-0003-TEST", "Study date 2024-01-31", "Age 62 y", "Sex F",
                 "Scanner OpportunisticBMD digital patient Phantomatic 64", "Tube voltage 120 kVp",
                 "Series Abdomen 3.0 Br40", "Slice thickness 3 mm", "Identification from: JSON sidecar"):
        assert text in page, text
    assert "not recorded" not in page.split("Identification from")[0]


def test_identification_shows_the_age_and_sex_the_analysis_used_and_the_headers_when_they_differ(with_hip, tmp_path):
    """--age/--sex or a batch manifest override the header: the PDF shows what the analysis used (results.json
    ``options``), where it came from, and the header's value beside it."""
    results, pdf = with_hip
    assert "Age 62 y (from the header)" in pdf_text(pdf)[0] and "Sex F (from the header)" in pdf_text(pdf)[0]
    given = {**results, "options": {**results["options"], "patient_age": 71.0, "patient_sex": "M"}}
    page = pdf_text(write_pdf(given, ReportFigures(), tmp_path / "given.pdf"))[0]
    assert "Age 71 y (given); header: 62 y" in page and "Sex M (given); header: F" in page
    unknown = {**results, "options": {**results["options"], "patient_age": None}}
    unknown["input"] = {**results["input"], "identification": {**results["input"]["identification"],
                                                                "patient_age": "250Y", "patient_age_years": 250.0}}
    page = pdf_text(write_pdf(unknown, ReportFigures(), tmp_path / "unknown.pdf"))[0]
    assert "Age unknown (header 250 y: not used)" in page


def test_not_measurable_says_so_and_why_on_one_page(dicom_not_measurable):
    results, pdf = dicom_not_measurable
    assert "hip" not in results
    pages = pdf_text(pdf)
    assert len(pages) == 1 and pdf_info(pdf)["Pages"] == "1"
    page = pages[0]
    assert results["status"] == "not_measurable"
    assert "Trabecular vBMD: not measurable" in page and "ACR category: not measurable" in page
    reason = results["status_reasons"][0]["message"]
    assert reason.startswith("not measurable: ") and "level_cut_by_fov" in reason
    assert f"Status: not measurable: {reason.removeprefix('not measurable: ')}" in page  # the status said once
    assert "not measurable: not measurable" not in page
    # psoas too small here: the paraspinal muscle calibrated the scan, and the legend and footer say so
    assert results["calibration"]["muscle_roi_source"] == "paraspinal"
    assert "paraspinal muscle ROI (dashed)" in page and "paraspinal muscle fat 6.9 %" in page
    assert "psoas ROI" not in page and "psoas fat" not in page
    assert "marrow fat 50 % (default: age unknown)" in page and "((" not in page and "))" not in page
    for level in ("T11", "T12"):
        assert f"{level} " in page and results["spine"]["levels"][level]["valid"] is False
    assert page.count("not valid: level cut by fov") == 2
    # the DICOM header's identification; its blanks (anonymised) are "not recorded", never made up
    ident = results["input"]["identification"]
    assert ident["source"] == "dicom" and ident["patient_id"] is None and ident["patient_sex"] is None
    for text in ("Patient ID not recorded", "Study date 2022-12-08", "Age not recorded", "Sex not recorded",
                 "Scanner SIEMENS Biograph40_mCT 4R", "Tube voltage 120 kVp", "Series CT Body 3.0",
                 "Slice thickness 3 mm", "Identification from: DICOM header"):
        assert text in page, text


def test_a_nifti_without_sidecar_identifies_nothing(shared_data):
    ident = identification(read_ct(shared_data / "ct.nii.gz").metadata)
    assert ident["source"] is None
    assert all(value is None for key, value in ident.items()), ident


def test_letter_paper_and_no_pictures(with_hip, tmp_path):
    results, _ = with_hip
    path = write_pdf(results, ReportFigures(), tmp_path / "letter.pdf", ReportOptions(page_size="Letter"))
    assert pdf_info(path)["Page size"].startswith("612 x 792")
    pages = pdf_text(path)
    assert len(pages) == 2 and "no trabecular ROI to show" in pages[0]
    assert re.search(r"Page 2 of 2", pages[1])
    with pytest.raises(ValueError, match="page size"):
        ReportOptions(page_size="A5")


def test_pictures_skip_an_emptied_roi():
    """A ROI erased whole in the editor (Slicer, web) is left out of the pictures; none at all: no picture."""
    import numpy as np

    from OpportunisticBMDLib.report import figures
    from OpportunisticBMDLib.volume import Volume

    rng = np.random.default_rng(0)
    ct = Volume(rng.normal(40.0, 20.0, (40, 50, 60)).astype(np.float32), (3.0, 2.0, 2.0))
    rois = {name: np.zeros(ct.shape, bool) for name in ("trabecular_L1", "trabecular_L2", "muscle_roi", "fat_roi")}
    rois["trabecular_L2"][5:15, 20:30, 25:35] = True
    rois["muscle_roi"][5:15, 30:40, 10:20] = True
    results = {"spine": {"summary": {"levels_used": []}, "levels": {}}}
    assert figures.axial_level(results, figures.trabecular_masks(rois)) == "L2"
    for png in (figures.sagittal_png(ct, rois, results), figures.axial_png(ct, rois, results, "L2")):
        assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    rois["trabecular_L2"][:] = False
    assert figures.sagittal_png(ct, rois, results) is None
    assert figures.axial_level(results, figures.trabecular_masks(rois)) is None
