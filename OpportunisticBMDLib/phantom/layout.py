"""Where everything is: the spine curve, vertebral frames, hip centres and body outline per height.

World frame: LPS mm; x = 0 on the midline, z = 0 at the centre of the sacral (S1) upper endplate, the
patient's back lies on the table at y = ``y_back``. The grid is chosen afterwards from this layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .patient import LEVELS, Patient
from .shapes import rot_about, rotation, unit

STACK_ORDER = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7")  # built caudal to cranial
Y_BACK_MM = 120.0
FEMUR_REACH_HEAD_RADII = 3.0  # lateral extent of the femur from the head centre (2.6-2.9 R measured on seeds 500-607)
TROCHANTER_COVER_MM = 15.0  # minimum soft tissue (gluteal fat and skin) over the greater trochanter


@dataclass
class VertebraFrame:
    level: str
    center: np.ndarray  # xyz mm, centre of the vertebral body
    rot: np.ndarray  # columns: lateral (to the left), posterior, superior axes of the body
    width_mm: float
    depth_mm: float
    height_mm: float  # posterior height after any fracture
    fracture: dict | None = None

    def point(self, u: float, v: float, w: float) -> np.ndarray:
        return self.center + self.rot @ np.array([u, v, w], float)


@dataclass
class Layout:
    patient: Patient
    vertebrae: dict[str, VertebraFrame]
    disc_below: dict[str, float]
    s1_center: np.ndarray
    s1_rot: np.ndarray
    hip_center: dict[str, np.ndarray]
    z_crest_mm: float  # iliac crest top
    d_back_mm: float
    extras: dict = field(default_factory=dict)

    # Body outline (per height z, vectorised)
    def body_half_width(self, z):
        p = self.patient
        pelvis = _smoothstep(self.z_crest_mm + 10, self.z_crest_mm - 60, z)
        thorax = _smoothstep(self.vertebrae["T12"].center[2], self.vertebrae["T10"].center[2] + 20, z)
        return p.body_half_width_mm + self.hip_extra_width_mm() * pelvis + 6.0 * thorax

    def hip_extra_width_mm(self) -> float:
        """The drawn hip width, widened where the femurs would otherwise reach (or pass) the skin: a
        femur poking out of the body is cut by the field of view, and its hip cannot be measured."""
        p = self.patient
        reach = max((abs(float(h[0])) + FEMUR_REACH_HEAD_RADII * p.femur[side].head_radius_mm
                     for side, h in self.hip_center.items()), default=0.0)
        return max(p.hip_extra_width_mm, reach + TROCHANTER_COVER_MM - p.body_half_width_mm)

    def body_half_depth(self, z):
        p = self.patient
        pelvis = _smoothstep(self.z_crest_mm, self.z_crest_mm - 80, z)
        thorax = _smoothstep(self.vertebrae["L1"].center[2], self.vertebrae["T10"].center[2], z)
        return p.body_half_depth_mm * (1.0 - 0.06 * pelvis + 0.04 * thorax)

    def body_center_y(self, z):
        return Y_BACK_MM - self.body_half_depth(z)

    def spine_xy(self, z):
        """Centre of the vertebral bodies (x, y) at height z (mm)."""
        p = self.patient
        z = np.asarray(z, float)
        z_l3 = self.extras["z_l3"]
        x = p.scoliosis_mm * np.sin((z - z_l3) / 140.0 * np.pi + p.scoliosis_phase)
        above = np.clip((z - self.extras["z_t12"]) / 60.0, 0, None)
        kyph = 6.0 * above**2 / (1 + above)  # thoracic kyphosis starts above T12
        y = Y_BACK_MM - self.d_back_mm - p.lordosis_mm * np.exp(-(((z - z_l3) / 95.0) ** 2)) + kyph
        return x, y


def _smoothstep(edge0, edge1, z):
    t = np.clip((np.asarray(z, float) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def smoothstep(edge0, edge1, x):
    return _smoothstep(edge0, edge1, x)


def build_layout(patient: Patient, rng: np.random.Generator) -> Layout:
    sizes = dict(patient.body_size_mm)
    discs = dict(patient.disc_mm)
    for n, lvl in enumerate(("T9", "T8", "T7")):
        w, d, h = sizes["T10"]
        f = 0.96 ** (n + 1)
        sizes[lvl] = (w * f, d * f, h * f)
        discs[lvl] = discs["T10"]
    rot_amp = abs(rng.normal(0, 3.0))
    rot_phase = rng.uniform(0, 2 * np.pi)
    rot_offset = rng.normal(0, 2.0)
    # z of each body centre, stacking upward from the S1 endplate (z = 0).
    z = 0.0
    centers_z = {}
    heights = {}
    frac = patient.fracture
    for lvl in STACK_ORDER:
        w, d, h = sizes[lvl]
        z += discs[lvl]
        h_eff = h
        if frac and frac["level"] == lvl:
            h_eff = h * (1.0 - 0.5 * frac["height_loss"])  # mean height after the fracture
        centers_z[lvl] = z + h_eff / 2
        heights[lvl] = h
        z += h_eff
    # vertebral body centre ~62 % of the way back (example CT), but never closer to the skin than the
    # posterior elements and the back's fat allow
    d_back = max(0.76 * patient.body_half_depth_mm, sizes["L2"][1] / 2 + 52.0 + 0.5 * patient.fat_sc_mm + 6.0)
    layout = Layout(patient=patient, vertebrae={}, disc_below=discs, s1_center=np.zeros(3), s1_rot=np.eye(3),
                    hip_center={}, z_crest_mm=0.0, d_back_mm=d_back,
                    extras={"z_l3": centers_z["L3"], "z_t12": centers_z["T12"]})
    for idx, lvl in enumerate(STACK_ORDER):
        w, d, h = sizes[lvl]
        zc = centers_z[lvl]
        x, y = layout.spine_xy(zc)
        xa, ya = layout.spine_xy(zc + 3.0)
        xb, yb = layout.spine_xy(zc - 3.0)
        tangent = unit([xa - xb, ya - yb, 6.0])
        angle = np.deg2rad(rot_offset + rot_amp * np.sin(0.55 * idx + rot_phase))
        rot = rotation(tangent, [1.0, 0.0, 0.0])
        rot = rot_about(tangent, angle) @ rot
        if lvl in LEVELS:
            patient.axial_rotation_deg[lvl] = float(np.rad2deg(angle))
        layout.vertebrae[lvl] = VertebraFrame(lvl, np.array([float(x), float(y), zc]), rot, w, d, heights[lvl],
                                              frac if frac and frac["level"] == lvl else None)
    # Sacrum: S1 endplate centre just below L5; sacral slope ~40 deg (Legaye et al. 1998, pelvic incidence).
    x0, y0 = layout.spine_xy(0.0)
    slope = np.deg2rad(rng.normal(40.0, 5.0))
    layout.s1_center = np.array([float(x0), float(y0) + 4.0, 0.0])
    layout.s1_rot = rotation([0.0, -np.sin(slope), np.cos(slope)], [1.0, 0.0, 0.0])  # endplate faces up-forward
    layout.extras["sacral_slope_deg"] = float(np.rad2deg(slope))
    # Hip joint centres: ~95 mm below the S1 endplate, ~90-100 mm from the midline, level with L5 in AP.
    hz = -float(rng.normal(92.0, 6.0)) * patient.spine_scale
    hy = float(layout.spine_xy(centers_z["L5"])[1]) + float(rng.normal(-6.0, 5.0))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        layout.hip_center[side] = np.array([sign * patient.pelvis_half_width_mm + float(rng.normal(0, 1.0)), hy, hz])
    # Iliac crest at about the L4-L5 disc.
    layout.z_crest_mm = centers_z["L4"] - sizes["L4"][2] / 2 - discs["L4"] / 2 + float(rng.normal(0, 6.0))
    layout.extras["centers_z"] = centers_z
    return layout
