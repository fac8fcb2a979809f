"""Reading CT images and label maps (NIfTI, NRRD, MHA, DICOM series) and writing results back.

Everything read is reoriented to the library's LPS (k, j, i) convention documented in
:mod:`OpportunisticBMDLib.volume`; everything written goes back to the source file's own grid and
orientation, so a mask opens on top of the CT in any viewer. Input files are only ever read.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import dicom_series, input_checks
from .errors import InputError, SegmentationError
from .volume import SourceGeometry, Volume

CT_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# A lumbar vertebral body is about 25 mm high; with less z coverage than this no level can be
# measured (Zhou et al. 2019 lumbar morphometry report 24-28 mm body heights).
MIN_Z_EXTENT_MM = 20.0
MIN_SLICES = 3
MAX_SPACING_MM = 10.0
# HU sanity: a CT in HU contains fat (about -100 HU) or air (-1000 HU); an image whose lowest
# values stay above this is not in HU (MR, 8-bit export, CT stored without rescale).
HU_MUST_REACH_BELOW = -200.0
HU_PLAUSIBLE_MIN = -3100.0  # below: padding values beyond any scanner's range (-3024 is common)
HU_PLAUSIBLE_MAX = 32767.0

DICOM_TAGS = {
    "modality": "0008|0060",
    "manufacturer": "0008|0070",
    "manufacturer_model_name": "0008|1090",
    "kvp": "0018|0060",
    "contrast_agent": "0018|0010",
    "convolution_kernel": "0018|1210",
    "slice_thickness_mm": "0018|0050",
    "patient_id": "0010|0020",
    "patient_sex": "0010|0040",
    "patient_age": "0010|1010",
    "patient_birth_date": "0010|0030",
    "study_date": "0008|0020",
    "study_instance_uid": "0020|000d",
    "series_instance_uid": "0020|000e",
    "series_description": "0008|103e",
}


# A JSON sidecar beside a NIfTI/NRRD/MHA file (the BIDS convention dcm2niix follows: ``ct.json`` beside
# ``ct.nii.gz``) carries the header fields those formats lose, under their DICOM keywords; the values are
# read as a DICOM header's would be (KVP drives the calibrations' physics, PatientAge the age-typical
# marrow and psoas fat and the Z-score, PatientSex the Z-score).
SIDECAR_KEYWORDS = {
    "Modality": "modality", "Manufacturer": "manufacturer", "KVP": "kvp", "ContrastBolusAgent": "contrast_agent",
    "ConvolutionKernel": "convolution_kernel", "SliceThickness": "slice_thickness_mm", "PatientSex": "patient_sex",
    "PatientAge": "patient_age", "StudyDate": "study_date", "SeriesDescription": "series_description",
    # identification only (the report's header, results.json input.identification): never a calculation's input
    "PatientID": "patient_id", "ManufacturerModelName": "manufacturer_model_name",
}


# Header fields (Volume.metadata keys) an analysis uses and that must travel with a CT between the file,
# the MRML node and back: tube voltage, the patient's age and sex (calibration bases), contrast, kernel, and
# what identifies the patient, study and scanner on the report.
HEADER_KEYS = tuple(SIDECAR_KEYWORDS.values())


def check_ct_modality(modality: Any, where: str) -> None:
    """:class:`InputError` when a header names a modality other than CT (``where``: who says so)."""
    modality = str(modality or "").strip().upper()
    if modality and modality != "CT":
        raise InputError(f"{where} modality {modality}, not CT")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``ct.json`` for ``ct.nii.gz`` / ``ct.nii`` / ``ct.nrrd`` / ``ct.mha`` (the file's name without its
    image suffix, plus ``.json``)."""
    path = Path(path)
    name = path.name
    for suffix in sorted(CT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def header_metadata(header: dict[str, Any]) -> dict[str, Any]:
    """Volume.metadata fields from DICOM keywords (``{"KVP": 120, "PatientAge": "055Y", ...}``)."""
    return {name: header[key] for key, name in SIDECAR_KEYWORDS.items() if header.get(key) not in (None, "")}


def write_sidecar(metadata: dict[str, Any], image_path: str | os.PathLike[str]) -> Path | None:
    """The header fields of ``metadata`` (Volume.metadata) as the image's JSON sidecar, under their DICOM
    keywords, so that a copy of the CT handed to another process keeps its kVp, age and sex; None when
    there is nothing to write."""
    header = {key: metadata[name] for key, name in SIDECAR_KEYWORDS.items() if metadata.get(name) not in (None, "")}
    if not header:
        return None
    side = sidecar_path(image_path)
    side.write_text(json.dumps(header, indent=2, default=str) + "\n")
    return side


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Header fields from the image's JSON sidecar, if there is one (see :data:`SIDECAR_KEYWORDS`)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{side}: sidecar is not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{side}: sidecar must be a JSON object of DICOM keywords (e.g. \"KVP\": 120)")
    meta = header_metadata(data)
    if meta:
        meta["header_source"] = str(side)
    return meta


def _is_dicom_dir(path: Path) -> bool:
    return path.is_dir()


def _read_dicom_series(path: Path) -> tuple[sitk.Image, dict[str, Any]]:
    """The CT series of a DICOM folder: the project's rule (:mod:`.dicom_series`, every header read) when GDCM
    sees several series or one without a Series Instance UID (GDCM puts every blanked series of an
    anonymised export in one group); a single series with a UID is recorded from one header (read time)."""
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(path))
    if not series_ids:
        raise InputError(f"{path}: no DICOM series found in this directory")
    choice = None
    if len(series_ids) > 1 or not series_ids[0].strip():
        choice = dicom_series.choose_ct_series(dicom_series.scan_folder(path))
        if choice.chosen is None:
            raise InputError(f"{path}: {choice.reason}")
    if choice is not None and choice.chosen.series_uid in series_ids:
        files = reader.GetGDCMSeriesFileNames(str(path), choice.chosen.series_uid)
    elif choice is not None:  # a series without a UID: the rule's files, in slice order
        files = _sorted_along_normal(choice.chosen.locations)
    else:  # one series with a UID: recorded from one header (a few ms), as batch records every series read
        files = reader.GetGDCMSeriesFileNames(str(path), series_ids[0])
        header = dicom_series.read_header(files[0]) if files else None
        choice = dicom_series.only_series(files, header) if header is not None else None
    ruled = choice is not None and bool(choice.skipped)  # the rule saw these series (GDCM may see fewer)
    extra: dict[str, Any] = {"n_series_in_folder": 1 + len(choice.skipped) if ruled else len(series_ids)}
    if choice is not None:
        extra["series_choice"] = choice.as_dict()  # the UID, or null for a series without one
        # the reader's own key of the series (for dicom/writer.py to reference the same files); not in results
        extra["series_key"] = choice.chosen.series_uid if choice.chosen is not None else None
    return _read_dicom_files(files, path, extra)


