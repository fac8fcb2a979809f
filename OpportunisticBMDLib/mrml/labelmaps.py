"""Label maps of our schema <-> a segmentation node (one segment per label present); segments named or
tagged by other tools (TotalSegmentator names, our display names, SNOMED CT terminology) are read back
as our label ids."""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import slicer.util
import vtk

from ..labels import LABEL_NAMES, LABELS
from ..volume import Volume
from .edits import TAG_KEY, TAG_LABEL_ID, quiet, segment_tag
from .segment_arrays import ijk_to_ras
from .segment_names import label_display_name, label_id_of_name, label_id_of_terminology, terminology_entry
from .segments import new_segmentation_node, set_segment_mask
from .volumes import node_array_to_ours, ours_to_node_array


def labels_to_segmentation(labels: Volume, reference_node: Any, seg_node: Any = None, name: str = "Labels") -> Any:
    """A label map of our schema as a segmentation: one named, colored, terminology-tagged segment
    per label present (segment id = our label name)."""
    seg_node = seg_node or new_segmentation_node(reference_node, name)
    array_node = ours_to_node_array(labels.array, labels, reference_node)
    with quiet(seg_node):
        for label_id in sorted(int(v) for v in np.unique(array_node) if v != 0):
            key = LABEL_NAMES.get(label_id, f"label_{label_id}")
            set_segment_mask(seg_node, key, array_node == label_id, reference_node, label_display_name(key))
            segment = seg_node.GetSegmentation().GetSegment(key)
            segment.SetTag(TAG_LABEL_ID, str(label_id))
            entry = terminology_entry(key)
            if entry is not None:
                segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    return seg_node


def _label_id_of_segment(seg_node: Any, segment_id: str) -> int | None:
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    tag = segment_tag(seg_node, segment_id, TAG_LABEL_ID)
    if tag is not None:
        return int(tag)
    key = segment_tag(seg_node, segment_id, TAG_KEY)
    if key is not None and key not in LABELS:  # one of our ROIs, not an anatomical label
        return None
    return (
        label_id_of_name(segment_id)
        or label_id_of_name(segment.GetName())
        or label_id_of_terminology(segment_tag(seg_node, segment_id, slicer.vtkSegment.GetTerminologyEntryTagName()))
    )


def _export_segments(seg_node: Any, segment_ids: list[str], reference_node: Any) -> np.ndarray:
    """Segments into one array in the reference node's IJK: value n+1 where ``segment_ids[n]`` is
    (later segments win where they overlap). One export for all segments, not one per segment."""
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    scene = seg_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__obmd_export__")
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap_node, reference_node):
            raise RuntimeError(f"{seg_node.GetName()}: exporting segments failed")
        return np.array(slicer.util.arrayFromVolume(labelmap_node))
    finally:
        display = labelmap_node.GetDisplayNode()
        if display is not None and display.GetColorNode() is not None:
            scene.RemoveNode(display.GetColorNode())
        scene.RemoveNode(labelmap_node)


def segmentation_to_labels(seg_node: Any, reference_node: Any, like: Volume) -> Volume:
    """Segments back to one label map of our schema on ``like``'s grid. A segment's label comes from
    its ``OBMD.LabelId`` tag, else its id or name (our schema, TotalSegmentator's, or our display names),
    else its SNOMED CT terminology (later segments win where they overlap); segments that are not labels
    (ROIs, unknown names) are skipped."""
    segmentation = seg_node.GetSegmentation()
    segment_ids, label_ids = [], []
    for segment_id in segmentation.GetSegmentIDs():
        label_id = _label_id_of_segment(seg_node, segment_id)
        if label_id:
            segment_ids.append(segment_id)
            label_ids.append(label_id)
    if not segment_ids:
        return like.like(np.zeros(like.shape, dtype=np.int16), kind="labels")
    out = _labels_from_layers(seg_node, segment_ids, label_ids, reference_node)
    if out is None:  # segments not on the reference grid: let Slicer resample them
        lut = np.asarray([0, *label_ids], dtype=np.int16)
        out = lut[_export_segments(seg_node, segment_ids, reference_node)]
    return like.like(node_array_to_ours(out, reference_node), kind="labels")


def _labels_from_layers(
    seg_node: Any, segment_ids: list[str], label_ids: list[int], reference_node: Any
) -> np.ndarray | None:
    """Label array read straight from the segmentation's shared labelmap layers (one lookup per layer
    instead of one export per segment); None when a layer is not on the reference node's grid."""
    from vtkmodules.util import numpy_support

    segmentation = seg_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != name or seg_node.GetParentTransformNode() is not None:
        return None
    if reference_node.GetParentTransformNode() is not None:
        return None
    reference = ijk_to_ras(reference_node)
    layers: dict[str, tuple[Any, dict[int, int]]] = {}
    for segment_id, label_id in zip(segment_ids, label_ids, strict=True):
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(name)
        if image is None:
            return None
        key = image.GetAddressAsString("vtkOrientedImageData")
        layers.setdefault(key, (image, {}))[1][int(segment.GetLabelValue())] = label_id
    dims = reference_node.GetImageData().GetDimensions()
    out = np.zeros(dims[::-1], dtype=np.int16)
    for image, value_to_label in layers.values():
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        if not np.allclose([[m.GetElement(r, c) for c in range(4)] for r in range(4)], reference, atol=1e-6):
            return None
        e = image.GetExtent()
        lo = [max(e[2 * a], 0) for a in range(3)]
        hi = [min(e[2 * a + 1], dims[a] - 1) for a in range(3)]
        if any(h < lo_ for lo_, h in zip(lo, hi, strict=True)) or image.GetPointData().GetScalars() is None:
            continue
        values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        values = values.reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        crop = values[lo[2] - e[4]: hi[2] - e[4] + 1, lo[1] - e[2]: hi[1] - e[2] + 1, lo[0] - e[0]: hi[0] - e[0] + 1]
        lut = np.zeros(max(int(crop.max()), max(value_to_label)) + 1, dtype=np.int16)
        for value, label_id in value_to_label.items():
            lut[value] = label_id
        mapped = lut[crop.astype(np.int64, copy=False)]
        target = out[lo[2]: hi[2] + 1, lo[1]: hi[1] + 1, lo[0]: hi[0] + 1]
        np.copyto(target, mapped, where=mapped > 0)
    return out

