"""Voxel grid, bounding boxes and the painter that composes the digital patient.

Structures are signed distance fields (SDF, mm, negative inside) evaluated only on their own bounding
box. Painting turns an SDF into a partial-volume fraction (a linear ramp one voxel wide across the
surface) and blends HU and HA density linearly: CT attenuation of a voxel holding several materials is
the volume-weighted mean of their attenuations, so blending HU by fraction is exact physics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BIG_MM = 1.0e4  # "far outside" distance for empty SDF canvases


@dataclass(frozen=True)
class Grid:
    """The output grid: ``shape`` and ``spacing_mm`` per array axis (k=z, j=y, i=x), identity direction."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float]  # (x, y, z) of voxel [0, 0, 0]

    def axis_mm(self, axis: int) -> np.ndarray:
        """Coordinates (mm) along array axis 0 (z), 1 (y) or 2 (x)."""
        origin = self.origin_lps_mm[2 - axis]
        return (origin + np.arange(self.shape[axis]) * self.spacing_mm[axis]).astype(np.float32)

    @property
    def ramp_mm(self) -> float:
        """Width of the partial-volume ramp: the voxel's mean edge length."""
        return float(np.cbrt(np.prod(self.spacing_mm)))

    def box(self, lo_xyz, hi_xyz) -> Box | None:
        """The voxels whose centres lie in the axis-aligned mm box [lo, hi] (None when empty)."""
        slices = []
        for axis in range(3):
            origin, step, n = self.origin_lps_mm[2 - axis], self.spacing_mm[axis], self.shape[axis]
            a = int(np.ceil((lo_xyz[2 - axis] - origin) / step - 1e-6))
            b = int(np.floor((hi_xyz[2 - axis] - origin) / step + 1e-6)) + 1
            a, b = max(a, 0), min(b, n)
            if b <= a:
                return None
            slices.append(slice(a, b))
        return Box(self, tuple(slices))

    def full_box(self) -> Box:
        return Box(self, tuple(slice(0, n) for n in self.shape))

    def z_chunks(self, box: Box | None = None, max_voxels: int = 4_000_000):
        """Sub-boxes of ``box`` (default: the grid) split along z, to bound temporary memory."""
        box = box or self.full_box()
        sk, sj, si = box.slices
        per_slice = max((sj.stop - sj.start) * (si.stop - si.start), 1)
        step = max(1, max_voxels // per_slice)
        for k0 in range(sk.start, sk.stop, step):
            yield Box(self, (slice(k0, min(k0 + step, sk.stop)), sj, si))


class Box:
    """A sub-block of the grid with broadcastable mm coordinates ``z`` (n,1,1), ``y`` (1,n,1), ``x`` (1,1,n)."""

    def __init__(self, grid: Grid, slices: tuple[slice, slice, slice]):
        self.grid = grid
        self.slices = slices
        self.z = grid.axis_mm(0)[slices[0]].reshape(-1, 1, 1)
        self.y = grid.axis_mm(1)[slices[1]].reshape(1, -1, 1)
        self.x = grid.axis_mm(2)[slices[2]].reshape(1, 1, -1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.slices)  # type: ignore[return-value]

    def intersect(self, lo_xyz, hi_xyz) -> tuple[Box, tuple[slice, slice, slice]] | None:
        """Sub-box of this box inside [lo, hi] and its slices relative to this box."""
        sub = self.grid.box(lo_xyz, hi_xyz)
        if sub is None:
            return None
        rel = []
        absolute = []
        for mine, other in zip(self.slices, sub.slices, strict=True):
            a, b = max(mine.start, other.start), min(mine.stop, other.stop)
            if b <= a:
                return None
            rel.append(slice(a - mine.start, b - mine.start))
            absolute.append(slice(a, b))
        return Box(self.grid, tuple(absolute)), tuple(rel)


SDFFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Prim:
    """A primitive SDF with its mm bounding box (already grown by the margin the ramp needs)."""

    lo: np.ndarray
    hi: np.ndarray
    fn: SDFFn


def smin(a: np.ndarray, b: np.ndarray, k_mm: float) -> np.ndarray:
    """Smooth union (polynomial smooth minimum, Quilez) blending surfaces over ``k_mm``."""
    if k_mm <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k_mm, 0.0, 1.0)
    return b + (a - b) * h - k_mm * h * (1.0 - h)