def _read_dicom_files(files: list[str] | tuple[str, ...], path: Path,
                      extra: dict[str, Any]) -> tuple[sitk.Image, dict[str, Any]]:
    """One DICOM series from its files (``path`` names it in messages); ``extra`` joins its metadata."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path}: DICOM series could not be read ({exc.args[0].splitlines()[0]})") from exc
    meta: dict[str, Any] = {"format": "dicom", "n_files": len(files), **extra}
    for name, tag in DICOM_TAGS.items():
        if reader.HasMetaDataKey(0, tag):
            meta[name] = reader.GetMetaData(0, tag).strip()
    check_ct_modality(meta.get("modality"), f"{path}: DICOM")
    _check_dicom_slice_spacing(reader, len(files), path)
    return image, meta


def _check_dicom_slice_spacing(reader: sitk.ImageSeriesReader, n: int, path: Path) -> None:
    if n < 3 or not reader.HasMetaDataKey(0, "0020|0032"):
        return
    positions = []
    for idx in range(n):
        if not reader.HasMetaDataKey(idx, "0020|0032"):
            return
        positions.append([float(v) for v in reader.GetMetaData(idx, "0020|0032").split("\\")])
    steps = np.linalg.norm(np.diff(np.asarray(positions), axis=0), axis=1)
    if steps.min() <= 1e-3:
        raise InputError(f"{path}: DICOM series has duplicated slice positions (two series mixed?)")
    if steps.max() - steps.min() > 0.1 * steps.mean() + 0.01:
        raise InputError(
            f"{path}: DICOM slices are unevenly spaced ({steps.min():.2f}-{steps.max():.2f} mm): "
            "missing slices or a gantry-tilted/variable-spacing series"
        )


def _itk_reason(exc: RuntimeError) -> str:
    """The most specific line of an ITK exception (its last), without the reader's tags."""
    lines = [line.strip() for line in str(exc.args[0] if exc.args else exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown error"
    return re.sub(r"^(\[\w+\]\s*)+", "", reason)[:160]


def read_image(path: str | os.PathLike[str], what: str = "image") -> tuple[sitk.Image, dict[str, Any]]:
    """Read a file or DICOM folder as a SimpleITK image plus metadata. Only the file's integrity is checked
    here (a truncated or corrupt NIfTI, NaN in a NIfTI: SimpleITK reads both as zeros); ``what`` names
    the image in those messages ("image" or "label map")."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if _is_dicom_dir(path):
        return _read_dicom_series(path)
    input_checks.check_file_integrity(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: not a readable image: truncated, corrupt or not an image file "
                         f"({_itk_reason(exc)})") from exc
    meta: dict[str, Any] = {"format": "".join(path.suffixes[-2:]) or path.suffix}
    if image.HasMetaDataKey("pixdim[1]"):
        meta["nifti_pixdim"] = [image.GetMetaData(f"pixdim[{a}]") for a in (1, 2, 3)]
    meta.update(read_sidecar(path))
    check_ct_modality(meta.get("modality"), f"{path}: its sidecar says")
    return image, meta


def _squeeze_to_3d(image: sitk.Image, path: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: image has {image.GetNumberOfComponentsPerPixel()} components; need a scalar CT")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{path}: image is {image.GetDimension()}D (size {image.GetSize()}); need a 3D CT volume")
    return image


def _check_geometry(image: sitk.Image, meta: dict[str, Any], path: Path) -> None:
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{path}: voxel spacing {tuple(spacing)} is missing or zero")
    pixdim = meta.get("nifti_pixdim")
    if pixdim is not None and any(float(p) == 0.0 for p in pixdim):
        raise InputError(f"{path}: NIfTI header has zero voxel size (pixdim {pixdim}): spacing is missing")
    if np.any(spacing > MAX_SPACING_MM):
        raise InputError(f"{path}: voxel spacing {tuple(spacing)} mm is coarser than {MAX_SPACING_MM} mm")
    size = image.GetSize()
    if min(size) < MIN_SLICES:
        raise InputError(f"{path}: only {min(size)} slices; a vertebra needs at least {MIN_SLICES}")
    input_checks.check_oblique(image.GetDirection(), path)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    z_axis = int(np.argmax(np.abs(direction[2, :])))  # image axis closest to patient S-I
    z_extent = size[z_axis] * spacing[z_axis]
    if z_extent < MIN_Z_EXTENT_MM:
        raise InputError(
            f"{path}: covers only {z_extent:.1f} mm head-to-foot; a vertebral body needs {MIN_Z_EXTENT_MM:.0f} mm"
        )


def _check_hu(array: np.ndarray, path: Path) -> None:
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: voxel type {array.dtype} is not numeric")
    input_checks.check_finite(array, path, "image")
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 255:
        raise InputError(f"{path}: values {lo:.0f}..{hi:.0f} look like an 8-bit picture, not CT in HU")
    if lo > HU_MUST_REACH_BELOW:
        raise InputError(
            f"{path}: lowest value is {lo:.0f}; a CT in HU has fat (-100) or air (-1000). "
            "Not CT in Hounsfield units (an MR, or a CT stored without rescale slope/intercept?)"
        )
    if lo < HU_PLAUSIBLE_MIN - 1 and np.mean(array < HU_PLAUSIBLE_MIN) > 0.5:
        raise InputError(f"{path}: most voxels are below {HU_PLAUSIBLE_MIN:.0f}: not CT in HU")


def _source_geometry(image: sitk.Image) -> SourceGeometry:
    return SourceGeometry(
        size_xyz=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def volume_from_sitk(image: sitk.Image, metadata: dict[str, Any] | None = None) -> Volume:
    """Reorient (permute/flip only) to LPS and wrap as a :class:`Volume`."""
    source = _source_geometry(image)
    oriented = sitk.DICOMOrient(image, "LPS")
    array = sitk.GetArrayFromImage(oriented)  # (k, j, i)
    return Volume(
        array=array,
        spacing_mm=tuple(float(s) for s in oriented.GetSpacing()[::-1]),  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(o) for o in oriented.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in oriented.GetDirection()),
        source_geometry=source,
        metadata=dict(metadata or {}),
    )


def read_ct(path: str | os.PathLike[str]) -> Volume:
    """Read and validate a CT in HU; raises :class:`InputError` with one clear line otherwise."""
    path = Path(path)
    image, meta = read_image(path)
    return _checked_ct(image, meta, path)


def read_ct_series(files: list[str] | tuple[str, ...], series_choice: dict[str, Any] | None = None) -> Volume:
    """Read and validate one DICOM series given by its files (a series chosen in a tree by
    :mod:`.dicom_series`), with :func:`read_ct`'s checks; ``series_choice`` is recorded as
    ``input.series_choice``. The volume's path is the series' folder."""
    if not files:
        raise InputError("no DICOM files given for the series")
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise InputError(f"{missing[0]}: no such file ({len(missing)} of the series' {len(files)} files missing)")
    folder = Path(os.path.commonpath([str(Path(f).parent) for f in files]))
    extra: dict[str, Any] = {"series_choice": series_choice} if series_choice is not None else {}
    image, meta = _read_dicom_files(_sorted_along_normal(files), folder, extra)
    return _checked_ct(image, meta, folder)


def _sorted_along_normal(files: list[str] | tuple[str, ...]) -> list[str]:
    """The files in slice order (position along the slice normal), as GDCM orders a folder's series;
    their own order when a header lacks position or orientation (the reader's checks then speak)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    keys = []
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True,
                                 specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
            row_col = np.asarray(ds.ImageOrientationPatient, float)
            keys.append(float(np.dot(np.cross(row_col[:3], row_col[3:]), np.asarray(ds.ImagePositionPatient, float))))
        except (AttributeError, ValueError, TypeError, OSError, InvalidDicomError):
            return list(files)
    return [name for _, name in sorted(zip(keys, files, strict=True))]


def _checked_ct(image: sitk.Image, meta: dict[str, Any], path: Path) -> Volume:
    image = _squeeze_to_3d(image, path)
    _check_geometry(image, meta, path)
    volume = volume_from_sitk(image, meta)
    _check_hu(volume.array, path)
    volume.array = volume.array.astype(np.float32, copy=False)
    volume.metadata["path"] = str(path)
    return volume


def read_labels(path: str | os.PathLike[str], like: Volume | None = None) -> Volume:
    """Read an integer label map; with ``like`` it must lie on the same grid as that CT."""
    path = Path(path)
    if like is not None:
        input_checks.check_not_the_ct(path, like.metadata.get("path"))
    image, meta = read_image(path, "label map")
    image = _squeeze_to_3d(image, path)
    labels = volume_from_sitk(image, meta)
    values = labels.array
    input_checks.check_label_values(values, path)
    labels.array = values.astype(np.int16, copy=False)
    labels.metadata["path"] = str(path)
    if like is not None:
        check_same_grid(labels, like, what=str(path))
    return labels


def check_same_grid(a: Volume, b: Volume, what: str = "label map") -> None:
    """Raise unless two volumes share shape, spacing, origin and direction (to 1e-3 mm)."""
    if a.shape != b.shape:
        raise SegmentationError(f"{what}: grid {a.shape} differs from the CT grid {b.shape}")
    if not np.allclose(a.spacing_mm, b.spacing_mm, atol=1e-3):
        raise SegmentationError(f"{what}: spacing {a.spacing_mm} differs from the CT {b.spacing_mm}")
    if not np.allclose(a.origin_lps_mm, b.origin_lps_mm, atol=1e-2):
        raise SegmentationError(f"{what}: origin {a.origin_lps_mm} differs from the CT {b.origin_lps_mm}")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        raise SegmentationError(f"{what}: orientation differs from the CT")


def to_sitk(array: np.ndarray, like: Volume) -> sitk.Image:
    """An array on ``like``'s LPS grid as a SimpleITK image, in the source file's orientation."""
    source = like.source_geometry
    permuted = None if source is None else _permute_to_source(array, like.direction, source)
    if permuted is not None:
        out = sitk.GetImageFromArray(np.ascontiguousarray(permuted))
        out.SetSpacing(source.spacing_xyz_mm)
        out.SetOrigin(source.origin_lps_mm)
        out.SetDirection(source.direction)
        return out
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(like.spacing_mm[::-1])
    image.SetOrigin(like.origin_lps_mm)
    image.SetDirection(like.direction)
    if source is None:
        return image
    reference = sitk.Image(list(source.size_xyz), image.GetPixelID())
    reference.SetSpacing(source.spacing_xyz_mm)
    reference.SetOrigin(source.origin_lps_mm)
    reference.SetDirection(source.direction)
    # Same voxels, only axes permuted/flipped: nearest-neighbour resampling is exact.
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())


def _permute_to_source(array: np.ndarray, direction: tuple[float, ...], source: SourceGeometry) -> np.ndarray | None:
    """``array`` (k, j, i on ``direction``) re-laid in the source file's axis order by transposes and
    flips (exact, and ~50x faster than resampling a 512x512x300 mask); None if the axes are not a
    signed permutation of each other."""
    ours = np.asarray(direction, float).reshape(3, 3)
    theirs = np.asarray(source.direction, float).reshape(3, 3)
    m = theirs.T @ ours  # m[a, b]: cosine between source ITK axis a and our ITK axis b
    perm = [int(np.argmax(np.abs(row))) for row in m]
    if sorted(perm) != [0, 1, 2] or not np.allclose(np.abs(m[range(3), perm]), 1.0, atol=1e-4):
        return None
    itk_order = array.transpose(2, 1, 0).transpose(perm)  # (x, y, z) of the source
    flips = tuple(a for a in range(3) if m[a, perm[a]] < 0)
    if flips:
        itk_order = np.flip(itk_order, axis=flips)
    out = itk_order.transpose(2, 1, 0)
    return out if out.shape == tuple(source.size_xyz[::-1]) else None


def write_like(array: np.ndarray, like: Volume, path: str | os.PathLike[str]) -> Path:
    """Write an array on ``like``'s grid to ``path`` (NIfTI/NRRD/MHA by suffix), source orientation."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if like.metadata.get("path") and Path(like.metadata["path"]).resolve() == path.resolve():
        raise InputError(f"{path}: refusing to overwrite the input image")
    sitk.WriteImage(to_sitk(array, like), str(path), useCompression=True)
    return path


def write_volume(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a Volume on its own grid (orientation of its source if known)."""
    return write_like(volume.array, volume, path)
