"""IO round trips (NIfTI, NRRD, MHA, DICOM, masks on the CT grid) and bad-input rejections."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import SimpleITK as sitk

from OpportunisticBMDLib import io
from OpportunisticBMDLib.errors import InputError, SegmentationError


def _ct_image(size_xyz=(40, 30, 16), spacing=(0.8, 0.8, 2.5), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.normal(40, 20, size=size_xyz[::-1]).astype(np.float32)
    array[:, :3, :] = -1000.0  # air in front of the patient
    array[:, -3:, :] = -100.0  # fat
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.0, -400.0))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_write_read_round_trip(tmp_path, suffix):
    image = _ct_image()
    src = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(src))
    ct = io.read_ct(src)
    assert ct.shape == (16, 30, 40) and ct.spacing_mm == pytest.approx((2.5, 0.8, 0.8))
    assert np.array_equal(ct.array, sitk.GetArrayFromImage(image))
    out = io.write_volume(ct, tmp_path / f"copy{suffix}")
    again = io.read_ct(out)
    assert np.array_equal(again.array, ct.array)
    assert again.origin_lps_mm == pytest.approx(ct.origin_lps_mm) and again.spacing_mm == pytest.approx(ct.spacing_mm)


def test_reorientation_is_exact_and_masks_go_back_to_the_source_grid(tmp_path):
    """A file stored RAS-flipped and axis-permuted reads as the same LPS array; a mask written with
    write_like lies on the file's own grid (same size, spacing, origin, direction) voxel for voxel."""
    image = _ct_image()
    lps = io.volume_from_sitk(image)
    flipped = sitk.Flip(image, [True, True, False])  # stored as RAI: x and y reversed
    permuted = sitk.PermuteAxes(flipped, [2, 0, 1])  # and z stored first
    path = tmp_path / "odd.nii.gz"
    sitk.WriteImage(permuted, str(path))
    ct = io.read_ct(path)
    assert np.array_equal(ct.array, lps.array)
    assert ct.origin_lps_mm == pytest.approx(lps.origin_lps_mm, abs=1e-4)
    mask = ct.array > 50
    out = io.write_like(mask.astype(np.uint8), ct, tmp_path / "mask.nii.gz")
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == permuted.GetSize()
    assert written.GetSpacing() == pytest.approx(permuted.GetSpacing())
    assert written.GetOrigin() == pytest.approx(permuted.GetOrigin(), abs=1e-4)
    assert written.GetDirection() == pytest.approx(permuted.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(written) > 0, sitk.GetArrayFromImage(permuted) > 50)
    back = io.read_labels(out, like=ct)
    assert np.array_equal(back.array > 0, mask)


def test_dicom_series_spacing_orientation_and_header(shared_data):
    folder = shared_data / "dicom_upper_abdomen" / "series"
    ct = io.read_ct(folder)
    assert ct.shape == (20, 512, 512)
    assert ct.spacing_mm == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert ct.metadata["modality"] == "CT" and ct.metadata["kvp"] == "120" and ct.metadata["contrast_agent"]
    labels = io.read_labels(shared_data / "dicom_upper_abdomen" / "ct_seg_total.nii.gz", like=ct)
    a = labels.array
    # TotalSegmentator ids: liver 5, spleen 1, aorta 52, T12 32. Axis 2 runs right -> left, axis 1
    # anterior -> posterior: liver on the patient's right, spleen left, aorta in front of the spine.
    liver, spleen = np.argwhere(a == 5).mean(0), np.argwhere(a == 1).mean(0)
    aorta, t12 = np.argwhere(a == 52).mean(0), np.argwhere(a == 32).mean(0)
    assert liver[2] < t12[2] < spleen[2]
    assert aorta[1] < t12[1]
    assert 100 < np.median(ct.array[a == 32]) < 500 and np.median(ct.array[a == 5]) > 30  # HU rescaled


def test_masks_written_on_the_real_ct_grid_read_back_equal(shared_data, tmp_path):
    ct = io.read_ct(shared_data / "ct.nii.gz")
    mask = (ct.array > 200).astype(np.uint8)
    out = io.write_like(mask, ct, tmp_path / "bone.nii.gz")
    source = sitk.ReadImage(str(shared_data / "ct.nii.gz"))
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == source.GetSize() and written.GetDirection() == pytest.approx(source.GetDirection())
    assert written.GetOrigin() == pytest.approx(source.GetOrigin(), abs=1e-4)
    assert np.array_equal(io.read_labels(out, like=ct).array, mask)
    with pytest.raises(InputError, match="overwrite"):
        io.write_like(mask, ct, shared_data / "ct.nii.gz")


def _write(tmp_path, array, spacing=(1.0, 1.0, 2.5), name="bad.nii.gz") -> str:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return str(path)


def test_rejects_2d_image(tmp_path):
    with pytest.raises(InputError, match="2D"):
        io.read_ct(_write(tmp_path, np.full((64, 64), -500, np.int16)))


def test_rejects_zero_spacing(tmp_path):
    path = _write(tmp_path, np.full((16, 32, 32), -500, np.int16), name="zero.nii")
    raw = bytearray(open(path, "rb").read())
    struct.pack_into("<3f", raw, 80, 0.0, 0.0, 0.0)  # NIfTI-1 pixdim[1..3]
    open(path, "wb").write(bytes(raw))
    with pytest.raises(InputError, match="spacing|voxel size"):
        io.read_ct(path)


