"""HU -> bone mineral (mg/cm^3 HA) for the femur, from the spine's calibration line.

The spine's calibration line ``L(HU)`` is valid for hydroxyapatite in marrow (trabecular bone). Compact
cortical bone is not HA in marrow: its organic matrix attenuates more than the marrow it replaces,
so ``L`` overestimates cortical mineral. From the ICRU-44 composition of cortical bone (1.92 g/cm^3,
Ca 22.5 % by mass -> 1083 mg/cm^3 HA) and attenuation at the scan's tube voltage
(:mod:`OpportunisticBMDLib.materials`, xraydb), pure cortical bone reads ``Lc = 1083 / r`` on the line,
``r`` ~0.90-0.93 for 80-140 kVp; the femur's trabecular marrow is fattier than the vertebral marrow
the line stands for, so trabecular bone reads ``marrow`` mg/cm^3 low.

Each voxel is treated as a two-compartment mixture (CT values mix linearly, under partial volume and
blur alike): a fraction ``c`` of cortical bone and ``1 - c`` of its background -- inside the femur label
the local trabecular bone (line value ``LT``, :func:`local_trabecular_level`), in the label's outermost
voxel layer and in the rim outside it soft tissue (in the rim already subtracted as the DXA baseline by
the caller). For trabecular background
``c = (L - LT) / (Lc - LT)`` and the mineral is ``L + (1 - c) * marrow + c * (1083 - Lc)``: linear in
``L`` (image noise averages out, ``c`` is not clipped below) and exact for pure cortical bone, pure
trabecular bone and any mixture of the two. (Until 2026-11-24 every voxel within 3 mm of the surface
was taken as cortical, which read the outer trabecular bone ~10 % low: femoral neck aBMD -0.5 %.)

DXA (and therefore our truth) reports the HA mineral mass, which is what this map estimates.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

ICRU44_CORTICAL_DENSITY_G_CM3 = 1.92  # ICRU Report 44 (1989), cortical bone
ICRU44_CORTICAL_CA_FRACTION = 0.225  # ICRU Report 44, calcium mass fraction of cortical bone
REFERENCE_MARROW_FAT_FRACTION = 0.5  # the trabecular line's marrow (the spine calibration's middle)
# The local trabecular level: voxels deeper than this below the femur surface (beyond the cortex, ~1-3 mm
# at the proximal femur, and its blur) and below TRABECULAR_MAX_MG_CM3 (the densest femoral-head
# trabecular bone stays below ~450 mg/cm^3; thicker shaft cortex reads > 800), averaged with a Gaussian
# of TRABECULAR_LEVEL_SIGMA_MM (normalised convolution: it also extends the level into the cortex).
TRABECULAR_DEPTH_MM = 4.0
TRABECULAR_MAX_MG_CM3 = 500.0
TRABECULAR_LEVEL_SIGMA_MM = 6.0
# The label's outermost voxel layer: the cortex lies at the bone surface, so what is not cortex in these
# voxels is mostly the soft tissue outside (cortex 1-3 mm vs 1-2 mm voxels). Its background is soft tissue
# (share 1; on 8 digital-patient hips share 0.5 read neck aBMD +0.4 %, 0 +0.9 %, 1 -0.1 %).
SURFACE_SOFT_SHARE = 1.0
MIN_CORTICAL_FRACTION = -0.5  # c below 0 keeps the map linear in noise; far below it is not bone any more
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
    read = slope * (m.hu("cortical_bone", beam) - hu0)
    return float(cortical_mineral_mg_cm3() / read)


@lru_cache(maxsize=32)
def femoral_marrow_hu_deficit(kvp: float = DEFAULT_KVP) -> float:
    """HU by which HA-free femoral marrow reads below the reference (vertebral) marrow."""
    from .. import materials as m

    beam = m.Beam(kvp=float(kvp))
    ref = m.hu(m.trabecular_bone(0.0, REFERENCE_MARROW_FAT_FRACTION), beam)
    fem = m.hu(m.trabecular_bone(0.0, REFERENCE_MARROW_FAT_FRACTION + FEMORAL_MARROW_FAT_EXCESS), beam)
    return float(ref - fem)


def local_trabecular_level(line_mg_cm3: np.ndarray, depth_mm: np.ndarray,
                           spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Line value of the trabecular bone around each voxel (mg/cm^3, on the line's scale), see
    :data:`TRABECULAR_DEPTH_MM`. Without deep trabecular voxels: 0 (background = marrow)."""
    deep = (depth_mm > TRABECULAR_DEPTH_MM) & (line_mg_cm3 < TRABECULAR_MAX_MG_CM3)
    if int(deep.sum()) < 50:
        return np.zeros_like(line_mg_cm3, dtype=np.float32)
    sigma = [TRABECULAR_LEVEL_SIGMA_MM / s for s in spacing_mm]
    num = ndimage.gaussian_filter(np.where(deep, line_mg_cm3, 0.0).astype(np.float32), sigma)
    den = ndimage.gaussian_filter(deep.astype(np.float32), sigma)
    fallback = float(np.median(line_mg_cm3[deep]))
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), fallback).astype(np.float32)


