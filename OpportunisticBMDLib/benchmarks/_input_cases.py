"""Bad inputs built from a good CT and its label map, for the input-check tests and the robustness benchmark.

Each ``make_<case>(src_ct_path, src_labels_path, out_dir)`` writes one defective input into ``out_dir``
(the sources are only read) and returns ``{"ct": path, "seg": path}``: what to pass to
``obmd analyze CT --seg SEG`` (``seg`` None: without ``--seg``, so the segmentation model runs).
:data:`CASES` maps each case to its builder and a regular expression the one-line refusal must match.
Files are written with SimpleITK so the geometry is the source's own, changed only where the case says so.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..labels import looks_like_totalseg, totalseg_to_ours, vertebra_label

Paths = dict[str, Path | None]


def _read(path: str | Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _write(array: np.ndarray, like: sitk.Image, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def _our_labels(labels: sitk.Image) -> np.ndarray:
    """The label array (x-fastest, as SimpleITK gives it) in our schema."""
    array = sitk.GetArrayFromImage(labels)
    return totalseg_to_ours(array) if looks_like_totalseg(array) else array


def _level_mask(labels: sitk.Image, level: str) -> np.ndarray:
    mask = _our_labels(labels) == vertebra_label(level)
    if not mask.any():
        raise ValueError(f"the source label map has no vertebra {level}")
    return mask


def _copy(src: str | Path, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(src, out_dir / name))


# -- corrupt files ------------------------------------------------------------------------------------


def make_truncated_gz(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The CT's ``.nii.gz`` cut at 60 % of its bytes (an interrupted copy or download)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = Path(src_ct_path).read_bytes()
    raw = raw if str(src_ct_path).endswith(".gz") else gzip.compress(raw)
    path = out_dir / "ct_truncated.nii.gz"
    path.write_bytes(raw[: int(len(raw) * 0.6)])
    return {"ct": path, "seg": Path(src_labels_path)}


def make_corrupt_gz(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The CT's ``.nii.gz`` with one byte flipped in the middle of its compressed stream (a bad sector)."""
    out_dir = Path(out_dir)
    path = _copy(src_ct_path, out_dir, "ct_corrupt.nii.gz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return {"ct": path, "seg": Path(src_labels_path)}


def _nan_in_l1(src_ct_path: str | Path, src_labels_path: str | Path, out: Path) -> Paths:
    ct = _read(src_ct_path)
    array = sitk.GetArrayFromImage(ct).astype(np.float32)
    array[_level_mask(_read(src_labels_path), "L1")] = np.nan  # a converter's missing values
    return {"ct": _write(array, ct, out), "seg": Path(src_labels_path)}


def make_nan_nifti(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """A float32 NIfTI CT whose L1 vertebra is NaN (SimpleITK reads NIfTI NaN as 0)."""
    return _nan_in_l1(src_ct_path, src_labels_path, Path(out_dir) / "ct_nan.nii.gz")


def make_nan_nrrd(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The same as :func:`make_nan_nifti` stored as NRRD."""
    return _nan_in_l1(src_ct_path, src_labels_path, Path(out_dir) / "ct_nan.nrrd")


def make_nan_labels(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """A float32 NIfTI label map with NaN over L1 (read as background 0 by SimpleITK)."""
    labels = _read(src_labels_path)
    array = sitk.GetArrayFromImage(labels).astype(np.float32)
    array[_level_mask(labels, "L1")] = np.nan
    return {"ct": Path(src_ct_path), "seg": _write(array, labels, Path(out_dir) / "labels_nan.nii.gz")}


# -- a label map that is not one ------------------------------------------------------------------------


def make_ct_as_seg(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The CT file itself given as the label map."""
    return {"ct": Path(src_ct_path), "seg": Path(src_ct_path)}


def make_ct_copy_as_seg(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """A byte-identical copy of the CT, under another name, given as the label map."""
    return {"ct": Path(src_ct_path), "seg": _copy(src_ct_path, Path(out_dir), "labels_copy_of_ct.nii.gz")}


def make_ct_shifted_as_seg(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The CT shifted to non-negative integers (HU + 1024, uint16): integer, no negatives, but HU-like."""
    ct = _read(src_ct_path)
    array = np.clip(sitk.GetArrayFromImage(ct) + 1024, 0, None).astype(np.uint16)
    return {"ct": Path(src_ct_path), "seg": _write(array, ct, Path(out_dir) / "labels_hu_shifted.nii.gz")}


def make_negative_labels(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The label map with its background stored as -1 (negative ids)."""
    labels = _read(src_labels_path)
    array = sitk.GetArrayFromImage(labels).astype(np.int16)
    array[array == 0] = -1
    return {"ct": Path(src_ct_path), "seg": _write(array, labels, Path(out_dir) / "labels_negative.nii.gz")}


def make_fractional_labels(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """A float label map holding non-integer values (a probability map or a linearly resampled map)."""
    labels = _read(src_labels_path)
    array = sitk.GetArrayFromImage(labels).astype(np.float32) * 0.5
    return {"ct": Path(src_ct_path), "seg": _write(array, labels, Path(out_dir) / "labels_fractional.nii.gz")}


# -- an orientation that contradicts the anatomy ---------------------------------------------------------


def _flip_patient_axis(image: sitk.Image, patient_axis: int) -> sitk.Image:
    """The same voxels with the direction column nearest LPS axis ``patient_axis`` negated: the header
    now says the data run the other way along that patient axis (a converter's sign error)."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    column = int(np.argmax(np.abs(direction[patient_axis, :])))
    direction[:, column] *= -1
    out = sitk.Image(image)
    out.SetDirection(tuple(direction.ravel()))
    return out


def _flipped(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: Path, axis: int, tag: str) -> Paths:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, src in (("ct", src_ct_path), ("seg", src_labels_path)):
        path = out_dir / f"{key}_{tag}.nii.gz"
        sitk.WriteImage(_flip_patient_axis(_read(src), axis), str(path), useCompression=True)
        paths[key] = path
    return paths


def make_ap_flipped(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """CT and labels whose direction matrix swaps anterior and posterior (the spine ends up in front)."""
    return _flipped(src_ct_path, src_labels_path, Path(out_dir), 1, "ap_flipped")


def make_si_flipped(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """CT and labels whose direction matrix swaps head and feet (L5 above T11)."""
    return _flipped(src_ct_path, src_labels_path, Path(out_dir), 2, "si_flipped")


def rotation_lps(angle_deg: float, patient_axis: int) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about LPS axis ``patient_axis`` (0 x, 1 y, 2 z)."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    u, v = [ax for ax in range(3) if ax != patient_axis]
    rot = np.eye(3)
    rot[u, u], rot[u, v], rot[v, u], rot[v, v] = c, -s, s, c
    return rot


def resample_oblique(image: sitk.Image, angle_deg: float, patient_axis: int = 0, nearest: bool = False,
                     default: float = -1024.0) -> sitk.Image:
    """``image`` resampled onto a grid rotated by ``angle_deg`` about LPS axis ``patient_axis`` (same
    spacing, covering the whole source): the same patient, stored on an oblique grid (a reformatted or
    tilted series)."""
    direction = rotation_lps(angle_deg, patient_axis) @ np.asarray(image.GetDirection(), float).reshape(3, 3)
    size = np.asarray(image.GetSize())
    corners = np.array([[x, y, z] for x in (0, size[0] - 1) for y in (0, size[1] - 1) for z in (0, size[2] - 1)])
    physical = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners.astype(float)])
    spacing = np.asarray(image.GetSpacing())
    in_new = physical @ direction  # coordinates along the new axes
    low, high = in_new.min(axis=0), in_new.max(axis=0)
    reference = sitk.Image([int(n) for n in np.ceil((high - low) / spacing) + 1], image.GetPixelID())
    reference.SetSpacing(tuple(spacing))
    reference.SetDirection(tuple(direction.ravel()))
    reference.SetOrigin(tuple(direction @ low))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0 if nearest else default)


def make_oblique(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path,
                 angle_deg: float = 35.0, patient_axis: int = 0) -> Paths:
    """CT and labels resampled onto a grid tilted by ``angle_deg`` (default: about the left-right axis,
    like a gantry tilt or an oblique reformat)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, src, nearest in (("ct", src_ct_path, False), ("seg", src_labels_path, True)):
        path = out_dir / f"{key}_oblique_{angle_deg:g}.nii.gz"
        sitk.WriteImage(resample_oblique(_read(src), angle_deg, patient_axis, nearest), str(path),
                        useCompression=True)
        paths[key] = path
    return paths


# -- not CT -------------------------------------------------------------------------------------------------


def make_mr_like(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """A T1-weighted-MR-like image of the same patient: fat bright, muscle and organs mid-grey, cortical
    bone dark, all positive, and the background outside the body set to -1024 (as some converters and
    masking tools do), so the lowest value looks like CT air."""
    ct = _read(src_ct_path)
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    body = hu > -500.0
    rng = np.random.default_rng(0)
    mr = np.where(hu < -30.0, 900.0, np.where(hu < 300.0, 450.0 + 0.5 * hu, 150.0)).astype(np.float32)
    mr += rng.normal(0.0, 25.0, size=mr.shape).astype(np.float32)
    mr = np.where(body, np.clip(mr, 1.0, None), -1024.0).astype(np.float32)
    return {"ct": _write(mr, ct, Path(out_dir) / "mr_like.nii.gz"), "seg": Path(src_labels_path)}


def make_no_spine(src_ct_path: str | Path, src_labels_path: str | Path, out_dir: str | Path) -> Paths:
    """The CT's slices below the lowest lumbar vertebra (pelvis and hips), given without labels: the
    segmentation model runs and finds no vertebra T11-L5 (``seg`` is None: run without ``--seg``)."""
    ct, labels = _read(src_ct_path), _our_labels(_read(src_labels_path))
    lumbar = np.isin(labels, [vertebra_label(level) for level in ("T11", "T12", "L1", "L2", "L3", "L4", "L5")])
    direction = np.asarray(ct.GetDirection(), float).reshape(3, 3)
    z_axis = int(np.argmax(np.abs(direction[2, :])))  # ITK axis nearest head-foot
    array_axis = 2 - z_axis  # the same axis in the (z, y, x) array
    other = tuple(a for a in range(3) if a != array_axis)
    slices = np.nonzero(lumbar.any(axis=other))[0]
    margin = int(np.ceil(10.0 / ct.GetSpacing()[z_axis]))  # 10 mm clear of L5
    if direction[2, z_axis] > 0:  # index grows towards the head: keep the slices under the lowest lumbar one
        keep = slice(0, int(slices.min()) - margin)
    else:
        keep = slice(int(slices.max()) + 1 + margin, ct.GetSize()[z_axis])
    index = [slice(None)] * 3
    index[z_axis] = keep
    path = Path(out_dir) / "ct_no_spine.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct[tuple(index)], str(path), useCompression=True)
    return {"ct": path, "seg": None}


Builder = Callable[[str | Path, str | Path, str | Path], Paths]

# case -> (builder, a regular expression the one-line refusal must match)
CASES: dict[str, tuple[Builder, str]] = {
    "truncated_gz": (make_truncated_gz, r"truncated"),
    "corrupt_gz": (make_corrupt_gz, r"corrupt"),
    "nan_nifti": (make_nan_nifti, r"\d+ voxels? (is|are) NaN"),
    "nan_nrrd": (make_nan_nrrd, r"\d+ voxels? (is|are) NaN"),
    "nan_labels": (make_nan_labels, r"\d+ voxels? (is|are) NaN"),
    "ct_as_seg": (make_ct_as_seg, r"the CT itself"),
    "ct_copy_as_seg": (make_ct_copy_as_seg, r"same content as the CT"),
    "ct_shifted_as_seg": (make_ct_shifted_as_seg, r"not a label map"),
    "negative_labels": (make_negative_labels, r"negative"),
    "fractional_labels": (make_fractional_labels, r"non-integer"),
    "ap_flipped": (make_ap_flipped, r"anterior"),
    "si_flipped": (make_si_flipped, r"superior"),
    "oblique": (make_oblique, r"oblique"),
    "mr_like": (make_mr_like, r"not CT"),
    "no_spine_model": (make_no_spine, r"the segmentation model found no vertebra T11-L5 in this scan"),
}
