"""Helpers shared by the MRML tests (not a test module)."""

from __future__ import annotations

import numpy as np


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
