"""The DICOM Segmentation (SEG) of an analysis: the ROIs measured and the vertebra labels, on the source
CT's slices, coded as highdicom and Slicer's DICOM plugin expect (segmented property category and type
from SNOMED CT, as in the DICOM SEG examples of dcmqi/Slicer).

Our masks live on the library's LPS grid (volume.py: ``array[k, j, i]``); the SEG frames must be the
source slices. :func:`frame_indices` maps every pixel of every source slice to its LPS voxel from the
slice's own position and orientation (ImagePositionPatient/ImageOrientationPatient), so whatever order
and flips the source files use, a frame holds exactly the voxels of that slice; a slice that does not
lie on the CT grid is refused, never resampled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .. import __version__
from ..errors import SegmentationError
from ..labels import VERTEBRA_LEVELS, vertebra_label
from ..pipeline import AnalysisResult
from ..volume import Volume

ON_GRID_TOLERANCE_VOXELS = 0.05  # a source pixel centre farther than this from a CT voxel centre: not our grid
# SNOMED CT codes (pydicom's code dictionary, the same concepts Slicer's terminology and dcmqi use)
CATEGORY_TISSUE = codes.SCT.Tissue  # 85756007
CATEGORY_ANATOMY = codes.SCT.AnatomicalStructure  # 91723000
VERTEBRA_CODES: dict[str, Code] = {
    "T10": codes.SCT.T10Vertebra, "T11": codes.SCT.T11Vertebra, "T12": codes.SCT.T12Vertebra,
    "L1": codes.SCT.L1Vertebra, "L2": codes.SCT.L2Vertebra, "L3": codes.SCT.L3Vertebra,
    "L4": codes.SCT.L4Vertebra, "L5": codes.SCT.L5Vertebra,
}
HIP_REGIONS = ("neck", "trochanter", "intertrochanter", "total_hip")
SIDES = ("left", "right")
# display colours (CIELab from sRGB): design choice, the colours of the PNG/Slicer views
COLORS_RGB = {"trabecular": (230, 220, 70), "vertebra": (241, 214, 145), "muscle": (192, 104, 88),
              "fat": (255, 244, 209), "hip": (90, 170, 255)}


@dataclass(frozen=True)
class SegmentSpec:
    name: str  # the ROI's key (results masks/<name>.nii.gz) or vertebra_<level>
    label: str  # SegmentLabel a viewer shows
    category: Code
    property_type: Code
    region: Code | None
    color: str  # key of COLORS_RGB
    mask: np.ndarray  # bool, LPS (k, j, i)


def segment_specs(result: AnalysisResult, muscle_source: str | None = None) -> list[SegmentSpec]:
    """The segments, in SEG order: trabecular ROI per level, muscle and fat ROIs, hip regions present, the
    vertebra labels."""
    specs = []
    for level in VERTEBRA_LEVELS:
        name = f"trabecular_{level}"
        if name in result.rois:
            specs.append(SegmentSpec(name, f"{level} trabecular ROI", CATEGORY_TISSUE, codes.SCT.Bone,
                                     VERTEBRA_CODES[level], "trabecular", result.rois[name]))
    if "muscle_roi" in result.rois:
        label = f"{muscle_source} muscle ROI" if muscle_source else "muscle ROI"
        specs.append(SegmentSpec("muscle_roi", label, CATEGORY_TISSUE, codes.SCT.SkeletalMuscle, None, "muscle",
                                 result.rois["muscle_roi"]))
    if "fat_roi" in result.rois:
        specs.append(SegmentSpec("fat_roi", "subcutaneous fat ROI", CATEGORY_TISSUE, codes.SCT.AdiposeTissue,
                                 codes.SCT.SubcutaneousTissue, "fat", result.rois["fat_roi"]))
    for side in SIDES:
        for region in HIP_REGIONS:
            name = f"hip_{region}_roi_{side}"
            if name in result.rois:
                specs.append(SegmentSpec(name, f"{side} hip {region.replace('_', ' ')} ROI", CATEGORY_TISSUE,
                                         codes.SCT.Bone, codes.SCT.ProximalFemur, "hip", result.rois[name]))
    if result.labels is not None:
        for level in VERTEBRA_LEVELS:
            mask = result.labels.array == vertebra_label(level)
            if mask.any():
                specs.append(SegmentSpec(f"vertebra_{level}", f"{level} vertebra", CATEGORY_ANATOMY,
                                         VERTEBRA_CODES[level], None, "vertebra", mask))
    return specs


def frame_indices(ct: Volume, datasets: Sequence[Dataset]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each source slice in turn, the (k, j, i) LPS voxel of each of its pixels: three int arrays of
    shape (rows, columns). Raises SegmentationError if a slice is not on the CT grid (checked lazily, slice
    by slice, so that a 512x512x300 CT never holds index arrays for the whole series)."""
    direction = np.asarray(ct.direction, float).reshape(3, 3)  # columns: i, j, k axes in LPS
    spacing_ijk = np.asarray(ct.spacing_mm[::-1], float)
    to_index = np.linalg.inv(direction * spacing_ijk)  # LPS mm offset -> (i, j, k)
    origin = np.asarray(ct.origin_lps_mm, float)
    shape_ijk = np.asarray(ct.shape[::-1])
    planes = {(tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 3)), tuple(ds.ImageOrientationPatient))
              for ds in datasets}
    if len(planes) < len(datasets):
        raise SegmentationError("two source slices at the same position (two series mixed in the folder?)")
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        row_dir = np.asarray(ds.ImageOrientationPatient[:3], float)  # along a row: increasing column
        col_dir = np.asarray(ds.ImageOrientationPatient[3:], float)
        spacing_between_rows, spacing_between_cols = (float(v) for v in ds.PixelSpacing)
        start = to_index @ (np.asarray(ds.ImagePositionPatient, float) - origin)
        step_col = to_index @ (row_dir * spacing_between_cols)
        step_row = to_index @ (col_dir * spacing_between_rows)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        ijk = start[:, None, None] + step_row[:, None, None] * r + step_col[:, None, None] * c
        rounded = np.rint(ijk)
        if np.abs(ijk - rounded).max() > ON_GRID_TOLERANCE_VOXELS:
            raise SegmentationError(f"source slice {ds.SOPInstanceUID}: its pixels are not on the analysed CT's "
                                    "grid (another series or a different slice spacing)")
        idx = rounded.astype(np.int64)
        if (idx < 0).any() or (idx >= shape_ijk[:, None, None]).any():
            raise SegmentationError(f"source slice {ds.SOPInstanceUID}: lies outside the analysed CT")
        yield idx[2], idx[1], idx[0]


