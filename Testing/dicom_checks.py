"""Checks shared by the DICOM output tests: dciodvfy's verdict, SEG masks as physical points, SR numbers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk

DCIODVFY = shutil.which("dciodvfy")


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy (dicom3tools) reports for one DICOM file."""
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def nifti_points_mm(path: Path) -> np.ndarray:
    """LPS positions (mm) of a mask file's non-zero voxels, sorted (SimpleITK's geometry, not ours)."""
    image = sitk.ReadImage(str(path))
    zyx = np.argwhere(sitk.GetArrayFromImage(image) > 0)
    xyz = zyx[:, ::-1].astype(float)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    points = (direction @ (xyz * np.asarray(image.GetSpacing())).T).T + np.asarray(image.GetOrigin())
    return _sorted(points)


def seg_points_mm(seg: hd.seg.Segmentation, segment_number: int) -> np.ndarray:
    """LPS positions (mm) of a SEG segment's pixels, from highdicom's volume of the SEG frames."""
    volume = seg.get_volume(segment_numbers=[segment_number], combine_segments=False)
    idx = np.argwhere(volume.array[..., 0] > 0).astype(float)
    points = (volume.affine[:3, :3] @ idx.T).T + volume.affine[:3, 3]
    return _sorted(points)


def _sorted(points: np.ndarray) -> np.ndarray:
    rounded = np.round(points, 2)
    return rounded[np.lexsort(rounded.T[::-1])] if len(rounded) else rounded


def segment_numbers(seg: hd.seg.Segmentation) -> dict[str, int]:
    """tracking id (our ROI name) -> segment number."""
    return {str(item.TrackingID): int(item.SegmentNumber) for item in seg.SegmentSequence}


def sr_numbers(path: Path) -> dict[str, dict[str, tuple[float, str]]]:
    """{group tracking identifier: {concept code value: (value, UCUM unit)}} of every measurement group, plus
    '<id>:category' -> the coded category's meaning, and '<id>:segment' -> the referenced segment number."""
    report = hd.sr.srread(path)
    out: dict[str, dict] = {}
    groups = (list(report.content.get_volumetric_roi_measurement_groups())
              + list(report.content.get_image_measurement_groups()))
    for group in groups:
        entry = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
        for evaluation in group.get_qualitative_evaluations():
            entry["category"] = evaluation.value.meaning
        reference = getattr(group, "referenced_segment", None)
        if reference is not None:
            entry["segment"] = reference.referenced_segment_numbers[0]
        entry["text"] = [str(item.TextValue) for item in group[0].ContentSequence  # our comments (DCM 121106)
                         if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"]
        out[str(group.tracking_identifier)] = entry
    return out
