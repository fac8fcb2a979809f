"""Analytic proximal femurs (sphere head, waisted cylindrical neck at a known angle, cylindrical
shaft, trochanters) with uniform mineral density: geometry and areal BMD known by construction.
Used by the hip tests and as a fallback digital hip when no phantom is available."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import LABELS
from ..volume import Volume


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Right-handed rotation about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    th = np.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


@dataclass
class AnalyticFemur:
    """A right (or left) proximal femur in grid mm (axis 0 superior, 1 posterior, 2 left)."""

    side: str = "right"
    head_radius_mm: float = 22.0
    neck_radius_mm: float = 14.0
    neck_waist_per_mm2: float = 0.004  # r(t) = r_neck + w * (t - t_waist)^2
    neck_waist_t_mm: float = 38.0  # waist position along the neck axis from the head centre
    neck_length_mm: float = 70.0
    neck_shaft_angle_deg: float = 130.0
    anteversion_deg: float = 15.0  # head anterior
    shaft_radius_mm: float = 14.0
    shaft_length_mm: float = 150.0
    density_mg_cm3: float = 400.0
    rotation_deg: float = 0.0  # extra rotation of the whole femur about the shaft (internal +)
    tilt_deg: float = 0.0  # extra rotation about the anterior-posterior axis (abduction)

    def axes(self) -> dict[str, np.ndarray]:
        lateral = np.array([0.0, 0.0, -1.0]) if self.side == "right" else np.array([0.0, 0.0, 1.0])
        sup = np.array([1.0, 0.0, 0.0])
        post = np.array([0.0, 1.0, 0.0])
        # Neck axis from the head towards the trochanter: lateral and distal at (180 - NSA) below
        # horizontal... i.e. angle to the distal shaft = NSA, then turned so the head is anterior.
        below = np.radians(self.neck_shaft_angle_deg - 90.0)
        neck = np.cos(below) * lateral - np.sin(below) * sup
        # Anteversion: the head lies anterior, so head->trochanter points posterior.
        sign = 1.0 if self.side == "right" else -1.0
        neck = rotation_matrix(sup, -sign * self.anteversion_deg) @ neck
        if np.dot(neck, post) < 0:  # make sure head->trochanter points posterior
            neck = rotation_matrix(sup, 2 * sign * self.anteversion_deg) @ neck
        rot = rotation_matrix(sup, self.rotation_deg) @ rotation_matrix(post, self.tilt_deg)
        return {"neck": rot @ neck, "shaft": rot @ sup, "post": rot @ post, "lateral": rot @ lateral, "rot": rot}

    def inside(self, p: np.ndarray, head_centre: np.ndarray) -> np.ndarray:
        ax = self.axes()
        rel = p - head_centre
        head = np.linalg.norm(rel, axis=-1) <= self.head_radius_mm
        t = rel @ ax["neck"]
        radial = np.linalg.norm(rel - t[..., None] * ax["neck"], axis=-1)
        r_t = self.neck_radius_mm + self.neck_waist_per_mm2 * (t - self.neck_waist_t_mm) ** 2
        neck = (t >= 0) & (t <= self.neck_length_mm) & (radial <= r_t)
        junction = self.neck_length_mm * ax["neck"]
        rs = rel - junction
        h = rs @ ax["shaft"]
        sradial = np.linalg.norm(rs - h[..., None] * ax["shaft"], axis=-1)
        shaft = (h <= 20.0) & (h >= -self.shaft_length_mm) & (sradial <= self.shaft_radius_mm)
        gt_c = junction + 18.0 * ax["shaft"] + 8.0 * ax["lateral"]
        gt = (((rel - gt_c) / np.array([20.0, 16.0, 16.0])) ** 2).sum(-1) <= 1.0
        lt_c = junction - 30.0 * ax["shaft"] + 6.0 * ax["post"] - 14.0 * ax["lateral"]
        lt = np.linalg.norm(rel - lt_c, axis=-1) <= 8.0
        return head | neck | shaft | gt | lt

    def volumes(self, spacing_mm=(1.0, 1.0, 1.0), supersample: int = 2, shape_mm=(200.0, 110.0, 150.0),
                head_offset_mm=(160.0, 50.0, None)) -> tuple[Volume, Volume, np.ndarray]:
        """(density Volume mg/cm^3 with partial volume, label Volume with femur_<side>, head centre mm)."""
        spacing = np.asarray(spacing_mm, float)
        shape = tuple(int(np.ceil(s / d)) for s, d in zip(shape_mm, spacing, strict=True))
        x_head = head_offset_mm[2] if head_offset_mm[2] is not None else (
            shape_mm[2] - 35.0 if self.side == "right" else 35.0)  # the femur runs laterally from the head
        head_centre = np.array([head_offset_mm[0], head_offset_mm[1], x_head])
        frac = np.zeros(shape, np.float32)
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
        for a in offs:
            for b in offs:
                for c in offs:
                    p = (grid + np.array([a, b, c], np.float32)) * spacing
                    frac += self.inside(p, head_centre)
        frac /= supersample**3
        density = Volume(frac * self.density_mg_cm3, tuple(spacing))
        label_id = LABELS[f"femur_{self.side}"]
        centre_inside = self.inside(grid * spacing, head_centre)  # voxel-centre voxelisation: unbiased
        labels = Volume(np.where(centre_inside, label_id, 0).astype(np.int16), tuple(spacing))
        return density, labels, head_centre

    def neck_abmd_g_cm2(self, t_centre_mm: float, width_mm: float = 15.0) -> float:
        """Exact neck-box aBMD of a uniform waisted cylinder seen side-on: BMC / projected area."""
        t = np.linspace(t_centre_mm - width_mm / 2, t_centre_mm + width_mm / 2, 2001)
        r = self.neck_radius_mm + self.neck_waist_per_mm2 * (t - self.neck_waist_t_mm) ** 2
        bmc = np.trapezoid(np.pi * r**2, t)  # mm^3
        area = np.trapezoid(2 * r, t)  # mm^2
        return float(self.density_mg_cm3 * bmc / area * 1e-4)  # mg/cm^3 * mm -> g/cm^2


class IdentityCalibration:
    """The CT already holds mg/cm^3 (tests and truth)."""

    method = "identity"

    def to_mg_cm3(self, hu: np.ndarray) -> np.ndarray:
        return np.asarray(hu, dtype=np.float32)
