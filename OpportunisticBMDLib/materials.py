"""X-ray physics of tissues: compositions, attenuation over a CT tube spectrum, and Hounsfield units.

The digital patient (``phantom/``) and the internal calibration (``calibration/internal_multi.py``) both take
their numbers from here, so the densities of the phantom come from physics, not from any calibration
under test.

- Tissue compositions (elemental mass fractions, density): ICRU Report 44 (1989) "Tissue substitutes in
  radiation dosimetry and measurement" and ICRU Report 46 (1992); marrow from Woodard & White, Br J
  Radiol 59:1209 (1986).
- Mass attenuation coefficients: ``xraydb`` (Elam, Ravel & Sieber, Radiat Phys Chem 63:121 (2002));
  photo-absorption from Scofield's calculations, the same basis as NIST XCOM; coherent + incoherent
  scattering included (``kind="total"``).
- Tube spectrum: SpekPy v2 (Poludniowski et al., Med Phys 48:3630 (2021)), tungsten anode; if SpekPy is
  not importable, a Kramers (1923) bremsstrahlung spectrum through the same filtration (no K lines).
- A CT scanner's energy-integrating detector weights photons by their energy; the measured linear
  attenuation of a material is the detected-spectrum-weighted mean of mu(E). The spectrum is hardened by
  the tube filtration and by a water path standing for the patient (a scanner's water beam-hardening
  correction maps the polychromatic signal to the mu of water at that hardened spectrum).
- HU = 1000 (mu - mu_water) / (mu_water - mu_air), so water is 0 and air is -1000 exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# Hydroxyapatite Ca10(PO4)6(OH)2: the density the brief fixes (crystal density 3.16 g/cm3,
# e.g. CRC Handbook); QCT reports vBMD as mg of HA per cm3 of tissue.
HA_DENSITY_G_CM3 = 3.16
HA_DENSITY_MG_CM3 = HA_DENSITY_G_CM3 * 1000.0

# Typical total filtration of a clinical CT tube (inherent + flat filter), about 6 mm Al equivalent
# at the isocentre without the bowtie (IEC 60601-2-44 requires >= 2.5 mm Al; vendors quote 5-8 mm Al).
DEFAULT_FILTER_AL_MM = 6.0
# Water path that hardens the beam before the detector: the full path through a mid-size abdomen
# (~25 cm water-equivalent). With it, ICRU tissues land on typical clinical CT numbers at 120 kVp
# (fat about -100 HU, muscle about +45 HU) and the effective energy is ~73 keV.
DEFAULT_PATIENT_WATER_CM = 25.0


# --------------------------------------------------------------------------------------------------
# Materials
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Material:
    """A homogeneous material: elemental mass fractions (normalised to 1) and density (g/cm3).

    Hashable (fractions stored as a sorted tuple), so attenuation results can be cached."""

    name: str
    mass_fractions: tuple[tuple[str, float], ...]
    density_g_cm3: float
    _frac_dict: dict = field(default=None, compare=False, hash=False, repr=False)

    def __init__(self, name: str, mass_fractions: Mapping[str, float] | tuple, density_g_cm3: float):
        items = dict(mass_fractions)
        total = float(sum(items.values()))
        if total <= 0 or any(v < 0 for v in items.values()):
            raise ValueError(f"material {name!r}: mass fractions must be non-negative with a positive sum")
        if density_g_cm3 < 0:
            raise ValueError(f"material {name!r}: negative density")
        norm = tuple(sorted((el, float(v) / total) for el, v in items.items() if v > 0))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "mass_fractions", norm)
        object.__setattr__(self, "density_g_cm3", float(density_g_cm3))
        object.__setattr__(self, "_frac_dict", dict(norm))

    @property
    def fractions(self) -> dict[str, float]:
        return dict(self._frac_dict)

    def with_density(self, density_g_cm3: float, name: str | None = None) -> Material:
        return Material(name or self.name, self.mass_fractions, density_g_cm3)


def _ha_fractions() -> dict[str, float]:
    # Ca10(PO4)6(OH)2 from standard atomic weights (IUPAC).
    masses = {"Ca": 10 * 40.078, "P": 6 * 30.974, "O": 26 * 15.999, "H": 2 * 1.008}
    total = sum(masses.values())
    return {el: m / total for el, m in masses.items()}


# Mass fractions in percent. ICRU-44 (1989) Appendix A / ICRU-46 (1992), Woodard & White 1986.
MATERIALS: dict[str, Material] = {
    # ICRU-46 adipose tissue, adult #3 (Woodard & White 1986 "adipose tissue 3"), 0.93 g/cm3: the
    # lipid-rich subcutaneous fat CT sees at about -100 HU (ICRU-44's adult #2, 0.95 g/cm3, reads ~-80 HU).
    "adipose": Material("adipose", {"H": 11.6, "C": 68.1, "N": 0.2, "O": 19.8, "Na": 0.1, "S": 0.1, "Cl": 0.1}, 0.93),
    # ICRU-44 skeletal muscle, 1.05 g/cm3
    "muscle": Material(
        "muscle",
        {"H": 10.2, "C": 14.3, "N": 3.4, "O": 71.0, "Na": 0.1, "P": 0.2, "S": 0.3, "Cl": 0.1, "K": 0.4},
        1.05,
    ),
    # ICRU-44 whole blood, 1.06 g/cm3
    "blood": Material(
        "blood",
        {"H": 10.2, "C": 11.0, "N": 3.3, "O": 74.5, "Na": 0.1, "P": 0.1, "S": 0.2, "Cl": 0.3, "K": 0.2, "Fe": 0.1},
        1.06,
    ),
    "water": Material("water", {"H": 11.19, "O": 88.81}, 1.0),
    # ICRU-44 cortical bone, 1.92 g/cm3
    "cortical_bone": Material(
        "cortical_bone",
        {"H": 3.4, "C": 15.5, "N": 4.2, "O": 43.5, "Na": 0.1, "Mg": 0.2, "P": 10.3, "S": 0.3, "Ca": 22.5},
        1.92,
    ),
    # Woodard & White 1986 / ICRU-46: red (haematopoietic) and yellow (fatty) marrow
    "red_marrow": Material(
        "red_marrow", {"H": 10.5, "C": 41.4, "N": 3.4, "O": 43.9, "P": 0.1, "S": 0.2, "Cl": 0.2, "K": 0.2, "Fe": 0.1},
        1.03,
    ),
    "yellow_marrow": Material(
        "yellow_marrow", {"H": 11.5, "C": 64.4, "N": 0.7, "O": 23.1, "Na": 0.1, "S": 0.1, "Cl": 0.1}, 0.98
    ),
    # Dry air near sea level (NIST ESTAR/XCOM composition), 1.205e-3 g/cm3
    "air": Material("air", {"C": 0.0124, "N": 75.5268, "O": 23.1781, "Ar": 1.2827}, 0.001205),
    # ICRU-44 liver, kidney, spleen, skin
    "liver": Material(
        "liver", {"H": 10.2, "C": 13.9, "N": 3.0, "O": 71.6, "Na": 0.2, "P": 0.3, "S": 0.3, "Cl": 0.2, "K": 0.3}, 1.06
    ),
    "kidney": Material(
        "kidney",
        {"H": 10.3, "C": 13.2, "N": 3.0, "O": 72.4, "Na": 0.2, "P": 0.2, "S": 0.2, "Cl": 0.2, "K": 0.2, "Ca": 0.1},
        1.05,
    ),
    "spleen": Material(
        "spleen", {"H": 10.3, "C": 11.3, "N": 3.2, "O": 74.1, "Na": 0.1, "P": 0.3, "S": 0.2, "Cl": 0.2, "K": 0.3}, 1.06
    ),
    "skin": Material(
        "skin", {"H": 10.0, "C": 20.4, "N": 4.2, "O": 64.5, "Na": 0.2, "P": 0.1, "S": 0.2, "Cl": 0.3, "K": 0.1}, 1.09
    ),
    "hydroxyapatite": Material("hydroxyapatite", _ha_fractions(), HA_DENSITY_G_CM3),
    # Implant metals: commercially pure titanium (4.51 g/cm3) and ASTM F75 cast Co-Cr-Mo (~8.3 g/cm3).
    "titanium": Material("titanium", {"Ti": 1.0}, 4.51),
    "cobalt_chrome": Material(
        "cobalt_chrome", {"Co": 64.0, "Cr": 28.5, "Mo": 6.0, "Ni": 0.5, "Mn": 0.5, "Si": 0.5}, 8.3
    ),
    # Solid iodine 4.93 g/cm3 (CRC Handbook); mixtures use iodinated() with mg/ml partial densities.
    "iodine": Material("iodine", {"I": 1.0}, 4.93),
}


def get_material(material: str | Material) -> Material:
    if isinstance(material, Material):
        return material
    try:
        return MATERIALS[material]
    except KeyError:
        raise KeyError(f"unknown material {material!r}; known: {', '.join(sorted(MATERIALS))}") from None


def mix(fractions: Mapping[str | Material, float], by: str = "volume", name: str | None = None) -> Material:
    """Ideal mixture (volumes additive). ``fractions`` are normalised to sum 1, by volume or by mass."""
    if by not in ("volume", "mass"):
        raise ValueError("by must be 'volume' or 'mass'")
    parts = [(get_material(m), float(f)) for m, f in fractions.items() if f > 0]
    if not parts:
        raise ValueError("mix needs at least one positive fraction")
    total = sum(f for _, f in parts)
    parts = [(m, f / total) for m, f in parts]
    if by == "volume":
        masses = [(m, f * m.density_g_cm3) for m, f in parts]
        density = sum(mass for _, mass in masses)
    else:
        masses = parts
        density = 1.0 / sum(f / m.density_g_cm3 for m, f in parts)
    mass_total = sum(mass for _, mass in masses)
    elements: dict[str, float] = {}
    for m, mass in masses:
        for el, w in m.mass_fractions:
            elements[el] = elements.get(el, 0.0) + w * mass / mass_total
    label = name or "+".join(f"{f:.3g}{m.name}" for m, f in parts)
    return Material(label, elements, density)


@lru_cache(maxsize=4096)
def trabecular_bone(ha_mg_cm3: float, marrow_fat_fraction: float = 0.5) -> Material:
    """Trabecular bone as QCT sees it: HA at a partial density of ``ha_mg_cm3`` (mg HA per cm3 of tissue)
    in marrow. ``marrow_fat_fraction`` is the volume fraction of yellow (fatty) marrow in the marrow,
    the rest red marrow (Woodard & White 1986 compositions)."""
    if not 0.0 <= marrow_fat_fraction <= 1.0:
        raise ValueError("marrow_fat_fraction must be within 0..1")
    if not 0.0 <= ha_mg_cm3 < HA_DENSITY_MG_CM3:
        raise ValueError("ha_mg_cm3 must be within 0..3160")
    marrow = mix({"yellow_marrow": marrow_fat_fraction, "red_marrow": 1.0 - marrow_fat_fraction}, by="volume")
    v_ha = ha_mg_cm3 / HA_DENSITY_MG_CM3
    return mix({"hydroxyapatite": v_ha, marrow: 1.0 - v_ha}, by="volume",
               name=f"trabecular_{ha_mg_cm3:g}mgHA_fat{marrow_fat_fraction:g}")


@lru_cache(maxsize=1024)
def _iodinated(material: Material, iodine_mg_ml: float) -> Material:
    mass_iodine = iodine_mg_ml / 1000.0  # g per cm3 of tissue
    elements = {el: w * material.density_g_cm3 for el, w in material.mass_fractions}
    elements["I"] = elements.get("I", 0.0) + mass_iodine
    return Material(f"{material.name}+I{iodine_mg_ml:g}", elements, material.density_g_cm3 + mass_iodine)


def iodinated(material: str | Material, iodine_mg_ml: float) -> Material:
    """``material`` with iodine added at ``iodine_mg_ml`` mg per ml of tissue (contrast enhancement; the
    contrast medium's own volume is neglected, as its concentration in tissue is a few mg/ml)."""
    if iodine_mg_ml < 0:
        raise ValueError("iodine_mg_ml must be >= 0")
    return _iodinated(get_material(material), float(iodine_mg_ml))


# --------------------------------------------------------------------------------------------------
# Beam
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Beam:
    """A CT beam: tube potential and filtration (polychromatic), or a single energy (``mono_kev``).

    ``patient_water_cm`` is the water path that hardens the beam before detection (see module doc)."""

    kvp: float
    filter_al_mm: float = DEFAULT_FILTER_AL_MM
    filter_cu_mm: float = 0.0
    patient_water_cm: float = DEFAULT_PATIENT_WATER_CM
    anode_angle_deg: float = 12.0
    mono_kev: float | None = None

    @classmethod
    def mono(cls, kev: float) -> Beam:
        return cls(kvp=float(kev), mono_kev=float(kev))

    @property
    def effective_kev(self) -> float:
        """The single energy at which water attenuates as much as under this beam."""
        return _effective_kev(self)


def _tube_spectrum(beam: Beam) -> tuple[np.ndarray, np.ndarray]:
    """Photon fluence per keV bin (arbitrary units) after tube filtration: (energies_kev, fluence)."""
    try:
        import spekpy

        spek = spekpy.Spek(kvp=beam.kvp, th=beam.anode_angle_deg, dk=1.0)
        if beam.filter_al_mm > 0:
            spek.filter("Al", beam.filter_al_mm)
        if beam.filter_cu_mm > 0:
            spek.filter("Cu", beam.filter_cu_mm)
        energies_kev, fluence = spek.get_spectrum()
        return np.asarray(energies_kev, float), np.asarray(fluence, float)
    except ImportError:
        # Kramers (1923): photon number per unit energy ~ (kVp - E) / E for a thick target.
        energies_kev = np.arange(1.5, beam.kvp, 1.0)
        fluence = (beam.kvp - energies_kev) / energies_kev
        for element, thickness_mm, density in (("Al", beam.filter_al_mm, 2.699), ("Cu", beam.filter_cu_mm, 8.96)):
            if thickness_mm > 0:
                fluence = fluence * np.exp(-_element_mu_mass(element, energies_kev) * density * thickness_mm / 10.0)
        return energies_kev, fluence


def _element_mu_mass(element: str, energies_kev: np.ndarray) -> np.ndarray:
    """Total mass attenuation coefficient (cm2/g) of one element (xraydb, Elam tables)."""
    import xraydb

    return np.asarray(xraydb.mu_elam(element, np.asarray(energies_kev, float) * 1000.0, kind="total"), float)


@lru_cache(maxsize=256)
def _detected_weights(beam: Beam) -> tuple[np.ndarray, np.ndarray]:
    """(energies_kev, normalised weights) of the detected, energy-integrated spectrum."""
    if beam.mono_kev is not None:
        return np.array([beam.mono_kev], float), np.array([1.0])
    energies_kev, fluence = _tube_spectrum(beam)
    keep = (energies_kev >= 5.0) & (fluence > 0)
    energies_kev, fluence = energies_kev[keep], fluence[keep]
    if beam.patient_water_cm > 0:
        mu_water = _mass_attenuation_on(MATERIALS["water"], energies_kev) * MATERIALS["water"].density_g_cm3
        fluence = fluence * np.exp(-mu_water * beam.patient_water_cm)
    weights = fluence * energies_kev  # energy-integrating detector
    weights = weights / weights.sum()
    return energies_kev, weights


@lru_cache(maxsize=256)
def _element_table(element: str, energies_key: tuple[float, ...]) -> np.ndarray:
    return _element_mu_mass(element, np.asarray(energies_key))


def _mass_attenuation_on(material: Material, energies_kev: np.ndarray) -> np.ndarray:
    key = tuple(np.round(np.asarray(energies_kev, float), 6).tolist())
    total = np.zeros(len(key))
    for element, w in material.mass_fractions:
        total = total + w * _element_table(element, key)
    return total


@lru_cache(maxsize=8192)
def _mu_cached(material: Material, beam: Beam) -> float:
    energies_kev, weights = _detected_weights(beam)
    mu = _mass_attenuation_on(material, energies_kev) * material.density_g_cm3
    return float(np.sum(weights * mu))


def mu_linear_per_cm(material: str | Material, beam: Beam) -> float:
    """Linear attenuation coefficient (1/cm) averaged over the detected spectrum of ``beam``."""
    return _mu_cached(get_material(material), beam)


def hu(material: str | Material, beam: Beam) -> float:
    """CT number of ``material`` under ``beam`` (water 0, air -1000)."""
    mu_water = mu_linear_per_cm("water", beam)
    mu_air = mu_linear_per_cm("air", beam)
    return 1000.0 * (mu_linear_per_cm(material, beam) - mu_water) / (mu_water - mu_air)


def ha_equivalent_mg_cm3(material: str | Material, beam: Beam, base: str | Material = "water") -> float:
    """HA partial density (mg/cm3) in ``base`` (water, or e.g. red marrow) that attenuates like ``material``.

    Attenuation of the mixture is linear in the HA volume fraction, so the answer is closed-form."""
    mu_m = mu_linear_per_cm(material, beam)
    mu_base = mu_linear_per_cm(base, beam)
    mu_ha = mu_linear_per_cm("hydroxyapatite", beam)
    return HA_DENSITY_MG_CM3 * (mu_m - mu_base) / (mu_ha - mu_base)


@lru_cache(maxsize=256)
def _effective_kev(beam: Beam) -> float:
    if beam.mono_kev is not None:
        return float(beam.mono_kev)
    target = mu_linear_per_cm("water", beam)
    grid = np.arange(10.0, max(beam.kvp, 11.0), 0.1)
    mu_grid = _mass_attenuation_on(MATERIALS["water"], grid)  # decreasing with energy in this range
    return float(np.interp(-target, -mu_grid, grid))
