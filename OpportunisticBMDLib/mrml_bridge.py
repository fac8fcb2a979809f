"""The one bridge between MRML nodes (3D Slicer or slicer-core) and the library's plain objects.

Used by the Slicer module (``OpportunisticBMD/``) and the browser app (``web/``); nothing else in the
library imports slicer. Geometry: MRML stores RAS and a node's array is ``[k, j, i]`` in the node's
own IJK; the library's :class:`Volume` is LPS ``[k=S, j=P, i=L]`` (see :mod:`.volume`). The node's
IJK-to-RAS matrix is turned into an ITK (LPS) geometry and the array is reoriented by the same
permute/flip code that reads files (:func:`.io.volume_from_sitk`), so a node loaded from a file and
the file read by :func:`.io.read_ct` give identical Volumes, and every round trip is exact.

Segments carry tags: ``OBMD.Key`` (our label name or ROI key), ``OBMD.Mask`` (a digest of the
mask as the program wrote it) and ``OBMD.Edited`` ("1" once a user changed the segment).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk

from .io import DICOM_TAGS, HEADER_KEYS, volume_from_sitk
from .labels import LABEL_NAMES, LABELS, TOTALSEG_TO_OURS
from .validity import category_text
from .volume import SourceGeometry, Volume

TAG_KEY = "OBMD.Key"
TAG_MASK = "OBMD.Mask"
TAG_EDITED = "OBMD.Edited"
ATTR_RESULTS = "OBMD.Results"  # table attribute holding the full results.json text
ATTR_HEADER_PREFIX = "OBMD.Header."  # volume node attributes: the CT header fields (io.HEADER_KEYS)
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

# ---------------------------------------------------------------------------------------------
# Volumes


def node_geometry(node: Any) -> SourceGeometry:
    """A volume node's grid as ITK (LPS) geometry of its array's own axes."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    m = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.asarray(node.GetSpacing(), dtype=float)
    direction_lps = _LPS_FROM_RAS @ (m[:3, :3] / spacing)  # columns = node i, j, k axes
    origin_lps = _LPS_FROM_RAS @ m[:3, 3]
    dims = node.GetImageData().GetDimensions()
    return SourceGeometry(
        size_xyz=tuple(int(d) for d in dims),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(o) for o in origin_lps),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction_lps.ravel()),
    )


def _set_node_geometry(node: Any, geometry: SourceGeometry) -> None:
    direction_ras = _LPS_FROM_RAS @ np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    node.SetSpacing(*geometry.spacing_xyz_mm)
    node.SetOrigin(*(_LPS_FROM_RAS @ np.asarray(geometry.origin_lps_mm)))
    node.SetIJKToRASDirectionMatrix(_vtk4(direction_ras))


def _vtk4(m: np.ndarray) -> Any:
    out = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _sitk_on_geometry(array_node: np.ndarray, geometry: SourceGeometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_node))
    image.SetSpacing(geometry.spacing_xyz_mm)
    image.SetOrigin(geometry.origin_lps_mm)
    image.SetDirection(geometry.direction)
    return image


