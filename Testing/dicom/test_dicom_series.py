"""The CT series rule (dicom_series) on a study built from the shared real DICOM series plus the
objects a real study also holds: a bone-kernel and a thick reconstruction, a localizer, a sagittal
reformat, a dose report and a secondary capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from OpportunisticBMDLib import dicom_series, io
from OpportunisticBMDLib.errors import InputError

SERIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen" / "series"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"

pytestmark = pytest.mark.skipif(not SERIES.is_dir(), reason="shared DICOM series not present")


def _write_series(folder: Path, name: str, study_uid: str, files: list[Path], **changes) -> str:
    series_uid = generate_uid()
    for idx, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = changes.get("SOPClassUID", CT_IMAGE)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"{name}_{idx:03d}.dcm")
    return series_uid


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("study")
    files = sorted(SERIES.iterdir())
    study_uid = generate_uid()
    uids = {
        "soft": _write_series(folder, "soft", study_uid, files, SeriesNumber=3),
        "bone_thin": _write_series(folder, "bone", study_uid, files, SeriesNumber=4, ConvolutionKernel="Br64f",
                                   SliceThickness="1"),
        "thick": _write_series(folder, "thick", study_uid, files[::3], SeriesNumber=5, SliceThickness="5"),
        "localizer": _write_series(folder, "scout", study_uid, files[:1], SeriesNumber=1,
                                   ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        "sagittal": _write_series(folder, "sag", study_uid, files[:4], SeriesNumber=6,
                                  ImageOrientationPatient=[0, 1, 0, 0, 0, -1]),
        "dose": _write_series(folder, "dose", study_uid, files[:1], SeriesNumber=99, Modality="SR",
                              SOPClassUID=DOSE_SR),
        "capture": _write_series(folder, "sc", study_uid, files[:3], SeriesNumber=98, SOPClassUID=SECONDARY_CAPTURE),
    }
    return folder, uids


def test_rule_picks_the_soft_tissue_axial_series_and_says_why_each_other_was_skipped(study):
    folder, uids = study
    choice = dicom_series.choose_ct_series(dicom_series.scan_folder(folder))
    assert choice.chosen is not None and choice.chosen.series_uid == uids["soft"]
    assert choice.chosen.n_images == len(list(SERIES.iterdir()))
    why = {s.series_uid: reason for s, reason in choice.skipped}
    assert set(why) == {uid for name, uid in uids.items() if name != "soft"}
    assert "sharp" in why[uids["bone_thin"]]
    assert "thicker" in why[uids["thick"]]
    assert "LOCALIZER" in why[uids["localizer"]]
    assert "not axial" in why[uids["sagittal"]]
    assert "not CT" in why[uids["dose"]]
    assert "secondary capture" in why[uids["capture"]]
    assert "soft-tissue" in choice.reason and "3 mm" in choice.reason


def test_reading_the_study_folder_loads_the_chosen_series_and_records_the_choice(study):
    folder, uids = study
    ct = io.read_ct(folder)
    direct = io.read_ct(SERIES)
    assert ct.shape == direct.shape
    np.testing.assert_array_equal(ct.array, direct.array)
    assert ct.metadata["series_choice"]["series_instance_uid"] == uids["soft"]
    assert len(ct.metadata["series_choice"]["skipped"]) == len(uids) - 1


def test_a_study_without_a_measurable_series_is_refused_with_the_reason(tmp_path):
    files = sorted(SERIES.iterdir())
    study_uid = generate_uid()
    _write_series(tmp_path, "scout", study_uid, files[:1], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    _write_series(tmp_path, "sag", study_uid, files[:4], ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    with pytest.raises(InputError, match="no axial CT image series"):
        io.read_ct(tmp_path)


@pytest.mark.parametrize(("kernel", "description", "sharp"), [
    ("Br38f\\3", "", False), ("B30f", "", False), ("B70f", "", True), ("Br64f", "", True), ("STANDARD", "", False),
    ("BONE", "", True), ("SOFT", "Abdomen 3mm", False), ("B", "", False), ("L", "", True), ("FC08", "", False),
    ("FC52", "", True), ("", "Lung 1.0", True), ("I26f", "", False), ("Hr64", "", True),
])
def test_kernel_sharpness(kernel, description, sharp):
    assert dicom_series.is_sharp_kernel(kernel, description) is sharp


def test_a_single_series_folder_records_its_choice_and_a_blank_uid_is_null_never_our_key(tmp_path):
    """The shared series is anonymised (Series Instance UID blank): a folder of it alone is recorded as the only
    series, with ``series_instance_uid`` null (our grouping key is no UID); a soft and a bone copy of it, both
    blank, are told apart by the rule (GDCM groups them as one) and the soft one is read, its files only."""
    import json

    from OpportunisticBMDLib.batch.inputs import CaseInput
    from OpportunisticBMDLib.dicom import writer

    alone = io.read_ct(SERIES).metadata["series_choice"]
    assert alone["series_instance_uid"] is None and alone["n_images"] == len(list(SERIES.iterdir()))
    assert alone["description"] == "CT Body 3.0" and alone["skipped"] == []
    files = sorted(SERIES.iterdir())
    for name, changes in (("soft", {}), ("bone", {"ConvolutionKernel": "Br64f", "SeriesNumber": 7,
                                                  "SeriesDescription": "CT Body 3.0 bone"})):
        for idx, path in enumerate(files):
            ds = pydicom.dcmread(path)
            assert not ds.get("SeriesInstanceUID")
            for key, value in changes.items():
                setattr(ds, key, value)
            ds.save_as(tmp_path / f"{name}_{idx:03d}.dcm")
    ct = io.read_ct(tmp_path)
    np.testing.assert_array_equal(ct.array, io.read_ct(SERIES).array)
    choice = ct.metadata["series_choice"]
    assert choice["series_instance_uid"] is None and choice["description"] == "CT Body 3.0"
    assert [(s["series_instance_uid"], s["description"]) for s in choice["skipped"]] == [(None, "CT Body 3.0 bone")]
    assert "no-uid" not in json.dumps(choice)
    assert len(writer.source_for(ct, tmp_path / "out").datasets) == len(files)  # the soft series' files only
    described = CaseInput(case_id="a", ct=str(tmp_path), series_choice=choice).series_description()
    assert described == f"CT Body 3.0 | 3.0 mm | Br38f\\3 | {len(files)} images"


def test_a_single_series_with_a_uid_is_recorded_from_one_header(tmp_path):
    files = sorted(SERIES.iterdir())
    uid = _write_series(tmp_path, "ct", generate_uid(), files, SeriesNumber=3)
    choice = io.read_ct(tmp_path).metadata["series_choice"]
    assert choice["series_instance_uid"] == uid and choice["n_images"] == len(files)
    assert choice["reason"].startswith("the only image series in the folder: 'CT Body 3.0'")
