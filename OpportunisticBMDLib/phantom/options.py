"""Options and result of the digital patient generator."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..volume import Volume

REGIONS = ("torso", "spine", "hip", "esp")


@dataclass
class PhantomOptions:
    """How to build one digital patient. ``None`` means "drawn from the seed".

    ``spacing_mm`` is per array axis (k=z, j=y, i=x) like :attr:`Volume.spacing_mm`; the CLI takes
    ``--spacing-mm X Y Z``. ``shape`` (k, j, i) forces the grid size (centred on the body), e.g. the
    512x512x300 speed case; otherwise the grid fits the region with a small margin (``fov_mm`` forces
    a square in-plane field of view)."""

    region: str = "torso"
    spacing_mm: tuple[float, float, float] = (2.0, 1.5, 1.5)
    shape: tuple[int, int, int] | None = None
    fov_mm: float | None = None
    fov_levels: tuple[str, str] | None = None  # (top, bottom) e.g. ("T12", "L3"); bottom may be "femur"
    random_fov: bool = False  # draw (top, bottom) from the seed: T10..L1 to L3..femur (training variety)
    grid_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (x, y, z) repositioning of the grid
    fracture: str | None = None  # level, e.g. "L1"
    metal: str | None = None  # "left" | "right": total hip prosthesis
    leg_rotation_deg: float | None = None  # external rotation of both legs (positioning); None: 0-12 deg drawn
    contrast: bool = False
    contrast_phase: str = "portal"  # "portal" | "arterial"
    kvp: float = 120.0
    bmd_mg_cm3: float | None = None  # same trabecular density at every level
    marrow_fat_fraction: float | None = None
    muscle_fat_infiltration: float | None = None
    noise_hu: float | None = None
    noise_seed: int | None = None  # rescans of the same patient: change only the noise
    blur_fwhm_mm: float | None = None
    slice_thickness_mm: float | None = None
    cupping_hu: float | None = None
    offset_field_hu: float | None = None
    ideal: bool = False  # no noise, blur, offsets or streaks: pure physics + partial volume
    hu_overrides: dict[str, float] = field(default_factory=dict)  # tissue name -> HU (domain randomisation)
    intensity_jitter_hu: float = 0.0  # SD of a random HU shift per tissue (SynthSeg-like randomisation)
    extended_hu: bool = False  # keep metal above 3071 HU (extended CT scale)
    patient_water_cm: float | None = None  # beam hardening water path; None: from the body size
    calibration_pad: bool = False  # in-scan HA calibration pad under the patient (phantom/pad.py)
    hip_truth: bool = True  # areal BMD truth of the hips (CTXA-like projection; costs seconds)


@dataclass
class Phantom:
    ct: Volume  # HU (float32 array holding integer values)
    labels: Volume  # our label schema (uint8)
    density_mg_cm3: Volume  # true HA density per voxel (float32, 0 outside bone)
    truth: dict
