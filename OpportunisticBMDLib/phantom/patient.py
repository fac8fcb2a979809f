"""Per-patient anatomical and tissue parameters, drawn reproducibly from the seed.

Sizes are adult lumbar/thoracolumbar averages (vertebral body width ~40-50 mm, depth ~30-35 mm,
height ~25 mm; femoral head diameter ~45-50 mm), checked against the TotalSegmentator example CT in
../shared/data (3 mm grid: L1-L2 pitch ~34 mm, femoral heads ~200 mm apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..labels import VERTEBRA_LEVELS

# Levels we build (T9 only as a stub above the field of view for ribs; S1 is the sacrum's top).
LEVELS: tuple[str, ...] = VERTEBRA_LEVELS  # T10..L5
# Mean vertebral body (width LR, depth AP, height SI) in mm per level; adult averages.
BODY_SIZE_MM: dict[str, tuple[float, float, float]] = {
    "T10": (36.0, 27.0, 21.0), "T11": (38.0, 28.0, 22.0), "T12": (40.0, 29.0, 23.5),
    "L1": (42.0, 30.0, 24.5), "L2": (44.0, 31.5, 25.0), "L3": (46.0, 33.0, 25.5),
    "L4": (48.0, 33.5, 25.5), "L5": (50.0, 33.5, 24.5),
}
# Disc height (mm) below each level.
DISC_BELOW_MM: dict[str, float] = {"T10": 6.0, "T11": 6.5, "T12": 7.5, "L1": 8.5, "L2": 9.5, "L3": 10.5,
                                   "L4": 11.0, "L5": 10.0}
# Relative trabecular density per level around the patient mean (vBMD falls slightly caudally in QCT
# normative data; small per-patient scatter added).
LEVEL_FACTOR: dict[str, float] = {"T10": 1.05, "T11": 1.04, "T12": 1.03, "L1": 1.01, "L2": 1.0, "L3": 0.98,
                                  "L4": 0.97, "L5": 0.96}


@dataclass
class FemurParams:
    head_radius_mm: float
    neck_length_mm: float  # head centre to the shaft axis
    neck_shaft_angle_deg: float
    anteversion_deg: float
    external_rotation_deg: float  # positioning: leg rotation about the shaft axis in the scanner
    shaft_tilt_deg: float  # anatomical axis vs vertical (knee medial)
    neck_radius_mm: float
    shaft_radius_mm: float
    shaft_cortex_mm: float
    trab_head_mg_cm3: float
    trab_neck_mg_cm3: float
    trab_troch_mg_cm3: float


@dataclass
class Patient:
    seed: int
    age: float
    sex: str
    body_half_width_mm: float
    body_half_depth_mm: float
    hip_extra_width_mm: float
    fat_sc_mm: float
    fat_visceral: float  # 0..1 how much visceral fat (organs smaller / further apart)
    muscle_wall_mm: float
    muscle_size: float
    spine_scale: float
    body_size_mm: dict[str, tuple[float, float, float]]
    disc_mm: dict[str, float]
    lordosis_mm: float
    scoliosis_mm: float
    scoliosis_phase: float
    axial_rotation_deg: dict[str, float]
    roll_deg: float
    vbmd_mean_mg_cm3: float
    vbmd_level_mg_cm3: dict[str, float]
    marrow_fat_fraction: float
    femur_marrow_fat_fraction: float
    muscle_fat: dict[str, float]
    cortical_porosity: float
    vertebral_cortex_mm: float
    pelvis_half_width_mm: float
    femur: dict[str, FemurParams]
    fracture: dict | None = None
    metal_side: str | None = None
    iodine_mg_ml: dict[str, float] = field(default_factory=dict)
    contrast_phase: str | None = None
    extras: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "age": round(self.age, 1), "sex": self.sex,
            "body_width_mm": round(2 * self.body_half_width_mm, 1),
            "body_depth_mm": round(2 * self.body_half_depth_mm, 1),
            "subcutaneous_fat_mm": round(self.fat_sc_mm, 1),
            "muscle_fat_infiltration": round(self.muscle_fat["psoas"], 4),
            "muscle_fat_infiltration_by_muscle": {k: round(v, 4) for k, v in self.muscle_fat.items()},
            "marrow_fat_fraction": round(self.marrow_fat_fraction, 4),
            "femur_marrow_fat_fraction": round(self.femur_marrow_fat_fraction, 4),
            "cortical_porosity": round(self.cortical_porosity, 4),
            "vertebral_cortex_mm": round(self.vertebral_cortex_mm, 3),
            "vbmd_mean_mg_cm3": round(self.vbmd_mean_mg_cm3, 2),
            "lordosis_mm": round(self.lordosis_mm, 1), "scoliosis_mm": round(self.scoliosis_mm, 1),
            "roll_deg": round(self.roll_deg, 2),
        }


def sample_patient(rng: np.random.Generator, rng_opt: np.random.Generator, seed: int, *,
                   bmd_mg_cm3: float | None = None,
                   marrow_fat_fraction: float | None = None, muscle_fat_infiltration: float | None = None,
                   fracture_level: str | None = None, metal_side: str | None = None, contrast: bool = False,
                   contrast_phase: str = "portal") -> Patient:
    age = float(rng.uniform(30, 90))
    sex = "F" if rng.random() < 0.5 else "M"
    male = sex == "M"
    size = float(rng.normal(1.0, 0.08))
    fat_sc = float(np.clip(rng.lognormal(np.log(18.0), 0.55), 4.0, 70.0))
    half_width = (140.0 + 30.0 * (size - 1) / 0.08 * 0.5 + 0.9 * fat_sc) * (1.03 if male else 0.98)
    half_depth = half_width * float(np.clip(rng.normal(0.76, 0.05), 0.62, 0.9))  # AP/LR ~0.8 (example CT)
    spine_scale = float(np.clip(rng.normal(1.0 if male else 0.94, 0.05), 0.82, 1.15))
    body_size = {}
    discs = {}
    for lvl in LEVELS:
        w, d, h = BODY_SIZE_MM[lvl]
        j = rng.normal(1.0, 0.03, 3)
        body_size[lvl] = (w * spine_scale * j[0], d * spine_scale * j[1], h * spine_scale * j[2])
        discs[lvl] = DISC_BELOW_MM[lvl] * spine_scale * float(rng.normal(1.0, 0.08)) * (0.85 if age > 70 else 1.0)
    # vBMD: QCT declines ~1-2 mg/cm3 per year after 30 (ACR QCT practice parameter normative curves).
    # Every draw happens whatever the overrides, so an override changes nothing else of the patient.
    vbmd = float(np.clip(rng.normal(185 - 1.6 * (age - 30), 28), 30.0, 250.0))
    level_jitter = {lvl: float(rng.normal(1.0, 0.025)) for lvl in LEVELS}
    level_vbmd = {lvl: vbmd * LEVEL_FACTOR[lvl] * level_jitter[lvl] for lvl in LEVELS}
    if bmd_mg_cm3 is not None:
        vbmd = float(bmd_mg_cm3)
        level_vbmd = {lvl: vbmd for lvl in LEVELS}
    # Marrow fat rises with age (vertebral PDFF ~30 % at 30 y to ~60 % at 80 y; Baum et al. 2012 MRS data).
    mff = float(np.clip(rng.normal(0.30 + 0.006 * (age - 30), 0.08), 0.1, 0.85))
    if marrow_fat_fraction is not None:
        mff = float(marrow_fat_fraction)
    # Muscle fat infiltration (adipose volume fraction): psoas as measured by water-fat MRI in 76 adults,
    # 4.5 +- 1.5 % below 38 y and 6.9 +- 2.9 % above (Sollmann et al., Quant Imaging Med Surg 2020;10:496,
    # the values calibration.py assumes for a typical psoas); paraspinals fattier (10-25 % in the elderly).
    psoas_fat = float(np.clip(rng.normal(*((0.045, 0.015) if age < 38.0 else (0.069, 0.029))), 0.0, 0.3))
    para_fat = float(np.clip(psoas_fat * 1.5 + rng.normal(0.03, 0.03), 0.0, 0.45))
    other_fat = float(np.clip(psoas_fat + rng.normal(0.02, 0.02), 0, 0.4))
    if muscle_fat_infiltration is not None:
        psoas_fat = para_fat = other_fat = float(muscle_fat_infiltration)
    muscle_fat = {"psoas": psoas_fat, "paraspinal": para_fat,
                  "other_muscle": other_fat}
    bone_health = vbmd / 150.0
    femur = {}
    pelvis_half = 92.0 * spine_scale * (1.04 if not male else 1.0) * float(rng.normal(1.0, 0.03))
    head_r = (24.5 if male else 21.5) * float(rng.normal(1.0, 0.04))
    nsa = float(rng.normal(129.0, 3.5))
    ante = float(rng.normal(12.5, 3.0))
    for side in ("left", "right"):
        femur[side] = FemurParams(
            head_radius_mm=head_r * float(rng.normal(1.0, 0.01)),
            neck_length_mm=head_r * 2.15 * float(rng.normal(1.0, 0.04)),
            neck_shaft_angle_deg=float(np.clip(nsa + rng.normal(0, 1.0), 118, 142)),
            anteversion_deg=float(np.clip(ante + rng.normal(0, 1.5), 2, 25)),
            external_rotation_deg=float(rng.uniform(0, 12)),
            shaft_tilt_deg=float(rng.normal(7.0, 1.0)),
            neck_radius_mm=head_r * 0.68 * float(rng.normal(1.0, 0.03)),
            shaft_radius_mm=head_r * 0.58 * float(rng.normal(1.0, 0.03)),
            shaft_cortex_mm=float(np.clip(5.0 * np.sqrt(bone_health), 2.5, 7.0)),
            trab_head_mg_cm3=float(np.clip(1.55 * vbmd, 60, 450)),
            trab_neck_mg_cm3=float(np.clip(0.95 * vbmd, 30, 300)),
            trab_troch_mg_cm3=float(np.clip(0.75 * vbmd, 20, 250)),
        )
    fracture = None
    if fracture_level:
        fracture = {"level": fracture_level, "height_loss": float(rng_opt.uniform(0.2, 0.4)),
                    "type": "wedge" if rng_opt.random() < 0.6 else "biconcave"}
    iodine = {}
    if contrast:
        # Typical enhancement (mg iodine/ml): portal venous aorta ~150-200 HU, liver +50 HU, marrow +10-20 HU.
        if contrast_phase == "arterial":
            iodine = {"blood_artery": rng_opt.uniform(10, 15), "blood_vein": rng_opt.uniform(1, 3), "liver": 0.8,
                      "spleen": 3.0, "kidney": 8.0, "bowel_wall": 0.5, "marrow": 0.3}
        else:
            iodine = {"blood_artery": rng_opt.uniform(5, 8), "blood_vein": rng_opt.uniform(4, 7),
                      "liver": rng_opt.uniform(1.5, 2.5),
                      "spleen": 2.5, "kidney": 6.0, "bowel_wall": 1.0, "marrow": 0.5}
        iodine = {k: float(v) for k, v in iodine.items()}
    return Patient(
        seed=seed, age=age, sex=sex,
        body_half_width_mm=float(half_width), body_half_depth_mm=float(half_depth),
        hip_extra_width_mm=float(rng.uniform(5, 30) + (15 if not male else 0)),
        fat_sc_mm=fat_sc, fat_visceral=float(np.clip(rng.normal(0.4 + (0.2 if male else 0), 0.2), 0, 1)),
        muscle_wall_mm=float(rng.uniform(8, 15) * (1.1 if male else 0.9)),
        muscle_size=float(np.clip(rng.normal(1.0 if male else 0.85, 0.1) * (1.15 - 0.004 * (age - 30)), 0.55, 1.4)),
        spine_scale=spine_scale, body_size_mm=body_size, disc_mm=discs,
        lordosis_mm=float(rng.normal(14.0, 6.0)), scoliosis_mm=float(abs(rng.normal(0, 4.0))),
        scoliosis_phase=float(rng.uniform(0, 2 * np.pi)),
        axial_rotation_deg={lvl: 0.0 for lvl in LEVELS},
        roll_deg=float(rng.normal(0, 2.0)),
        vbmd_mean_mg_cm3=vbmd, vbmd_level_mg_cm3=level_vbmd,
        marrow_fat_fraction=float(mff), femur_marrow_fat_fraction=float(np.clip(mff + 0.25, 0.5, 0.95)),
        muscle_fat=muscle_fat, cortical_porosity=float(np.clip(rng.normal(0.04 + 0.002 * (age - 30), 0.03), 0, 0.3)),
        # vertebral shell + endplates: ~0.4-1 mm true thickness (Silva et al., J Bone Miner Res 1994;9:1347)
        vertebral_cortex_mm=float(np.clip(rng.normal(0.8, 0.12) * np.sqrt(bone_health), 0.4, 1.2)),
        pelvis_half_width_mm=float(pelvis_half), femur=femur, fracture=fracture,
        metal_side=metal_side, iodine_mg_ml=iodine, contrast_phase=contrast_phase if contrast else None,
    )