def test_rejects_8bit_picture(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, size=(16, 32, 32)).astype(np.uint8)
    with pytest.raises(InputError, match="8-bit"):
        io.read_ct(_write(tmp_path, array))


def test_rejects_mr_like_positive_image(tmp_path):
    array = np.random.default_rng(2).uniform(0, 1500, size=(16, 32, 32)).astype(np.float32)
    with pytest.raises(InputError, match="Not CT in Hounsfield"):
        io.read_ct(_write(tmp_path, array))


def test_rejects_ct_stored_without_rescale(tmp_path):
    array = np.random.default_rng(3).integers(0, 4000, size=(16, 32, 32)).astype(np.uint16)
    with pytest.raises(InputError, match="without rescale"):
        io.read_ct(_write(tmp_path, array))


def test_rejects_too_few_slices(tmp_path):
    with pytest.raises(InputError, match="slices"):
        io.read_ct(_write(tmp_path, np.full((2, 32, 32), -500, np.int16)))
    with pytest.raises(InputError, match="head-to-foot"):  # 5 slices of 2.5 mm: 12.5 mm
        io.read_ct(_write(tmp_path, np.full((5, 32, 32), -500, np.int16)))


def test_rejects_label_map_on_another_grid(shared_data):
    ct = io.read_ct(shared_data / "ct.nii.gz")
    with pytest.raises(SegmentationError, match="grid"):
        io.read_labels(shared_data / "crop_T12-L2" / "ct_seg_total.nii.gz", like=ct)


def test_rejects_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        io.read_ct(tmp_path / "nope.nii.gz")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a readable image"):
        io.read_ct(junk)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        io.read_ct(empty_dir)


@pytest.mark.parametrize("flip", [(False, False, False), (True, False, True), (True, True, True)])
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1)])
def test_masks_go_back_by_transposes_exactly_as_resampling_would(tmp_path, flip, order):
    """The fast transpose/flip path of to_sitk gives the same voxels as nearest-neighbour resampling."""
    stored = sitk.PermuteAxes(sitk.Flip(_ct_image(), list(flip)), list(order))
    path = tmp_path / "stored.nii.gz"
    sitk.WriteImage(stored, str(path))
    ct = io.read_ct(path)
    labels = np.arange(ct.array.size, dtype=np.int32).reshape(ct.shape)  # every voxel distinct
    fast = io.to_sitk(labels, ct)
    plain = sitk.GetImageFromArray(labels)
    plain.SetSpacing(ct.spacing_mm[::-1])
    plain.SetOrigin(ct.origin_lps_mm)
    plain.SetDirection(ct.direction)
    slow = sitk.Resample(plain, stored, sitk.Transform(), sitk.sitkNearestNeighbor, -1, sitk.sitkInt32)
    assert fast.GetSize() == stored.GetSize() and fast.GetDirection() == pytest.approx(stored.GetDirection())
    assert fast.GetOrigin() == pytest.approx(stored.GetOrigin(), abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(fast), sitk.GetArrayFromImage(slow))


def test_json_sidecar_gives_the_header_a_nifti_lacks(tmp_path):
    """``ct.json`` beside ``ct.nii.gz`` (BIDS, dcm2niix): DICOM keywords become the metadata a DICOM header
    would give; unknown keys are ignored; an MR sidecar or broken JSON is refused with one clear line."""
    import json

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct_image(), str(path))
    assert "kvp" not in io.read_ct(path).metadata  # no sidecar: no header
    (tmp_path / "ct.json").write_text(json.dumps({"KVP": 100, "PatientAge": "067Y", "PatientSex": "F",
                                                  "Modality": "CT", "EchoTime": 0.01}))
    meta = io.read_ct(path).metadata
    assert meta["kvp"] == 100 and meta["patient_age"] == "067Y" and meta["patient_sex"] == "F"
    assert "EchoTime" not in meta and meta["header_source"].endswith("ct.json")
    assert io.sidecar_path(tmp_path / "scan.nrrd").name == "scan.json"
    (tmp_path / "ct.json").write_text(json.dumps({"Modality": "MR"}))
    with pytest.raises(InputError, match="modality MR"):
        io.read_ct(path)
    (tmp_path / "ct.json").write_text("{not json")
    with pytest.raises(InputError, match="sidecar"):
        io.read_ct(path)


def test_web_digital_patient_carries_the_header_a_scan_would():
    """The browser app's digital patient (generated in-process, no ct.json) gets the same header fields
    ``obmd phantom`` writes: kVp, age and sex reach its calibration as they do the CLI's."""
    from OpportunisticBMDLib.header import age_years
    from OpportunisticBMDLib.web.cases import load_phantom_case

    ct, labels, name = load_phantom_case(5, "spine", 3.0)
    assert name == "digital-patient-005" and labels is not None
    from OpportunisticBMDLib.phantom import PhantomOptions, generate_phantom

    truth = generate_phantom(5, PhantomOptions(region="spine", spacing_mm=(3.0, 3.0, 3.0))).truth
    assert float(ct.metadata["kvp"]) == truth["scanner"]["kvp"] and ct.metadata["modality"] == "CT"
    assert age_years(ct.metadata["patient_age"]) == int(truth["patient"]["age"])
    assert ct.metadata["patient_sex"] == truth["patient"]["sex"]