def cortical_fraction(line_mg_cm3: np.ndarray, background_mg_cm3: np.ndarray | float, kvp: float | None) -> np.ndarray:
    """Cortical bone fraction ``c`` of each voxel over its background (line values), capped at 1."""
    cortical_line = cortical_line_value(kvp or DEFAULT_KVP)
    c = (line_mg_cm3 - background_mg_cm3) / np.maximum(cortical_line - background_mg_cm3, 1.0)
    return np.clip(c, MIN_CORTICAL_FRACTION, 1.0)


@lru_cache(maxsize=32)
def cortical_line_value(kvp: float = DEFAULT_KVP) -> float:
    """What the trabecular line reads for pure ICRU-44 cortical bone (mg/cm^3)."""
    return cortical_mineral_mg_cm3() / cortical_ratio(kvp)


def cortical_mineral_mg_cm3() -> float:
    from .. import materials as m

    return ICRU44_CORTICAL_DENSITY_G_CM3 * 1000.0 * ICRU44_CORTICAL_CA_FRACTION / m._ha_fractions()["Ca"]


def femur_mineral_mg_cm3(line_mg_cm3: np.ndarray, depth_mm: np.ndarray, kvp: float | None,
                         slope_mg_cm3_per_hu: float | None = None,
                         spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
                         rim_baseline_mg_cm3: float = 0.0) -> np.ndarray:
    """Bone mineral map from the calibration line's values and each voxel's depth below the femur
    surface (mm; 0 outside the label: the rim, whose values are already over the soft-tissue baseline
    ``rim_baseline_mg_cm3``). ``slope_mg_cm3_per_hu`` (the line's slope) enables the femoral-marrow term."""
    kvp = kvp or DEFAULT_KVP
    line = np.asarray(line_mg_cm3, dtype=np.float32)
    inside = depth_mm > 0
    marrow = 0.0 if slope_mg_cm3_per_hu is None else slope_mg_cm3_per_hu * femoral_marrow_hu_deficit(kvp)
    trabecular = local_trabecular_level(line, depth_mm, spacing_mm)
    surface = inside & ~ndimage.binary_erosion(inside)
    # background line value and the mineral it holds: trabecular bone (+ its marrow deficit) inside, soft
    # tissue (no mineral) in the rim and the label's outermost voxel layer (:data:`SURFACE_SOFT_SHARE`)
    soft_share = np.where(surface, SURFACE_SOFT_SHARE, np.where(inside, 0.0, 1.0)).astype(np.float32)
    background = soft_share * rim_baseline_mg_cm3 + (1.0 - soft_share) * trabecular
    # L: the line value before the rim's baseline subtraction (the rim's values are over the baseline)
    full = line + np.where(inside, 0.0, rim_baseline_mg_cm3)
    c = cortical_fraction(full, background, kvp)
    excess = cortical_mineral_mg_cm3() - cortical_line_value(kvp)  # < 0: cortex reads high on the line
    # mineral = c * cortex + (1 - c) * background mineral = L + c * excess + (1 - c) * (background mineral -
    # background line value); that difference is the marrow deficit for trabecular bone and minus the
    # baseline for soft tissue (it holds no mineral).
    mineral = full + c * excess + (1.0 - c) * ((1.0 - soft_share) * marrow - soft_share * rim_baseline_mg_cm3)
    return mineral.astype(np.float32)
