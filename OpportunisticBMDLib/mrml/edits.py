"""The one way a user's edit of a segment is detected: a digest of the segment's voxels compared with a
digest taken earlier.

Segments the program writes carry ``OBMD.Key`` (our label name or ROI key), ``OBMD.Mask`` (the digest of
the mask as the program wrote it) and ``OBMD.Edited`` ("1" once a user changed the segment). Why voxels
and not events: an edit can reach a segment by many paths (Slicer's and trame-slicer's editor effects,
undo, ``slicer.util.updateSegmentBinaryLabelmapFromArray``, a scene reloaded from .mrb) and only the
voxels say whether it really changed (a stroke undone, a rename or recolor is no edit). Desktop Slicer
additionally observes the segmentation (:func:`watch_edits`) to mark results out of date at once; the
browser app compares the same digests after trame-slicer's editor has settled
(:class:`SegmentDigests`), because trame-slicer's closed-surface toggle fires SegmentModified without a
segment id and a VTK_STRING call-data observer on those events is not safe there.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import slicer
import vtk

from .segment_arrays import segment_mask

TAG_KEY = "OBMD.Key"
TAG_MASK = "OBMD.Mask"
TAG_EDITED = "OBMD.Edited"
TAG_LABEL_ID = "OBMD.LabelId"  # our label id, on the segments of a label segmentation
ATTR_WRITING = "OBMD.Writing"  # "1" on a segmentation node while the program writes it (see quiet)


def mask_digest(mask: np.ndarray) -> str:
    """Digest of a mask's voxels (and its shape). The one digest: stored in ``OBMD.Mask`` tags (saved
    with scenes, so its definition must not change) and compared by every edit check."""
    return hashlib.sha1(np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()[:16]


def segment_tag(seg_node: Any, segment_id: str, tag: str) -> str | None:
    """A segment's tag value (None when absent)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    value = vtk.mutable("")
    return str(value) if segment is not None and segment.GetTag(tag, value) else None


def is_edited(seg_node: Any, segment_id: str) -> bool:
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    value = vtk.mutable("")
    return bool(segment is not None and segment.GetTag(TAG_EDITED, value) and str(value) == "1")


def set_edited(seg_node: Any, segment_id: str, edited: bool = True) -> None:
    seg_node.GetSegmentation().GetSegment(segment_id).SetTag(TAG_EDITED, "1" if edited else "0")


def update_edited_tags(seg_node: Any, reference_node: Any, prefix: str = "") -> list[str]:
    """Tag as edited every segment (whose id starts with ``prefix``) whose voxels differ from what the
    program wrote; returns their ids."""
    edited = []
    segmentation = seg_node.GetSegmentation()
    for segment_id in segmentation.GetSegmentIDs():
        if not segment_id.startswith(prefix):
            continue
        segment = segmentation.GetSegment(segment_id)
        stored = vtk.mutable("")
        if not segment.GetTag(TAG_MASK, stored):
            continue
        if is_edited(seg_node, segment_id) or mask_digest(segment_mask(seg_node, segment_id, reference_node)) != str(
            stored
        ):
            set_edited(seg_node, segment_id)
            edited.append(segment_id)
    return edited


def watch_edits(seg_node: Any, on_edit: Any = None, reference_node: Any = None) -> int:
    """Observe user edits: a segment whose voxels now differ from what the program wrote gets
    ``OBMD.Edited`` and ``on_edit(segment_id)`` is called (renaming or recoloring is not an edit).

    ``reference_node`` (the CT) defaults to the segmentation's reference geometry volume. Writes made
    through this module are ignored. Returns the observer tag on ``seg_node.GetSegmentation()``
    (``seg_node.GetSegmentation().RemoveObserver(tag)`` stops it)."""
    segmentation = seg_node.GetSegmentation()
    if reference_node is None:
        reference_node = seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole())

    # Slicer's segment editor effects and write_segment_array fire SourceRepresentationModified; renames
    # and tag changes do not. Other writers (e.g. slicer.util.updateSegmentBinaryLabelmapFromArray) are
    # caught by the same digest at Recompute (update_edited_tags, segments.read_rois).
    @vtk.calldata_type(vtk.VTK_STRING)
    def on_segment_modified(*args: Any) -> None:
        # (caller, event, segment_id); some SegmentModified events carry no segment id (e.g. the
        # closed-surface toggle of trame-slicer's editor), and then the callback gets two arguments.
        segment_id = args[2] if len(args) > 2 else None
        if seg_node.GetAttribute(ATTR_WRITING) == "1" or not segment_id:
            return
        segment = segmentation.GetSegment(segment_id)
        if segment is None or not segment.HasTag(TAG_MASK):
            return
        if reference_node is not None:
            stored = segment_tag(seg_node, segment_id, TAG_MASK)
            if mask_digest(segment_mask(seg_node, segment_id, reference_node)) == stored:
                return
        if not is_edited(seg_node, segment_id):
            with quiet(seg_node):
                set_edited(seg_node, segment_id)
        if on_edit is not None:
            on_edit(segment_id)

    return segmentation.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, on_segment_modified)


class quiet:
    """Context manager marking programmatic writes so :func:`watch_edits` ignores them."""

    def __init__(self, seg_node: Any) -> None:
        self.seg_node = seg_node

    def __enter__(self) -> None:
        self.seg_node.SetAttribute(ATTR_WRITING, "1")

    def __exit__(self, *exc: Any) -> None:
        self.seg_node.SetAttribute(ATTR_WRITING, "0")


class SegmentDigests:
    """:func:`mask_digest` of every segment of a segmentation, recomputed only for segments whose labelmap
    changed since the last call (the browser app asks after every stroke; a 512x512 CT's mask takes a
    while to read)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, str]] = {}

    def clear(self) -> None:
        self._cache = {}

    def __call__(self, seg_node: Any, reference_node: Any) -> dict[str, str]:
        """Segment id -> digest of its voxels on ``reference_node``'s grid."""
        if seg_node is None:
            return {}
        representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        segmentation = seg_node.GetSegmentation()
        out = {}
        for segment_id in segmentation.GetSegmentIDs():
            segment = segmentation.GetSegment(segment_id)
            labelmap = segment.GetRepresentation(representation)
            key = (id(labelmap), labelmap.GetMTime() if labelmap is not None else 0, segment.GetLabelValue())
            cached = self._cache.get(segment_id)
            if cached is None or cached[0] != key:
                cached = (key, mask_digest(segment_mask(seg_node, segment_id, reference_node)))
                self._cache[segment_id] = cached
            out[segment_id] = cached[1]
        return out
