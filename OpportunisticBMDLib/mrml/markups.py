"""Keypoints (voxel indices on the CT's grid) <-> a markups point list (RAS)."""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer
import vtk

from ..volume import Volume
from .volumes import LPS_FROM_RAS


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
        ras = LPS_FROM_RAS @ lps
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
        out[markups_node.GetNthControlPointLabel(index)] = ct.lps_mm_to_index(LPS_FROM_RAS @ ras)
    return out

