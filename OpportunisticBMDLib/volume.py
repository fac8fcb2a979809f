"""The one array orientation convention of OpportunisticBMD.

Every volume inside the library is a :class:`Volume` whose ``array`` is indexed ``array[k, j, i]``
after reorientation to DICOM LPS (done once, by :mod:`OpportunisticBMDLib.io`, by axis permutation
and flips only, never by resampling):

* axis 0 (``k``) runs from patient **inferior to superior** (z),
* axis 1 (``j``) runs from patient **anterior to posterior** (y),
* axis 2 (``i``) runs from patient **right to left** (x).

So ``array[k]`` is an axial slice shown in radiological convention (patient's right on the image
left, anterior at the top). ``spacing_mm`` is given per *array axis* (k, j, i), i.e. (z, y, x).
``origin_lps_mm`` is the LPS position of voxel ``[0, 0, 0]`` in (x, y, z) order, as in ITK, and
``direction`` is the ITK direction matrix (columns = i, j, k axes) of the reoriented grid; it is the
identity for non-oblique scans. The original file's geometry is kept in ``source_geometry`` so
masks can be written back on the CT's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

AXIS_SUPERIOR = 0  # k: inferior -> superior
AXIS_POSTERIOR = 1  # j: anterior -> posterior
AXIS_LEFT = 2  # i: right -> left


@dataclass(frozen=True)
class SourceGeometry:
    """Geometry of the image as stored on disk (ITK conventions), to write results back."""

    size_xyz: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major ITK direction matrix


@dataclass
class Volume:
    """A 3D image on the library's LPS grid; see the module docstring for the axis convention."""

    array: np.ndarray
    spacing_mm: tuple[float, float, float]  # per array axis: (k=z, j=y, i=x)
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (x, y, z) of voxel [0,0,0]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    source_geometry: SourceGeometry | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {self.array.shape}")
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_mm))

    def like(self, array: np.ndarray, **metadata: Any) -> Volume:
        """A new Volume on the same grid holding ``array`` (same shape required)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match the grid {self.array.shape}")
        return replace(self, array=array, metadata=dict(metadata))

    def index_to_lps_mm(self, kji: np.ndarray) -> np.ndarray:
        """Physical LPS (x, y, z) mm of voxel indices given as (..., 3) in (k, j, i) order."""
        kji = np.asarray(kji, dtype=float)
        ijk = kji[..., ::-1]
        spacing_xyz = np.asarray(self.spacing_mm[::-1])
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        return np.asarray(self.origin_lps_mm) + (ijk * spacing_xyz) @ direction.T

    def lps_mm_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Continuous (k, j, i) index of physical LPS (x, y, z) mm points given as (..., 3)."""
        xyz = np.asarray(xyz, dtype=float)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        ijk = ((xyz - np.asarray(self.origin_lps_mm)) @ direction) / np.asarray(self.spacing_mm[::-1])
        return ijk[..., ::-1]


def ball_kernel(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Boolean ellipsoidal structuring element approximating a ball of ``radius_mm`` on an
    anisotropic grid (axes in the (k, j, i) order of ``spacing_mm``)."""
    half = [max(0, int(np.floor(radius_mm / s))) for s in spacing_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm, strict=True)], indexing="ij")
    dist2 = sum(g**2 for g in grids)
    return dist2 <= radius_mm**2 + 1e-9
