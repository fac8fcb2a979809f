"""HU -> bone mineral (mg/cm^3 HA) for the femur, from the spine's calibration line.

The spine's calibration line ``L(HU)`` is valid for hydroxyapatite in marrow (trabecular bone). Compact
cortical bone is not HA in marrow: its organic matrix attenuates more than the marrow it replaces,
so ``L`` overestimates cortical mineral. From the ICRU-44 composition of cortical bone (1.92 g/cm^3,
Ca 22.5 % by mass -> 1083 mg/cm^3 HA) and attenuation at the scan's tube voltage
(:mod:`OpportunisticBMDLib.materials`, xraydb), the true mineral of cortical bone (and of its
partial-volume mixtures with soft tissue) is ``r * L(HU)`` with ``r = 1083 / L_model(HU_cortical)``
~0.90-0.93 for 80-140 kVp. The femur's mineral map uses ``r * L`` where the voxel is cortical
(near the femur surface, or dense) and ``L`` in the trabecular interior.

DXA (and therefore our truth) reports the HA mineral mass, which is what this map estimates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

ICRU44_CORTICAL_DENSITY_G_CM3 = 1.92  # ICRU Report 44 (1989), cortical bone
ICRU44_CORTICAL_CA_FRACTION = 0.225  # ICRU Report 44, calcium mass fraction of cortical bone
REFERENCE_MARROW_FAT_FRACTION = 0.5  # the trabecular line's marrow (the spine calibration's middle)
CORTICAL_SHELL_MM = 3.0  # voxels this close to the femur surface are cortex or its partial volume
DENSE_LOW_MG_CM3, DENSE_HIGH_MG_CM3 = 300.0, 600.0  # deeper voxels blend to cortical above this
DEFAULT_KVP = 120.0
# Adult proximal-femoral marrow is mostly yellow (fatty) marrow: red-to-yellow conversion completes in
# the appendicular skeleton by early adulthood while vertebral marrow stays partly red (Kricun,
# Skeletal Radiol 1985;14:10-19). ASSUMPTION: femoral marrow fat fraction 0.25 above the vertebral
# marrow the spine's calibration line stands for (0.5 -> 0.75); fattier marrow lowers HU, so the
# trabecular interior gets the HA that this HU deficit hides added back.
FEMORAL_MARROW_FAT_EXCESS = 0.25


@lru_cache(maxsize=32)
def cortical_ratio(kvp: float = DEFAULT_KVP) -> float:
    """HA of ICRU-44 cortical bone over what a trabecular (HA-in-marrow) line reads for it."""
    from .. import materials as m

    beam = m.Beam(kvp=float(kvp))
    hu0 = m.hu(m.trabecular_bone(0.0, REFERENCE_MARROW_FAT_FRACTION), beam)
    hu200 = m.hu(m.trabecular_bone(200.0, REFERENCE_MARROW_FAT_FRACTION), beam)
    slope = 200.0 / (hu200 - hu0)
    rho_cortical = ICRU44_CORTICAL_DENSITY_G_CM3 * 1000.0 * ICRU44_CORTICAL_CA_FRACTION / m._ha_fractions()["Ca"]
    read = slope * (m.hu("cortical_bone", beam) - hu0)
    return float(rho_cortical / read)


@lru_cache(maxsize=32)
def femoral_marrow_hu_deficit(kvp: float = DEFAULT_KVP) -> float:
    """HU by which HA-free femoral marrow reads below the reference (vertebral) marrow."""
    from .. import materials as m

    beam = m.Beam(kvp=float(kvp))
    ref = m.hu(m.trabecular_bone(0.0, REFERENCE_MARROW_FAT_FRACTION), beam)
    fem = m.hu(m.trabecular_bone(0.0, REFERENCE_MARROW_FAT_FRACTION + FEMORAL_MARROW_FAT_EXCESS), beam)
    return float(ref - fem)


def cortical_weight(line_mg_cm3: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
    """0 (trabecular) .. 1 (cortical or cortex partial volume) per voxel."""
    dense = np.clip((line_mg_cm3 - DENSE_LOW_MG_CM3) / (DENSE_HIGH_MG_CM3 - DENSE_LOW_MG_CM3), 0.0, 1.0)
    return np.maximum(dense, (depth_mm <= CORTICAL_SHELL_MM).astype(np.float32))


def femur_mineral_mg_cm3(line_mg_cm3: np.ndarray, depth_mm: np.ndarray, kvp: float | None,
                         slope_mg_cm3_per_hu: float | None = None) -> np.ndarray:
    """Bone mineral map from the calibration line's values and each voxel's depth below the femur
    surface (mm; 0 outside). ``slope_mg_cm3_per_hu`` (the line's slope) enables the marrow term."""
    kvp = kvp or DEFAULT_KVP
    r = cortical_ratio(kvp)
    w = cortical_weight(line_mg_cm3, depth_mm)
    marrow = 0.0 if slope_mg_cm3_per_hu is None else slope_mg_cm3_per_hu * femoral_marrow_hu_deficit(kvp)
    inside = depth_mm > 0
    trabecular = np.where(inside, line_mg_cm3 + marrow, line_mg_cm3)
    return (w * r * line_mg_cm3 + (1.0 - w) * trabecular).astype(np.float32)
