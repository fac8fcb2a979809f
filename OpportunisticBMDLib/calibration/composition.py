"""Compositions and beam facts the calibration methods share: the equivalent densities of psoas and fat
(from :mod:`..materials` at the scan's kVp), the age-typical psoas and marrow fat with their spreads, the
marrow fat term of a line on a marrow base, and the scan's kVp."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import materials as mat
from ..header import kvp_from
from ..settings import CalibrationSettings
from ..volume import Volume

# Equivalent densities (mg/cm3 hydroxyapatite) assigned to psoas muscle and subcutaneous fat.
# The reference study does not publish its values and no published muscle/fat HA-equivalents could be
# verified here, so they are computed from materials.py (NIST XCOM attenuation via xraydb, SpekPy tube
# spectrum, 6 mm Al, hardened by 25 cm water): the HA partial density in a marrow base (the scale QCT and
# the digital patient's truth use, as ``internal-multi``) that attenuates like the psoas (ICRU-44 skeletal
# muscle holding the typical psoas fat, :data:`PSOAS_FAT_FRACTION_OLDER`) / ICRU-44 adipose tissue, at the
# scan's kVp (DICOM KVP), the age-typical marrow fat fraction and the age-typical psoas fat
# (:func:`muscle_fat_densities`). They depend on the beam (half-fatty marrow base, psoas fat 6.9 %:
# 80 kVp 36.2 / -46.1; 100 kVp 37.9 / -53.2; 140 kVp 40.5 / -64.1) and on the base.
# The constants are the documented defaults for 120 kVp, a half-fatty marrow base and the older adults'
# psoas (kVp and age unknown): ``muscle_fat_densities()`` = 39.3 / -59.1; Testing/spine/test_spine.py
# cross-checks them. --muscle-density / --fat-density override them.
MUSCLE_DENSITY_MG_CM3 = 39.3
FAT_DENSITY_MG_CM3 = -59.1
# The psoas is not lean muscle: chemical-shift-encoding water-fat MRI of 76 adults (Sollmann et al.,
# Quant Imaging Med Surg 2020;10(2):496-507, Table 2) found a psoas proton-density fat fraction of
# 4.5 +- 1.5 % below 38 y and 6.9 +- 2.9 % above. Each % of fat lowers the psoas ~1.5 HU and, read as lean
# muscle, steepens the two-point line ~1 % (vBMD and the hip's aBMD ~1 % high). ASSUMPTION: the PDFF is
# taken as the adipose-tissue volume fraction of the psoas. Age unknown: the older group (patients of
# opportunistic CT are mostly older than 38 y). The patient's own fat fraction varies (SD 1.5-2.9 %):
# that is this calibration's irreducible per-patient error (~ +-3 %, docs/calibration.md).
PSOAS_FAT_FRACTION_YOUNG = 0.045
PSOAS_FAT_FRACTION_OLDER = 0.069
PSOAS_FAT_AGE_SPLIT_Y = 38.0
PSOAS_FAT_SD_YOUNG = 0.015  # between-subject SD, same source
PSOAS_FAT_SD_OLDER = 0.029
REFERENCE_KVP = 120.0
# Marrow of older adults' lumbar vertebrae is about half fat by volume (Griffith et al., Radiology
# 236:945 (2005): MR fat fraction 0.5-0.6 in the 6th-7th decade); the base the HA scale is built on.
DEFAULT_MARROW_FAT_FRACTION = 0.5
REFERENCE_MARROW_FAT_FRACTION = DEFAULT_MARROW_FAT_FRACTION  # the base of the documented densities above


def expected_marrow_fat_fraction(age_years: float) -> float:
    """Typical lumbar marrow fat volume fraction at an age: about 0.3 at 30 y rising ~0.6 % per year
    (MR spectroscopy: Griffith et al., J Magn Reson Imaging 36:225 (2012); Baum et al. 2012)."""
    return float(np.clip(0.30 + 0.006 * (age_years - 30.0), 0.15, 0.75))


# Between-subject SD of the lumbar (L1-L4) marrow proton-density fat fraction at a given age: 6.0-8.0 %
# in the 20-39 y groups of 156 healthy adults (Baum et al., Front Endocrinol 2018;9:141, chemical-shift
# water-fat MRI). PDFF is taken as the volume fraction of yellow marrow.
MARROW_FAT_SD = 0.07
# Age unknown: the age-typical value itself is unknown too -- add the spread of
# expected_marrow_fat_fraction over 30-80 y (0.30 of range, uniform: 0.30/sqrt(12) = 0.087).
MARROW_FAT_SD_AGE_UNKNOWN = 0.11


def marrow_fat_sd(age_years: float | None) -> float:
    """1 SD of the patient's marrow fat fraction about the assumed base (age known: age-typical base)."""
    return MARROW_FAT_SD if age_years is not None else MARROW_FAT_SD_AGE_UNKNOWN


def marrow_base_hu_sd(kvp: float, marrow_fat_fraction: float, fat_sd: float) -> float:
    """HU by which HA-free marrow moves when its fat fraction moves by ``fat_sd`` about the base (central
    difference): a line built on the base reads the patient's marrow that many HU (x slope: mg/cm3) off."""
    beam = mat.Beam(kvp=float(kvp))
    lo = mat.hu(mat.trabecular_bone(0.0, max(0.0, marrow_fat_fraction - fat_sd)), beam)
    hi = mat.hu(mat.trabecular_bone(0.0, min(1.0, marrow_fat_fraction + fat_sd)), beam)
    span = min(1.0, marrow_fat_fraction + fat_sd) - max(0.0, marrow_fat_fraction - fat_sd)
    return float(abs(hi - lo) * fat_sd / span)


