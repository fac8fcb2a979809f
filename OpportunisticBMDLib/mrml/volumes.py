"""Volume nodes <-> the library's :class:`Volume` (scalar CTs and label maps), header attributes included.

Geometry: MRML stores RAS and a node's array is ``[k, j, i]`` in the node's own IJK; the library's
:class:`Volume` is LPS ``[k=S, j=P, i=L]`` (see :mod:`..volume`). The node's IJK-to-RAS matrix is turned
into an ITK (LPS) geometry and the array is reoriented by the same permute/flip code that reads files
(:func:`..io.volume_from_sitk`), so a node loaded from a file and the file read by :func:`..io.read_ct`
give identical Volumes, and every round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk

from ..io import DICOM_TAGS, HEADER_KEYS, volume_from_sitk
from ..volume import SourceGeometry, Volume

ATTR_HEADER_PREFIX = "OBMD.Header."  # volume node attributes: the CT header fields (io.HEADER_KEYS)
ATTR_SOURCE_PREFIX = "OBMD.Source."  # ... and where the CT was read from (SOURCE_KEYS)
# Volume.metadata keys naming the file or DICOM folder a CT was read from and the series chosen in it
# (io.read_ct): Save report finds the source series by them to write DICOM outputs referencing it.
SOURCE_KEYS = ("format", "path", "series_choice")
ATTR_DICOM_INSTANCES = "DICOM.instanceUIDs"  # set by Slicer's DICOM module: the loaded series' SOP Instance UIDs
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def node_geometry(node: Any) -> SourceGeometry:
    """A volume node's grid as ITK (LPS) geometry of its array's own axes."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    m = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.asarray(node.GetSpacing(), dtype=float)
    direction_lps = LPS_FROM_RAS @ (m[:3, :3] / spacing)  # columns = node i, j, k axes
    origin_lps = LPS_FROM_RAS @ m[:3, 3]
    dims = node.GetImageData().GetDimensions()
    return SourceGeometry(
        size_xyz=tuple(int(d) for d in dims),  # type: ignore[arg-type]
        spacing_xyz_mm=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin_lps_mm=tuple(float(o) for o in origin_lps),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction_lps.ravel()),
    )


def _set_node_geometry(node: Any, geometry: SourceGeometry) -> None:
    direction_ras = LPS_FROM_RAS @ np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    node.SetSpacing(*geometry.spacing_xyz_mm)
    node.SetOrigin(*(LPS_FROM_RAS @ np.asarray(geometry.origin_lps_mm)))
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
    metadata = {"mrml_node_id": node.GetID(), "name": node.GetName(), **source_of_node(node), **header_of_node(node)}
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
    set_source_attributes(node, volume.metadata)  # and where it came from (the DICOM series Save report references)
    return node


def set_source_attributes(node: Any, metadata: dict[str, Any]) -> None:
    """Store :data:`SOURCE_KEYS` of ``metadata`` as ``OBMD.Source.*`` attributes (the series choice as JSON;
    saved with the scene; read back by :func:`source_of_node`)."""
    for key in SOURCE_KEYS:
        value = metadata.get(key)
        if value not in (None, ""):
            node.SetAttribute(ATTR_SOURCE_PREFIX + key, json.dumps(value) if isinstance(value, dict) else str(value))


def source_of_node(node: Any) -> dict[str, Any]:
    """The :data:`SOURCE_KEYS` a volume node carries (empty for a node the library did not make from a file)."""
    source: dict[str, Any] = {}
    for key in SOURCE_KEYS:
        value = node.GetAttribute(ATTR_SOURCE_PREFIX + key)
        if value:
            source[key] = json.loads(value) if key == "series_choice" else value
    return source


def dicom_source_files(node: Any, database: Any) -> list[Path]:
    """The files of the DICOM instances a volume node was loaded from by Slicer's DICOM module (its
    ``DICOM.instanceUIDs``), as ``database`` (``slicer.dicomDatabase``: ``fileForInstance(uid)``) stores
    them; empty for a node from elsewhere or when the database no longer holds every instance."""
    uids = (node.GetAttribute(ATTR_DICOM_INSTANCES) or "").split()
    if not uids or database is None:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    if not all(files):
        return []  # a partial series cannot be referenced slice for slice
    return [Path(f) for f in files]


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
    uids = (node.GetAttribute(ATTR_DICOM_INSTANCES) or "").split()
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