class Field:
    """An SDF canvas over one structure's bounding box, built by (smooth) unions of primitives."""

    def __init__(self, grid: Grid, prims: list[Prim], margin_mm: float = 4.0):
        lo = np.min([p.lo for p in prims], axis=0) - margin_mm
        hi = np.max([p.hi for p in prims], axis=0) + margin_mm
        self.box = grid.box(lo, hi)
        self.d = None if self.box is None else np.full(self.box.shape, BIG_MM, np.float32)

    @property
    def empty(self) -> bool:
        return self.box is None

    def union(self, prim: Prim, smooth_mm: float = 0.0) -> None:
        if self.box is None:
            return
        hit = self.box.intersect(prim.lo - smooth_mm, prim.hi + smooth_mm)
        if hit is None:
            return
        sub, rel = hit
        d = prim.fn(sub.x, sub.y, sub.z)
        self.d[rel] = smin(self.d[rel], d, smooth_mm)

    def intersect_with(self, fn: SDFFn) -> None:
        """Keep only the part where ``fn`` < 0 (CSG intersection)."""
        if self.box is not None:
            self.d = np.maximum(self.d, fn(self.box.x, self.box.y, self.box.z))

    def subtract(self, fn: SDFFn) -> None:
        if self.box is not None:
            self.d = np.maximum(self.d, -fn(self.box.x, self.box.y, self.box.z))


def build(grid: Grid, prims: list[Prim], smooth_mm: float = 0.0) -> Field:
    field = Field(grid, prims, margin_mm=grid.ramp_mm + 1.0)
    for prim in prims:
        field.union(prim, smooth_mm)
    return field


class Canvas:
    """HU, HA density (mg/cm3) and label accumulators on the full grid."""

    def __init__(self, grid: Grid, background_hu: float = -1000.0):
        self.grid = grid
        self.hu = np.full(grid.shape, background_hu, np.float32)
        self.density = np.zeros(grid.shape, np.float32)
        self.labels = np.zeros(grid.shape, np.uint8)
        self.has_density = False  # nothing with HA painted yet: soft tissue need not touch ``density``
        self.inv_ramp = 1.0 / grid.ramp_mm

    def fraction(self, sdf: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - sdf * self.inv_ramp, 0.0, 1.0)

    def paint(self, box: Box, frac: np.ndarray, hu, label: int | None = None, density=0.0) -> None:
        """Blend ``hu``/``density`` (scalars or arrays on ``box``) in by ``frac``; label where frac >= 0.5."""
        sl = box.slices
        if frac.shape != box.shape:
            frac = np.broadcast_to(frac, box.shape)
        h = self.hu[sl]
        h += frac * (np.float32(hu) - h) if np.isscalar(hu) else frac * (hu - h)
        if np.isscalar(density) and density == 0.0:
            if self.has_density:
                d = self.density[sl]
                d *= 1.0 - frac
        else:
            d = self.density[sl]
            d += frac * (density - d)
            self.has_density = True
        if label is not None:
            lab = self.labels[sl]
            lab[frac >= 0.5] = label

    def paint_sdf(self, box: Box, sdf: np.ndarray, hu, label: int | None = None, density=0.0) -> np.ndarray:
        frac = self.fraction(sdf)
        self.paint(box, frac, hu, label, density)
        return frac

    def paint_field(self, field: Field, hu, label: int | None = None, density=0.0) -> np.ndarray | None:
        if field.empty:
            return None
        return self.paint_sdf(field.box, field.d, hu, label, density)

    def paint_bone(self, field: Field, cortical_hu: float, cortical_density: float, core_hu, core_density,
                   label: int | None, cortex_mm) -> np.ndarray | None:
        """A bone: cortical shell of thickness ``cortex_mm`` (scalar or array) and trabecular core.
        Returns the core fraction on ``field.box`` (1 = voxel fully inside the trabecular core)."""
        if field.empty:
            return None
        self.paint_sdf(field.box, field.d, cortical_hu, label, cortical_density)
        core_frac = self.fraction(field.d + cortex_mm)
        self.paint(field.box, core_frac, core_hu, None, core_density)
        return core_frac
