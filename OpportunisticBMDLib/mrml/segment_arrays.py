"""A segment's voxels as a numpy array in the reference volume node's IJK, read and written fast (straight
from the segmentation's binary labelmap when it lies on the reference grid, only the mask's bounding box
handed to Slicer on writes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import slicer.util
import vtk


def write_segment_array(seg_node: Any, segment_id: str, mask_node: np.ndarray, reference_node: Any) -> None:
    """Replace a segment's voxels with a 0/1 array ``[k, j, i]`` in the reference node's IJK, handing
    Slicer only the mask's bounding box (a full-grid import is slow on a 512x512 CT)."""
    mask_node = np.asarray(mask_node) > 0
    nonzero = [np.flatnonzero(mask_node.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(n) == 0 for n in nonzero):
        k0 = k1 = j0 = j1 = i0 = i1 = 0
    else:
        (k0, k1), (j0, j1), (i0, i1) = [(int(n[0]), int(n[-1])) for n in nonzero]
    crop = np.ascontiguousarray(mask_node[k0: k1 + 1, j0: j1 + 1, i0: i1 + 1].astype(np.uint8))
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i0, i1, j0, j1, k0, k1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    m = vtk.vtkMatrix4x4()
    reference_node.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    from vtkmodules.util import numpy_support

    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = crop.ravel()
    image.Modified()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, seg_node, segment_id, logic.MODE_REPLACE):
        raise RuntimeError(f"{seg_node.GetName()}: writing segment {segment_id} failed")


def ijk_to_ras(node: Any) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _internal_mask(seg_node: Any, segment_id: str, reference_node: Any) -> np.ndarray | None:
    """The segment read straight from its (possibly shared, cropped) binary labelmap when that lies on
    the reference node's voxel grid; None when it does not (then it must be resampled)."""
    segmentation = seg_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segment = segmentation.GetSegment(segment_id)
    if segment is None or segmentation.GetSourceRepresentationName() != name:
        return None
    if seg_node.GetParentTransformNode() is not None or reference_node.GetParentTransformNode() is not None:
        return None
    image = segment.GetRepresentation(name)
    if image is None or image.GetPointData().GetScalars() is None and image.GetNumberOfPoints() > 0:
        return None
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    image_to_world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    if not np.allclose(image_to_world, ijk_to_ras(reference_node), atol=1e-6):
        return None
    dims = reference_node.GetImageData().GetDimensions()
    out = np.zeros(dims[::-1], dtype=bool)
    e = image.GetExtent()
    if e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
        return out
    from vtkmodules.util import numpy_support

    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    values = values.reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    lo = [max(e[2 * a], 0) for a in range(3)]  # clip to the reference grid, in (i, j, k)
    hi = [min(e[2 * a + 1], dims[a] - 1) for a in range(3)]
    if any(h < lo_ for lo_, h in zip(lo, hi, strict=True)):
        return out
    crop = values[lo[2] - e[4]: hi[2] - e[4] + 1, lo[1] - e[2]: hi[1] - e[2] + 1, lo[0] - e[0]: hi[0] - e[0] + 1]
    out[lo[2]: hi[2] + 1, lo[1]: hi[1] + 1, lo[0]: hi[0] + 1] = crop == segment.GetLabelValue()
    return out


def segment_mask(seg_node: Any, segment_id: str, reference_node: Any) -> np.ndarray:
    """A segment as a bool mask ``[k, j, i]`` in the reference node's IJK (volume grid, not cropped)."""
    fast = _internal_mask(seg_node, segment_id, reference_node)
    if fast is not None:
        return fast
    array = slicer.util.arrayFromSegmentBinaryLabelmap(seg_node, segment_id, reference_node)
    return np.asarray(array) > 0
