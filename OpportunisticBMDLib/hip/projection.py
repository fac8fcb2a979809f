"""DXA-like positioning and anterior-posterior projection of a calibrated density map.

Positioning (what a DXA technologist achieves with ~15-25 deg internal rotation of the leg): the
femoral shaft is vertical in the image and the femoral neck axis lies in the detector plane, so
the beam runs perpendicular to both (anteversion removed). The image is built in millimetres:
each pixel is a ray through the CT volume, sampled every ``step_mm`` with trilinear interpolation
(``scipy.ndimage.map_coordinates``, order 1) in grid-mm coordinates, so the result does not depend
on the CT voxel size or anisotropy. Areal density: sum of mg/cm^3 x path length (cm) / 1000 = g/cm^2.

Display convention (as a DXA/radiograph is shown): image column increases towards the patient's
left, row 0 is the most superior row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import LEFT, POSTERIOR, FemurGeometry, unit

DEFAULT_PIXEL_MM = 0.5  # finer than a Hologic hip scan (~1 mm); the regions are defined in mm anyway
DEFAULT_STEP_MM = 0.5
MAX_SAMPLES_PER_CHUNK = 4_000_000
# Image extent around the head centre, in head radii: the total hip region ends ~10 mm below the
# lesser trochanter, about 3-3.5 head radii below the head centre.
EXTENT_BELOW_HEAD_RADII = 5.0
EXTENT_ABOVE_HEAD_RADII = 1.6
MARGIN_MM = 6.0
LABEL_SMOOTH_VOXELS = 0.5
FOOTPRINT_MIN_PATH_MM = 2.0  # DXA edge detection also misses the thinnest grazing edges
# ... and, as DXA finds the bone edge in the image, a bone pixel must also carry mineral: a tangential ray
# through 1 mm of cortex holds ~0.1 g/cm^2 (1000 mg/cm^3 x 0.1 cm), soft tissue that a segmentation left
# inside the femur label < 0.03. On digital patients this leaves the true labels' areas unchanged and
# takes the shipped model's neck area error from +13-20 % to a few % (neck aBMD max error 9.5 -> 3.0 %).
FOOTPRINT_MIN_ABMD_G_CM2 = 0.1


@dataclass
class DXAFrame:
    """Orthonormal DXA frame in grid mm: ``u`` image horizontal (towards the patient's left),
    ``v`` image vertical (shaft axis, superior), ``beam`` the projection direction (posterior)."""

    origin_mm: np.ndarray  # the femoral head centre
    u: np.ndarray
    v: np.ndarray
    beam: np.ndarray

    def to_frame(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) grid-mm points -> (N, 3) frame coordinates (u, v, w) in mm."""
        rel = np.asarray(points_mm, float) - self.origin_mm
        return np.stack([rel @ self.u, rel @ self.v, rel @ self.beam], axis=-1)


def dxa_frame(geom: FemurGeometry) -> DXAFrame:
    """Shaft vertical, neck axis parallel to the detector plane."""
    v = unit(geom.shaft_axis)
    u = geom.neck_axis - np.dot(geom.neck_axis, v) * v
    u = unit(u)
    if np.dot(u, LEFT) < 0:
        u = -u
    beam = unit(np.cross(u, v))
    if np.dot(beam, POSTERIOR) < 0:
        beam = -beam
    return DXAFrame(np.asarray(geom.head_centre_mm, float), u, v, beam)


@dataclass
class Projection:
    """A 2D DXA-like image. Pixel (row, col) centre: u = u0 + col * px, v = v0 - row * px (mm)."""

    abmd_g_cm2: np.ndarray  # bone mineral per projected area
    footprint: np.ndarray  # bool: the beam crosses the femur label (DXA "bone" pixels)
    mineral_footprint: np.ndarray  # bool: the beam crosses the (dilated) mineral mask
    pixel_mm: float
    u0_mm: float
    v0_mm: float
    frame: DXAFrame
    in_fov: np.ndarray | None = None  # bool: the whole ray lies inside the scanned field of view

    @property
    def shape(self) -> tuple[int, int]:
        return self.abmd_g_cm2.shape  # type: ignore[return-value]

    def uv_grid(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.shape
        u = self.u0_mm + np.arange(cols) * self.pixel_mm
        v = self.v0_mm - np.arange(rows) * self.pixel_mm
        return np.meshgrid(u, v)  # each (rows, cols)

    def pixel_of_uv(self, u_mm: np.ndarray, v_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest pixel (row, col) of frame coordinates."""
        col = np.rint((np.asarray(u_mm) - self.u0_mm) / self.pixel_mm).astype(int)
        row = np.rint((self.v0_mm - np.asarray(v_mm)) / self.pixel_mm).astype(int)
        return row, col


def project(
    density_mg_cm3: np.ndarray,
    femur_mask: np.ndarray,
    mineral_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    geom: FemurGeometry,
    pixel_mm: float = DEFAULT_PIXEL_MM,
    step_mm: float = DEFAULT_STEP_MM,
    fov_mm: tuple[np.ndarray, np.ndarray] | None = None,
) -> Projection:
    """Project ``density_mg_cm3`` (bone mineral density; zero outside ``mineral_mask``) along the
    DXA beam. ``femur_mask`` defines the bone footprint (area); all arrays share the (k, j, i) grid.
    ``fov_mm`` = (low, high) grid-mm corners of the scanned field of view (default: the arrays):
    pixels whose ray leaves it are marked in ``Projection.in_fov``."""
    frame = dxa_frame(geom)
    spacing = np.asarray(spacing_mm, float)
    # Crop to the mineral mask to keep the interpolation cheap.
    lo = np.argwhere(mineral_mask).min(0)
    hi = np.argwhere(mineral_mask).max(0) + 1
    lo = np.maximum(lo - 1, 0)
    hi = np.minimum(hi + 1, mineral_mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offset_mm = lo * spacing
    field = np.where(mineral_mask[crop], density_mg_cm3[crop], 0.0).astype(np.float32)
    # Slight smoothing (half a voxel per axis) turns the staircase of a binary label into a surface
    # whose silhouette does not depend on the voxel size.
    label = ndimage.gaussian_filter(femur_mask[crop].astype(np.float32), LABEL_SMOOTH_VOXELS)
    mineral = mineral_mask[crop].astype(np.float32)

    pts = frame.to_frame(np.argwhere(mineral_mask[crop]) * spacing + offset_mm)
    r = geom.head_radius_mm
    u_min, u_max = pts[:, 0].min() - MARGIN_MM, pts[:, 0].max() + MARGIN_MM
    v_min = max(pts[:, 1].min(), -EXTENT_BELOW_HEAD_RADII * r) - MARGIN_MM
    v_max = min(pts[:, 1].max(), EXTENT_ABOVE_HEAD_RADII * r) + MARGIN_MM
    w = np.arange(pts[:, 2].min() - 2 * step_mm, pts[:, 2].max() + 2 * step_mm, step_mm)
    cols = int(np.ceil((u_max - u_min) / pixel_mm)) + 1
    rows = int(np.ceil((v_max - v_min) / pixel_mm)) + 1
    us = u_min + np.arange(cols) * pixel_mm
    vs = v_max - np.arange(rows) * pixel_mm

    abmd = np.zeros((rows, cols), np.float64)
    label_path = np.zeros((rows, cols), np.float64)
    path_mineral = np.zeros((rows, cols), np.float64)
    in_fov = np.ones((rows, cols), bool)
    if fov_mm is None:
        fov_mm = (-0.5 * spacing, (np.asarray(density_mg_cm3.shape) - 0.5) * spacing)
    fov_lo, fov_hi = (np.asarray(a, float) for a in fov_mm)
    rows_per_chunk = max(1, MAX_SAMPLES_PER_CHUNK // (cols * len(w)))
    # sample positions as crop voxel indices: affine in (u, v, w), built by broadcasting (rows, cols, w)
    to_index = np.stack([frame.u, frame.v, frame.beam], axis=1) / spacing[:, None]  # (3 axes, 3 frame)
    base_index = (frame.origin_mm - offset_mm) / spacing
    index_lo, index_hi = (fov_lo - offset_mm) / spacing, (fov_hi - offset_mm) / spacing
    for r0 in range(0, rows, rows_per_chunk):
        vv = vs[r0 : r0 + rows_per_chunk]
        shape = (len(vv), cols, len(w))
        idx = (base_index[:, None, None, None] + to_index[:, 0, None, None, None] * us[None, None, :, None]
               + to_index[:, 1, None, None, None] * vv[None, :, None, None]
               + to_index[:, 2, None, None, None] * w[None, None, None, :])
        inside = np.all((idx >= index_lo[:, None, None, None]) & (idx <= index_hi[:, None, None, None]), axis=0)
        in_fov[r0 : r0 + len(vv)] = inside.all(axis=-1)
        idx = idx.reshape(3, -1)
        for target, vol in ((abmd, field), (label_path, label), (path_mineral, mineral)):
            samples = ndimage.map_coordinates(vol, idx, order=1, mode="constant", cval=0.0).reshape(shape)
            if target is label_path:
                target[r0 : r0 + len(vv)] = (samples >= 0.5).sum(axis=-1) * step_mm
            else:
                target[r0 : r0 + len(vv)] = samples.sum(axis=-1) * step_mm
    # mg/cm^3 x mm -> g/cm^2: x 0.1 (mm -> cm) / 1000 (mg -> g)
    abmd *= 1e-4
    # Bone pixels: the beam runs at least FOOTPRINT_MIN_PATH_MM inside the femur surface (the 0.5
    # level of the slightly smoothed, trilinearly interpolated label), so the area does not grow
    # with the voxel size (checked on analytic femurs at 1, 3 and 2 x 0.7 x 0.9 mm: within 1 %), and
    # carries at least FOOTPRINT_MIN_ABMD_G_CM2 of mineral (the image's own bone edge).
    footprint = (label_path >= FOOTPRINT_MIN_PATH_MM) & (abmd >= FOOTPRINT_MIN_ABMD_G_CM2)
    mineral_fp = path_mineral > 0.0
    return Projection(abmd, footprint, mineral_fp | footprint, pixel_mm, float(us[0]), float(vs[0]), frame, in_fov)