def seg_frames(specs: Sequence[SegmentSpec], ct: Volume, datasets: Sequence[Dataset]) -> np.ndarray:
    """The segments on the source slices: bool (n_slices, rows, columns, n_segments)."""
    frames = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns), len(specs)), dtype=bool)
    for f, (k, j, i) in enumerate(frame_indices(ct, datasets)):
        for s, spec in enumerate(specs):
            frames[f, :, :, s] = spec.mask[k, j, i]
    return frames


def _color(key: str) -> hd.color.CIELabColor:
    return hd.color.CIELabColor.from_rgb(*COLORS_RGB[key])


def algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name="OpportunisticBMD", version=__version__,
                                              family=codes.cid7162.ArtificialIntelligence)


def build_segmentation(specs: Sequence[SegmentSpec], ct: Volume, datasets: Sequence[Dataset], *,
                       series_uid: str, sop_uid: str, series_number: int) -> hd.seg.Segmentation:
    """A BINARY SEG of ``specs`` on ``datasets`` (segment ``n`` is ``specs[n - 1]``; segments may overlap)."""
    if not specs:
        raise SegmentationError("nothing to put in a DICOM SEG: no ROI and no vertebra label")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=spec.label, segmented_property_category=spec.category,
            segmented_property_type=spec.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm(), tracking_uid=hd.UID(), tracking_id=spec.name,
            anatomic_regions=[spec.region] if spec.region is not None else None,
            display_color=_color(spec.color))
        for number, spec in enumerate(specs, start=1)]
    return hd.seg.Segmentation(
        source_images=list(datasets), pixel_array=seg_frames(specs, ct, datasets),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer="OpportunisticBMD", manufacturer_model_name="obmd analyze", software_versions=__version__,
        device_serial_number="0", series_description="OBMD ROIs and vertebrae",
        content_label="OBMD_ROIS", content_description="Trabecular, reference-tissue and hip ROIs; vertebrae",
        omit_empty_frames=True)
