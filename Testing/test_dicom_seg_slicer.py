"""Issue 16: our DICOM SEG becomes a Slicer segmentation with every ROI where its NIfTI mask is.

slicer-core has no DICOM module (Slicer's DICOM SEG plugin lives in the desktop application), so this test
does what that plugin does with highdicom: each segment's frames become a labelmap node on the SEG's own
geometry (plane positions, orientation, spacing), imported into a vtkMRMLSegmentationNode through Slicer's
segmentations logic; each segment is then exported onto the NIfTI mask's grid by Slicer and must equal it
voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import highdicom as hd  # noqa: E402

from OpportunisticBMDLib.cli import main  # noqa: E402
from OpportunisticBMDLib.mrml import scene as mrml_scene  # noqa: E402

DICOM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg-example" / "dicom_upper_abdomen"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IJK_TO_HIGHDICOM = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # (i,j,k)->(k,j,i)

pytestmark = pytest.mark.mrml


def _vtk_matrix(m: np.ndarray):
    import vtk

    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def load_seg_as_segmentation(path: Path, scene):
    """A vtkMRMLSegmentationNode with one segment per SEG segment (name = SegmentLabel)."""
    import slicer
    import slicer.util

    seg = hd.seg.segread(path)
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "OBMD SEG")
    names = {}
    for item in seg.SegmentSequence:
        volume = seg.get_volume(segment_numbers=[item.SegmentNumber], combine_segments=False)
        label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        slicer.util.updateVolumeFromArray(label, (volume.array[..., 0] > 0).astype(np.uint8))  # (slice,row,col)=(k,j,i)
        label.SetIJKToRASMatrix(_vtk_matrix(LPS_TO_RAS @ volume.affine @ IJK_TO_HIGHDICOM))
        before = seg_node.GetSegmentation().GetNumberOfSegments()
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, seg_node)
        segment_id = seg_node.GetSegmentation().GetNthSegmentID(before)
        seg_node.GetSegmentation().GetSegment(segment_id).SetName(str(item.SegmentLabel))
        names[str(item.TrackingID)] = segment_id
        scene.RemoveNode(label)
    return seg_node, names


def test_seg_loads_into_slicer_where_the_masks_are(tmp_path):
    import slicer
    import slicer.util
    import vtk

    out = tmp_path / "out"
    assert main(["analyze", str(DICOM_DIR / "series"), "--seg", str(DICOM_DIR / "ct_seg_total.nii.gz"),
                 "--out", str(out), "--quiet"]) == 3
    scene, _app, _logics = mrml_scene.create_headless_scene()
    seg_node, names = load_seg_as_segmentation(out / "dicom" / "seg.dcm", scene)
    assert seg_node.GetSegmentation().GetNumberOfSegments() == len(names) >= 6
    masks = sorted((out / "masks").glob("*.nii.gz"))
    for mask in masks:
        reference = mrml_scene.load_volume(mask, labelmap=True)
        exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(names[mask.name.removesuffix(".nii.gz")])
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, exported, reference)
        expected = slicer.util.arrayFromVolume(reference) > 0
        got = slicer.util.arrayFromVolume(exported) > 0
        assert expected.any() and np.array_equal(got, expected), mask.name
