"""Helpers shared by the MRML tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IJK_TO_HIGHDICOM = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # (i,j,k)->(k,j,i)


def edit_segment(scene, seg_node, segment_id, volume_node, mask_node_ijk, mode="remove"):
    """Change a segment as a user would, through Slicer's segment editor logic."""
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    editor.SetSegmentEditorNode(scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
    editor.SetSegmentationNode(seg_node)
    editor.SetSourceVolumeNode(volume_node)
    editor.UpdateAlignedSourceVolume()
    editor.SaveStateForUndo()
    modifier = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(volume_node)
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    voxels = numpy_support.vtk_to_numpy(modifier.GetPointData().GetScalars())
    voxels[:] = mask_node_ijk.astype(np.uint8).ravel()
    modifier.Modified()
    mode_id = {"remove": editor.ModificationModeRemove, "add": editor.ModificationModeAdd}[mode]
    editor.ModifySegmentByLabelmap(seg_node, segment_id, modifier, mode_id, False, True)


def _vtk_matrix(m: np.ndarray):
    import vtk

    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def load_seg_as_segmentation(path: Path, scene):
    """A vtkMRMLSegmentationNode with one segment per SEG segment (name = SegmentLabel), made as Slicer's DICOM
    SEG plugin makes it (slicer-core has no DICOM module): each segment's frames become a labelmap node on the
    SEG's own geometry (plane positions, orientation, spacing; highdicom), imported through Slicer's
    segmentations logic. Returns the node and {tracking id (our ROI name): segment id}."""
    import highdicom as hd
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


def assert_segments_equal_masks(seg_node, names: dict[str, str], masks_dir: Path, scene) -> list[str]:
    """Every ``masks_dir/<roi>.nii.gz`` equals the segment of that ROI voxel for voxel, once Slicer exports
    the segment onto the mask's grid; returns the ROI names checked."""
    import slicer
    import slicer.util
    import vtk

    from OpportunisticBMDLib.mrml import scene as mrml_scene

    checked = []
    for mask in sorted(Path(masks_dir).glob("*.nii.gz")):
        roi = mask.name.removesuffix(".nii.gz")
        reference = mrml_scene.load_volume(mask, labelmap=True)
        exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(names[roi])
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, exported, reference)
        expected = slicer.util.arrayFromVolume(reference) > 0
        got = slicer.util.arrayFromVolume(exported) > 0
        assert expected.any() and np.array_equal(got, expected), roi
        checked.append(roi)
    assert checked, f"no masks in {masks_dir}"
    return checked