def marrow_fat_term(kvp: float, base_fraction: float, settings: CalibrationSettings, age_years: float | None,
                    slope_mg_cm3_per_hu: float) -> dict:
    """``details.marrow_fat`` of a line on a marrow base: single-energy QCT's fat error as a stated 1 SD.
    A marrow fattier than the base reads as less mineral by ``hu_sd`` x slope; SD 0 when the user gave the
    patient's marrow fat (``CalibrationSettings.marrow_fat_fraction``, ``obmd analyze --marrow-fat``)."""
    user = settings.marrow_fat_fraction is not None
    sd = 0.0 if user else marrow_fat_sd(age_years)
    hu_sd = round(marrow_base_hu_sd(float(kvp), float(base_fraction), sd), 2) if sd else 0.0
    return {"base_fraction": float(base_fraction), "sd_fraction": sd, "hu_sd": hu_sd,
            "mg_cm3_sd": round(hu_sd * abs(float(slope_mg_cm3_per_hu)), 2),
            "source": "user" if user else ("age-typical" if age_years is not None else "default (age unknown)"),
            "sd_source": "between-subject SD of lumbar marrow PDFF (Baum et al., Front Endocrinol 2018;9:141)"
                         + ("" if age_years is not None else ", widened for the unknown age")}


def _younger_group(age_years: float | None) -> bool:
    """The source's younger group (under 38 y); an unknown age counts as the older one."""
    return age_years is not None and age_years < PSOAS_FAT_AGE_SPLIT_Y


def typical_psoas_fat_fraction(age_years: float | None) -> float:
    """Adipose volume fraction of an adult psoas at ``age_years`` (None: older adult), see
    :data:`PSOAS_FAT_FRACTION_OLDER`."""
    return PSOAS_FAT_FRACTION_YOUNG if _younger_group(age_years) else PSOAS_FAT_FRACTION_OLDER


def psoas_fat_sd(age_years: float | None) -> float:
    """Between-subject SD of the psoas fat fraction at ``age_years`` (None: older adult)."""
    return PSOAS_FAT_SD_YOUNG if _younger_group(age_years) else PSOAS_FAT_SD_OLDER


def slope_relative_sd(fat_sd: float, kvp: float, marrow_fat_fraction: float, psoas_d: float, fat_d: float) -> float:
    """Relative SD (1 SD) of the muscle-fat line's slope from the patient's psoas fat deviating from the
    assumed value by ``fat_sd``: the psoas' true HA-equivalent moves by ``fat_sd * (lean - fat)`` while the
    line keeps the assumed one, so the slope moves by that over ``psoas_d - fat_d``. A reading ``v`` (mg/cm3)
    then has SD ``rel * (v - fat_d)`` (the line pivots on the fat point); an areal BMD, mineral over soft
    tissue, ``rel * aBMD``."""
    lean_d, adipose_d = muscle_fat_densities(kvp, marrow_fat_fraction, 0.0)
    return float(fat_sd * (lean_d - adipose_d) / (psoas_d - fat_d))


@lru_cache(maxsize=128)
def muscle_fat_densities(kvp: float = REFERENCE_KVP,
                         marrow_fat_fraction: float = REFERENCE_MARROW_FAT_FRACTION,
                         psoas_fat_fraction: float = PSOAS_FAT_FRACTION_OLDER) -> tuple[float, float]:
    """(psoas, fat) HA-equivalent densities (mg/cm3) under a ``kvp`` beam on a marrow base with
    ``marrow_fat_fraction`` yellow marrow, the psoas holding ``psoas_fat_fraction`` adipose tissue (see the
    comment at :data:`MUSCLE_DENSITY_MG_CM3`)."""
    beam = mat.Beam(kvp=float(kvp))
    base = mat.trabecular_bone(0.0, float(marrow_fat_fraction))
    psoas = mat.mix({"muscle": 1.0 - float(psoas_fat_fraction), "adipose": float(psoas_fat_fraction)}) \
        if psoas_fat_fraction > 0 else "muscle"
    return (mat.ha_equivalent_mg_cm3(psoas, beam, base=base), mat.ha_equivalent_mg_cm3("adipose", beam, base=base))


def base_marrow_fat_fraction(settings: CalibrationSettings, age_years: float | None) -> float:
    """Marrow fat fraction of the HA scale's base: the user's, else age-typical, else the default."""
    if settings.marrow_fat_fraction is not None:
        return float(settings.marrow_fat_fraction)
    if age_years is not None:
        return round(expected_marrow_fat_fraction(float(age_years)), 3)  # rounded: cache-friendly
    return DEFAULT_MARROW_FAT_FRACTION


def known_kvp(ct: Volume, settings: CalibrationSettings) -> float | None:
    """Tube potential from the settings (the user's or the header's, resolved by the pipeline) or else the
    CT's header, if any (None: unknown)."""
    return settings.kvp if settings.kvp is not None else kvp_from(ct.metadata)