_ORIENTATIONS: dict[tuple[float, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _orientation(direction: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(transpose, flip axes) taking a ``[k, j, i]`` array with this ITK direction to the library grid:
    found by running the file reader's own reorientation (sitk.DICOMOrient) on a tiny index image, so
    arrays and the CT Volume always agree, oblique grids included."""
    key = tuple(round(d, 9) for d in direction)
    if key not in _ORIENTATIONS:
        source = np.arange(4 * 3 * 2, dtype=np.int32).reshape(4, 3, 2)
        image = sitk.GetImageFromArray(source)
        image.SetDirection(direction)
        target = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))
        for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
            moved = np.transpose(source, perm)
            if moved.shape != target.shape:
                continue
            for flips in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)):
                if np.array_equal(np.flip(moved, flips) if flips else moved, target):
                    _ORIENTATIONS[key] = (perm, flips)
        if key not in _ORIENTATIONS:
            raise RuntimeError(f"no axis permutation reproduces DICOMOrient for direction {direction}")
    return _ORIENTATIONS[key]


def node_array_to_ours(array_node: np.ndarray, node: Any) -> np.ndarray:
    """An array ``[k, j, i]`` in ``node``'s IJK (e.g. a segment mask) reoriented to the library grid
    (axis permutation and flips only: the same voxels)."""
    perm, flips = _orientation(node_geometry(node).direction)
    out = np.transpose(array_node, perm)
    return np.ascontiguousarray(np.flip(out, flips) if flips else out)


def ours_to_node_array(array: np.ndarray, like: Volume, node: Any) -> np.ndarray:
    """An array on the library grid (of ``like``, which must lie on ``node``'s grid) as ``[k, j, i]``
    in ``node``'s IJK."""
    if tuple(array.shape) != tuple(like.shape):
        raise ValueError(f"array {array.shape} is not on the grid {like.shape}")
    perm, flips = _orientation(node_geometry(node).direction)
    out = np.flip(array, flips) if flips else array
    return np.ascontiguousarray(np.transpose(out, np.argsort(perm)))


def volume_from_node(node: Any, dtype: Any = None) -> Volume:
    """A scalar or label map volume node as a :class:`Volume` (HU as float32 for scalar volumes)."""
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"{node.GetName()}: harden its transform first (the library works on the image grid)")
    geometry = node_geometry(node)
    array = slicer.util.arrayFromVolume(node)
    if dtype is None:
        dtype = np.int16 if node.IsA("vtkMRMLLabelMapVolumeNode") else np.float32
    metadata = {"mrml_node_id": node.GetID(), "name": node.GetName(), **header_of_node(node)}
    volume = volume_from_sitk(_sitk_on_geometry(array, geometry), metadata)
    volume.array = volume.array.astype(dtype, copy=False)
    volume.source_geometry = geometry
    return volume


def node_from_volume(volume: Volume, name: str = "CT", labelmap: bool = False, node: Any = None) -> Any:
    """A new (or updated) volume node holding ``volume`` on its source grid (or its own if none)."""
    scene = slicer.mrmlScene
    if node is None:
        cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(cls, name)
    geometry = volume.source_geometry or SourceGeometry(
        size_xyz=tuple(volume.shape[::-1]),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(volume.spacing_mm[::-1]),  # type: ignore[arg-type]
        origin_lps_mm=tuple(volume.origin_lps_mm),  # type: ignore[arg-type]
        direction=tuple(volume.direction),
    )
    perm, flips = _orientation(geometry.direction)
    array_node = np.flip(volume.array, flips) if flips else volume.array
    array_node = np.ascontiguousarray(np.transpose(array_node, np.argsort(perm)))
    if tuple(array_node.shape[::-1]) != tuple(geometry.size_xyz):
        raise ValueError(f"{name}: array {volume.array.shape} does not fit its source grid {geometry.size_xyz}")
    _set_node_geometry(node, geometry)
    slicer.util.updateVolumeFromArray(node, array_node)
    node.CreateDefaultDisplayNodes()
    set_header_attributes(node, volume.metadata)  # the header travels with the node (age, kVp: calibration)
    return node


def set_header_attributes(node: Any, metadata: dict[str, Any]) -> None:
    """Store the CT header fields of ``metadata`` (:data:`io.HEADER_KEYS`) as ``OBMD.Header.*`` attributes
    (saved with the scene; read back by :func:`header_of_node`)."""
    for key in HEADER_KEYS:
        if metadata.get(key) not in (None, ""):
            node.SetAttribute(ATTR_HEADER_PREFIX + key, str(metadata[key]))


def header_of_node(node: Any) -> dict[str, str]:
    """CT header fields of a volume node: its ``OBMD.Header.*`` attributes (set when the library made the
    node from a file), else the DICOM database's values for the series it was loaded from (Slicer's DICOM
    module sets ``DICOM.instanceUIDs``). Empty when neither is there (e.g. a NRRD dropped into Slicer)."""
    header = {key: node.GetAttribute(ATTR_HEADER_PREFIX + key) for key in HEADER_KEYS
              if node.GetAttribute(ATTR_HEADER_PREFIX + key)}
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if uids and database is not None:
        for key in HEADER_KEYS:
            if key in header or key not in DICOM_TAGS:
                continue
            try:
                value = database.instanceValue(uids[0], DICOM_TAGS[key].replace("|", ","))
            except Exception:  # a database without that instance: the header stays as it is
                value = ""
            if value and value.strip():
                header[key] = value.strip()
    return header


# ---------------------------------------------------------------------------------------------
# Segment names, colors, terminology

# Display colors (RGB 0-1): bone like Slicer's "bone", muscle red, fat yellow, organs by habit.
_COLOR_BY_PREFIX = {
    "vertebra": (0.95, 0.84, 0.57), "sacrum": (0.86, 0.75, 0.50), "rib": (0.99, 0.91, 0.62),
    "intervertebral_disc": (0.74, 0.86, 0.93), "femur": (0.90, 0.80, 0.55), "hip": (0.82, 0.72, 0.48),
    "psoas": (0.75, 0.33, 0.28), "paraspinal": (0.65, 0.28, 0.25), "other_muscle": (0.55, 0.25, 0.22),
    "subcutaneous_fat": (0.98, 0.90, 0.35), "visceral_fat": (0.93, 0.80, 0.25), "body": (0.85, 0.70, 0.65),
    "aorta": (0.85, 0.10, 0.10), "inferior_vena_cava": (0.20, 0.35, 0.85), "liver": (0.55, 0.25, 0.15),
    "spleen": (0.60, 0.30, 0.50), "kidney": (0.70, 0.45, 0.35), "bowel": (0.80, 0.60, 0.45),
    "metal": (0.50, 0.50, 0.55), "table": (0.30, 0.30, 0.30),
    "trabecular": (0.10, 0.70, 0.95), "muscle_roi": (0.95, 0.20, 0.55), "fat_roi": (1.00, 0.60, 0.00),
}

# SNOMED CT codes (type, modifier) as SlicerTotalSegmentator maps TotalSegmentator classes
# (lassoan/SlicerTotalSegmentator, TotalSegmentator/Resources/totalsegmentator_snomed_mapping.csv).
_SCT = {
    "vertebra_T10": ("7610001", "T10 vertebra"), "vertebra_T11": ("12989004", "T11 vertebra"),
    "vertebra_T12": ("23215003", "T12 vertebra"), "vertebra_L1": ("66794005", "L1 vertebra"),
    "vertebra_L2": ("14293000", "L2 vertebra"), "vertebra_L3": ("36470004", "L3 vertebra"),
    "vertebra_L4": ("11994002", "L4 vertebra"), "vertebra_L5": ("49668003", "L5 vertebra"),
    "sacrum": ("54735007", "Sacrum"), "femur": ("71341001", "Femur"), "hip": ("29836001", "Hip"),
    "psoas": ("68455001", "Iliopsoas muscle"), "paraspinal": ("244849004", "Deep muscle of back"),
    "aorta": ("15825003", "Aorta"), "inferior_vena_cava": ("64131007", "Inferior vena cava"),
    "liver": ("10200004", "Liver"), "spleen": ("78961009", "Spleen"), "kidney": ("64033007", "Kidney"),
    "subcutaneous_fat": ("67769002", "Subcutaneous fatty tissue"), "other_muscle": ("127954009", "Skeletal muscle"),
}
_SIDE = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right"}


# ROI key -> the label whose terminology describes the tissue it samples.
_ROI_TERMINOLOGY = {"muscle_roi": "psoas", "fat_roi": "subcutaneous_fat"}


def roi_display_name(key: str) -> str:
    """Segment name shown to users for a ROI key of ``AnalysisResult.rois``."""
    if key.startswith("trabecular_"):
        return f"Trabecular ROI {key.split('_', 1)[1]}"
    fixed = {"muscle_roi": "Muscle ROI (psoas)", "fat_roi": "Fat ROI (subcutaneous)"}
    if key in fixed:
        return fixed[key]
    hip = re.fullmatch(r"hip_(\w+)_roi_(left|right)", key)
    if hip:  # e.g. hip_neck_roi_right -> "Hip neck ROI (right)"
        return f"Hip {hip.group(1).replace('_', ' ')} ROI ({hip.group(2)})"
    return key.replace("_", " ").capitalize()


def label_display_name(name: str) -> str:
    """Segment name for a label of our schema (``vertebra_L1`` -> ``L1 vertebra``)."""
    if name.startswith("vertebra_"):
        return f"{name.split('_', 1)[1]} vertebra"
    return name.replace("_", " ")


def color_for(key: str) -> tuple[float, float, float]:
    if key.startswith("hip_") and "_roi_" in key:
        return (1.0, 0.84, 0.04)  # hip ROIs drawn like the DXA-like report's regions
    for prefix, color in _COLOR_BY_PREFIX.items():
        if key.startswith(prefix):
            return color
    rng = np.random.default_rng(abs(hash(key)) % 2**32)  # stable within a run; unknown keys only
    return tuple(float(c) for c in rng.uniform(0.3, 0.9, 3))  # type: ignore[return-value]


def terminology_entry(name: str) -> str | None:
    """Slicer terminology string for our label ``name`` where a SNOMED code is known."""
    side = ""
    base = name
    for s in ("_left", "_right"):
        if name.endswith(s):
            base, side = name[: -len(s)], _SIDE[s[1:]]
    code = _SCT.get(base)
    if code is None:
        return None
    category = "SCT^85756007^Tissue" if base == "subcutaneous_fat" else "SCT^123037004^Anatomical Structure"
    return (
        f"Segmentation category and type - OpportunisticBMD~{category}~SCT^{code[0]}^{code[1]}~{side or '^^'}"
        "~Anatomic codes - DICOM master list~^^~^^"
    )


def _mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha1(np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Segmentations


def new_segmentation_node(reference_node: Any, name: str) -> Any:
    seg_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg_node.CreateDefaultDisplayNodes()
    seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    return seg_node


def _set_segment_mask(seg_node: Any, key: str, mask_node: np.ndarray, reference_node: Any, display: str) -> str:
    """Create or replace segment ``key`` with a 0/1 array in the reference node's IJK; returns its id."""
    segmentation = seg_node.GetSegmentation()
    segment = segmentation.GetSegment(key)
    if segment is None:
        segmentation.AddEmptySegment(key, display, list(color_for(key)))
        segment = segmentation.GetSegment(key)
    segment.SetName(display)
    segment.SetNameAutoGenerated(False)  # keep our names when a terminology is chosen
    segment.SetColorAutoGenerated(False)
    write_segment_array(seg_node, key, mask_node, reference_node)
    segment.SetTag(TAG_KEY, key)
    segment.SetTag(TAG_MASK, _mask_digest(mask_node))
    segment.SetTag(TAG_EDITED, "0")
    return key


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


def _ijk_to_ras(node: Any) -> np.ndarray:
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
    if not np.allclose(image_to_world, _ijk_to_ras(reference_node), atol=1e-6):
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
        if is_edited(seg_node, segment_id) or _mask_digest(segment_mask(seg_node, segment_id, reference_node)) != str(
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

    # Segment editor effects (Slicer's and trame-slicer's) and write_segment_array fire
    # SourceRepresentationModified; renames and tag changes do not. Other writers (e.g.
    # slicer.util.updateSegmentBinaryLabelmapFromArray) are caught by the digest at Recompute.
    @vtk.calldata_type(vtk.VTK_STRING)
    def on_segment_modified(*args: Any) -> None:
        # (caller, event, segment_id); some SegmentModified events carry no segment id (e.g. the
        # closed-surface toggle of trame-slicer's editor), and then the callback gets two arguments.
        segment_id = args[2] if len(args) > 2 else None
        if seg_node.GetAttribute("OBMD.Writing") == "1" or not segment_id:
            return
        segment = segmentation.GetSegment(segment_id)
        if segment is None or not segment.HasTag(TAG_MASK):
            return
        if reference_node is not None:
            stored = segment_tag(seg_node, segment_id, TAG_MASK)
            if _mask_digest(segment_mask(seg_node, segment_id, reference_node)) == stored:
                return
        if not is_edited(seg_node, segment_id):
            with _quiet(seg_node):
                set_edited(seg_node, segment_id)
        if on_edit is not None:
            on_edit(segment_id)

    return segmentation.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, on_segment_modified)


class _quiet:
    """Context manager marking programmatic writes so :func:`watch_edits` ignores them."""

    def __init__(self, seg_node: Any) -> None:
        self.seg_node = seg_node

    def __enter__(self) -> None:
        self.seg_node.SetAttribute("OBMD.Writing", "1")

    def __exit__(self, *exc: Any) -> None:
        self.seg_node.SetAttribute("OBMD.Writing", "0")


def labels_to_segmentation(labels: Volume, reference_node: Any, seg_node: Any = None, name: str = "Labels") -> Any:
    """A label map of our schema as a segmentation: one named, colored, terminology-tagged segment
    per label present (segment id = our label name)."""
    seg_node = seg_node or new_segmentation_node(reference_node, name)
    array_node = ours_to_node_array(labels.array, labels, reference_node)
    with _quiet(seg_node):
        for label_id in sorted(int(v) for v in np.unique(array_node) if v != 0):
            key = LABEL_NAMES.get(label_id, f"label_{label_id}")
            _set_segment_mask(seg_node, key, array_node == label_id, reference_node, label_display_name(key))
            segment = seg_node.GetSegmentation().GetSegment(key)
            segment.SetTag("OBMD.LabelId", str(label_id))
            entry = terminology_entry(key)
            if entry is not None:
                segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    return seg_node


def _label_id_of_name(name: str) -> int | None:
    """Our label id for a segment named in our schema, TotalSegmentator's (``vertebrae_L1``) or as we
    display it (``L1 vertebra``)."""
    if name in LABELS:
        return LABELS[name]
    if name in TOTALSEG_TO_OURS:
        return LABELS[TOTALSEG_TO_OURS[name]]
    return _DISPLAY_TO_LABEL.get(name.strip().lower())


_DISPLAY_TO_LABEL = {label_display_name(name).lower(): label_id for name, label_id in LABELS.items() if label_id}


def _label_id_of_terminology(entry: str | None) -> int | None:
    """Our label id from a segment's DICOM terminology (SNOMED CT type and left/right modifier), as
    SlicerTotalSegmentator and other tools tag their segments."""
    if not entry:
        return None
    fields = entry.split("~")
    if len(fields) < 4:
        return None
    type_code = fields[2].split("^")[1] if fields[2].count("^") >= 2 else ""
    modifier_code = fields[3].split("^")[1] if fields[3].count("^") >= 2 else ""
    side = {"7771000": "_left", "24028007": "_right"}.get(modifier_code, "")
    for base, (code, _meaning) in _SCT.items():
        if code == type_code and f"{base}{side}" in LABELS:
            return LABELS[f"{base}{side}"]
    return None


def _label_id_of_segment(seg_node: Any, segment_id: str) -> int | None:
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    tag = segment_tag(seg_node, segment_id, "OBMD.LabelId")
    if tag is not None:
        return int(tag)
    key = segment_tag(seg_node, segment_id, TAG_KEY)
    if key is not None and key not in LABELS:  # one of our ROIs, not an anatomical label
        return None
    return (
        _label_id_of_name(segment_id)
        or _label_id_of_name(segment.GetName())
        or _label_id_of_terminology(segment_tag(seg_node, segment_id, slicer.vtkSegment.GetTerminologyEntryTagName()))
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
    reference = _ijk_to_ras(reference_node)
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


def rois_to_segmentation(
    rois: dict[str, np.ndarray],
    ct: Volume,
    reference_node: Any,
    seg_node: Any = None,
    name: str = "BMD ROIs",
    overwrite_edited: bool = False,
) -> Any:
    """ROI masks (``AnalysisResult.rois``, on ``ct``'s grid) as segments (id = ROI key).

    Segments tagged edited are kept as they are unless ``overwrite_edited``."""
    seg_node = seg_node or new_segmentation_node(reference_node, name)
    with _quiet(seg_node):
        for key, mask in rois.items():
            if seg_node.GetSegmentation().GetSegment(key) is not None and is_edited(seg_node, key):
                if not overwrite_edited:
                    continue
            mask_node = ours_to_node_array(mask.astype(np.uint8), ct, reference_node)
            _set_segment_mask(seg_node, key, mask_node, reference_node, roi_display_name(key))
            entry = terminology_entry(_ROI_TERMINOLOGY.get(key, ""))
            if entry is not None:
                seg_node.GetSegmentation().GetSegment(key).SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)
    return seg_node


def edit_segment_voxels(seg_node: Any, segment_id: str, mask: np.ndarray, ct: Volume, reference_node: Any) -> None:
    """Replace a segment's voxels with ``mask`` (on ``ct``'s grid) as a user edit would: the segment's
    program digest is kept, so :func:`update_edited_tags` (and :func:`watch_edits`) see it as edited."""
    write_segment_array(seg_node, segment_id, ours_to_node_array(mask, ct, reference_node), reference_node)


def read_rois(seg_node: Any, reference_node: Any, ct: Volume) -> tuple[dict[str, np.ndarray], list[str]]:
    """ROI segments (an ``OBMD.Key`` that is not a label) as bool masks on ``ct``'s grid, reading each
    segment once; segments whose voxels differ from what the program wrote are tagged edited.
    Returns ``(rois, edited segment ids)``."""
    rois, edited = {}, []
    segmentation = seg_node.GetSegmentation()
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        key = segment_tag(seg_node, segment_id, TAG_KEY)
        if key is None or key in LABELS or segment.HasTag("OBMD.LabelId"):
            continue
        mask_node = segment_mask(seg_node, segment_id, reference_node)
        if is_edited(seg_node, segment_id) or _mask_digest(mask_node) != segment_tag(seg_node, segment_id, TAG_MASK):
            if not is_edited(seg_node, segment_id):
                with _quiet(seg_node):
                    set_edited(seg_node, segment_id)
            edited.append(segment_id)
        rois[key] = node_array_to_ours(mask_node, reference_node)
    return rois, edited


def segmentation_to_rois(seg_node: Any, reference_node: Any, ct: Volume) -> dict[str, np.ndarray]:
    """Segments carrying an ``OBMD.Key`` that is not a label name, back to bool masks on ``ct``'s grid
    (edited segments get their tag on the way, see :func:`read_rois`)."""
    return read_rois(seg_node, reference_node, ct)[0]


# ---------------------------------------------------------------------------------------------
# Results table

# (column name, results key, unit, description) of the per-level spine table.
SPINE_COLUMNS = [
    ("vBMD", "vbmd_mg_cm3", "mg/cm3", "Volumetric BMD, hydroxyapatite-equivalent, trabecular ROI"),
    ("HU mean", "trabecular_hu_mean", "HU", "Mean CT number in the trabecular ROI"),
    ("HU median", "trabecular_hu_median", "HU", "Median CT number in the trabecular ROI"),
    ("HU SD", "trabecular_hu_sd", "HU", "Standard deviation of CT numbers in the trabecular ROI"),
    ("Voxel count", "voxel_count", "voxels", "Number of voxels in the trabecular ROI"),
    ("ROI volume", "roi_volume_mm3", "mm3", "Volume of the trabecular ROI"),
]


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def results_to_table(results: dict, table_node: Any = None, name: str = "BMD results") -> Any:
    """``results.json`` content as a table: one row per vertebral level then a summary row; units and
    descriptions per column as SegmentStatistics gives them; calibration as table attributes
    (``OBMD.calibration.<key>``); the whole results dict as the ``OBMD.Results`` attribute."""
    table_node = table_node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.RemoveAllColumns()
    table = table_node.GetTable()
    spine = results.get("spine", {})
    levels = spine.get("levels", {})
    summary = spine.get("summary", {})
    level_col = vtk.vtkStringArray()
    level_col.SetName("Level")
    num_cols = []
    for col_name, *_ in SPINE_COLUMNS:
        arr = vtk.vtkDoubleArray()
        arr.SetName(col_name)
        num_cols.append(arr)
    category_col = vtk.vtkStringArray()
    category_col.SetName("Category")
    for level, values in levels.items():
        level_col.InsertNextValue(level)
        for arr, (_, key, *_rest) in zip(num_cols, SPINE_COLUMNS, strict=True):
            arr.InsertNextValue(_num(values.get(key)))
        category_col.InsertNextValue("")
    used = summary.get("levels_used") or []
    level_col.InsertNextValue("Summary (" + "-".join(used) + ")" if used else "Summary")
    for arr, (_, key, *_rest) in zip(num_cols, SPINE_COLUMNS, strict=True):
        arr.InsertNextValue(_num(summary.get(key)))
    category_col.InsertNextValue(category_text(summary) if summary else "")
    for arr in [level_col, *num_cols, category_col]:
        table.AddColumn(arr)
    table_node.SetColumnDescription("Level", "Vertebral level (summary: mean of the levels used)")
    table_node.SetColumnDescription("Category", "ACR category of the summary vBMD")
    for col_name, _key, unit, description in SPINE_COLUMNS:
        table_node.SetColumnUnitLabel(col_name, unit)
        table_node.SetColumnTitle(col_name, f"{col_name} ({unit})")
        table_node.SetColumnDescription(col_name, description)
    for key, value in (results.get("calibration") or {}).items():
        if isinstance(value, (int, float, str)):
            table_node.SetAttribute(f"OBMD.calibration.{key}", str(value))
    table_node.SetAttribute(ATTR_RESULTS, json.dumps(results, default=_json_default))
    table_node.SetAttribute("OBMD.Status", str(results.get("status", "")))
    table_node.SetAttribute("OBMD.TableKind", "spine")
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


HIP_REGIONS = ("neck", "trochanter", "intertrochanter", "total_hip")
HIP_COLUMNS = [
    ("aBMD", "abmd_g_cm2", "g/cm2", "Areal BMD of the region in the DXA-like projection (CTXA-like)"),
    ("Area", "area_cm2", "cm2", "Projected area of the region"),
    ("BMC", "bmc_g", "g", "Bone mineral content of the region"),
    ("T-score", "t_score", "SD", "T-score vs NHANES III young White women (ISCD)"),
    ("T-score calibration SD", "t_score_calibration_sd", "SD",
     "1 SD of the T-score from the calibration itself (phantomless muscle-fat: the patient's unknown psoas fat); "
     "empty when the calibration states none (phantom line, user-given densities)"),
]


def hip_results_to_table(results: dict, table_node: Any = None, name: str = "Hip BMD results") -> Any | None:
    """Hip part of ``results.json`` as a table (one row per side and region, category per side);
    None when there are no hip results."""
    hip = results.get("hip") or {}
    sides = [side for side in ("left", "right") if isinstance(hip.get(side), dict)]
    if not sides:
        return None
    table_node = table_node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table_node.RemoveAllColumns()
    side_col, region_col, category_col = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkStringArray()
    side_col.SetName("Side")
    region_col.SetName("Region")
    category_col.SetName("Category")
    num_cols = []
    for col_name, *_ in HIP_COLUMNS:
        arr = vtk.vtkDoubleArray()
        arr.SetName(col_name)
        num_cols.append(arr)
    for side in sides:
        block = hip[side]
        regions = [r for r in HIP_REGIONS if isinstance(block.get(r), dict)]
        if not regions:  # excluded femur (metal, cut by the field of view): one row saying why
            regions = [None]
        for region in regions:
            side_col.InsertNextValue(side)
            region_col.InsertNextValue(region.replace("_", " ") if region else "excluded")
            values = block.get(region, {}) if region else {}
            for arr, (_, key, *_rest) in zip(num_cols, HIP_COLUMNS, strict=True):
                arr.InsertNextValue(_num(values.get(key)))
            withheld = "; ".join(r["code"] for r in block.get("category_withheld_reasons") or [])
            category_col.InsertNextValue(
                (str(block.get("category") or f"not measurable ({withheld})")) if region
                else str(block.get("excluded_reason") or "")
            )
    for arr in [side_col, region_col, *num_cols, category_col]:
        table_node.GetTable().AddColumn(arr)
    for col_name, _key, unit, description in HIP_COLUMNS:
        table_node.SetColumnUnitLabel(col_name, unit)
        table_node.SetColumnTitle(col_name, f"{col_name} ({unit})")
        table_node.SetColumnDescription(col_name, description)
    table_node.SetColumnDescription("Category", "WHO category of the side from its lowest T-score, or why excluded")
    table_node.SetAttribute("OBMD.TableKind", "hip")
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def table_to_results(table_node: Any) -> dict:
    """The results dict a table was made from (its ``OBMD.Results`` attribute)."""
    text = table_node.GetAttribute(ATTR_RESULTS)
    if not text:
        raise ValueError(f"{table_node.GetName()}: not an OpportunisticBMD results table")
    return json.loads(text)


def table_rows(table_node: Any) -> list[dict[str, Any]]:
    """The table as a list of row dicts (column name -> value), as a user sees it."""
    table = table_node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            value = column.GetValue(r)
            row[column.GetName()] = value if isinstance(column, vtk.vtkStringArray) else float(value)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Keypoints


def keypoints_to_markups(
    keypoints: dict[str, Any], ct: Volume, markups_node: Any = None, name: str = "Keypoints"
) -> Any:
    """Keypoints ``{name: (k, j, i) voxel index on ct's grid}`` as a point list (RAS), labels = names."""
    node = markups_node or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.RemoveAllControlPoints()
    for key, kji in keypoints.items():
        if kji is None:
            continue
        lps = ct.index_to_lps_mm(np.asarray(kji, dtype=float))
        ras = _LPS_FROM_RAS @ lps
        index = node.AddControlPoint(vtk.vtkVector3d(*ras), key)
        node.SetNthControlPointLabel(index, key)
    node.CreateDefaultDisplayNodes()
    return node


def markups_to_keypoints(markups_node: Any, ct: Volume) -> dict[str, np.ndarray]:
    """Point list back to ``{label: (k, j, i) continuous voxel index on ct's grid}``."""
    out = {}
    for index in range(markups_node.GetNumberOfControlPoints()):
        ras = np.zeros(3)
        markups_node.GetNthControlPointPosition(index, ras)
        out[markups_node.GetNthControlPointLabel(index)] = ct.lps_mm_to_index(_LPS_FROM_RAS @ ras)
    return out


# ---------------------------------------------------------------------------------------------
# Subject hierarchy


def place_in_study(input_node: Any, *output_nodes: Any) -> None:
    """Put output nodes next to the input volume in the subject hierarchy (under its study)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(input_node.GetScene())
    if sh is None:
        return
    input_item = sh.GetItemByDataNode(input_node)
    if not input_item:
        return
    parent = sh.GetItemParent(input_item)
    for node in output_nodes:
        if node is None:
            continue
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:  # desktop Slicer adds an item per node; a bare scene may not have made one yet
            sh.CreateItem(parent, node)
