"""``internal-multi``: phantomless calibration from several internal reference tissues.

Method of Michalski et al., Med Eng Phys 2020 (DOI 10.1016/j.medengphy.2020.01.009; open source as
Bonelab/Ogo ``InternalCalibration``): measure the mean HU of reference tissues whose composition is
known (air outside the body, subcutaneous fat, psoas muscle, blood in the aorta/IVC, optionally cortical
bone), compute each tissue's linear attenuation from its ICRU-44/46 composition (``materials.py``) over a
family of beams, pick the beam whose attenuations best explain the measured HU by a straight line
HU = a + b * mu, and convert trabecular HU to mg/cm3 hydroxyapatite with that beam.

Two beam families (``CalibrationSettings.energy_model``):
- ``"spectrum"`` (default): polychromatic tube spectra (SpekPy) over 70-150 kVp; the fitted spectrum
  also converts bone, so the lower effective energy of calcium under a polychromatic beam is kept;
- ``"mono"``: single energies 40-120 keV, as in Michalski 2020.

Tissues are weighted by how far a real ROI may stray from its nominal composition
(``TISSUE_SIGMA_HU``: muscle, often fat-infiltrated, counts least). Robustness to one bad tissue (a
contrast-filled aorta, an ROI that caught bowel gas or the table): with four or more tissues, each is
predicted from a fit of the others; the one furthest off in units of its expected spread is dropped
when that exceeds ``MAX_Z``. What was used, dropped, fitted and the residuals go into ``details`` (results.json
``calibration.details``).

The HA scale is the partial density of HA in a base of marrow (``marrow_fat_fraction`` of yellow marrow
by volume: from the calibration settings, else the age-typical value when the patient's age is known, else
0.5), the quantity the digital patient's truth uses; QCT's fat error remains for patients whose marrow is
fattier or leaner than the base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .. import materials as mat
from ..settings import AnalysisOptions
from ..volume import Volume
from .composition import (
    DEFAULT_MARROW_FAT_FRACTION,
    REFERENCE_KVP,
    base_marrow_fat_fraction,
    known_kvp,
    marrow_fat_term,
)
from .registry import LINE_FROM_TISSUES, register_calibration
from .types import Calibration

# Reference tissues: name -> material in materials.MATERIALS.
TISSUE_MATERIALS = {
    "air": "air",
    "fat": "adipose",
    "muscle": "muscle",
    "blood": "blood",
    "cortical_bone": "cortical_bone",
}
# How far a real ROI mean may stray from its nominal composition (HU, 1 SD): the fit's weights are 1/SD^2
# and a tissue is an outlier beyond MAX_Z SDs. Air: pure, only noise; fat: adipose composition varies
# (ICRU-46 adult #1-#3 span ~15 HU); blood: haematocrit (~5 HU per 10 % Hct); muscle: fat infiltration
# (5-20 % fat, 7-30 HU lower, Goodpaster et al., J Appl Physiol 89:104 (2000)) and partial volume.
TISSUE_SIGMA_HU = {"air": 2.0, "fat": 4.0, "blood": 4.0, "muscle": 10.0, "cortical_bone": 40.0}
MAX_Z = 3.0
# Blood above this HU is contrast-enhanced (unenhanced blood 30-60 HU): its composition is unknown.
MAX_UNENHANCED_BLOOD_HU = 90.0
KVP_GRID = tuple(float(k) for k in range(70, 151, 10))  # clinical settings; mu interpolated in between
MONO_GRID_KEV = tuple(float(e) for e in np.arange(40.0, 120.01, 0.5))


@dataclass
class InternalFit:
    """Result of the fit: HU = a + b * mu(beam); ``slope``/``intercept`` map HU -> mg/cm3 HA."""

    energy_model: str
    kvp: float | None
    effective_kev: float
    a_hu: float
    b_hu_cm: float
    slope_mg_cm3_per_hu: float
    intercept_mg_cm3: float
    rms_residual_hu: float
    residuals_hu: dict[str, float]
    tissues_used: list[str]
    dropped: dict[str, float] = field(default_factory=dict)  # tissue -> its leave-one-out residual (HU)
    kvp_source: str = "fitted"
    marrow_fat_fraction: float = DEFAULT_MARROW_FAT_FRACTION
    tissue_details: dict[str, dict] = field(default_factory=dict)  # per tissue: HU, voxels, why not used

    def to_mg_cm3(self, hu_value: float | np.ndarray) -> float | np.ndarray:
        return self.intercept_mg_cm3 + self.slope_mg_cm3_per_hu * hu_value


def _base_material(marrow_fat_fraction: float) -> mat.Material:
    return mat.trabecular_bone(0.0, marrow_fat_fraction)


@lru_cache(maxsize=64)
def _mu_table(
    energy_model: str, tissues: tuple[str, ...], marrow_fat_fraction: float, kvp: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(grid, mu[grid, tissue + base + HA]) for the beam family (a single beam when ``kvp`` is known)."""
    materials = [mat.get_material(TISSUE_MATERIALS[t]) for t in tissues]
    materials += [_base_material(marrow_fat_fraction), mat.MATERIALS["hydroxyapatite"]]
    if energy_model == "spectrum" and kvp is not None:
        grid = np.array([float(kvp)])
        return grid, np.array([[mat.mu_linear_per_cm(m, mat.Beam(float(kvp))) for m in materials]])
    if energy_model == "mono":
        grid = np.asarray(MONO_GRID_KEV)
        beams = [mat.Beam.mono(e) for e in grid]
    elif energy_model == "spectrum":
        grid = np.asarray(KVP_GRID)
        beams = [mat.Beam(k) for k in grid]
    else:
        raise ValueError(f"energy_model must be 'spectrum' or 'mono', not {energy_model!r}")
    table = np.array([[mat.mu_linear_per_cm(m, b) for m in materials] for b in beams])
    if energy_model == "spectrum":  # interpolate to 0.5 kVp steps (mu is smooth in kVp)
        fine = np.arange(grid[0], grid[-1] + 0.01, 0.5)
        table = np.stack([np.interp(fine, grid, table[:, j]) for j in range(table.shape[1])], axis=1)
        grid = fine
    return grid, table


def _line_fit(mu: np.ndarray, hu_values: np.ndarray, sigma: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Weighted least squares HU = a + b mu (weights 1/sigma^2)."""
    design = np.stack([np.ones_like(mu), mu], axis=1) / sigma[:, None]
    (a, b), *_ = np.linalg.lstsq(design, hu_values / sigma, rcond=None)
    return float(a), float(b), hu_values - (a + b * mu)


def _sigmas(tissues: tuple[str, ...]) -> np.ndarray:
    return np.array([TISSUE_SIGMA_HU[t] for t in tissues])


def _best_energy(
    tissues: tuple[str, ...], hu_values: np.ndarray, energy_model: str, marrow_fat: float, kvp: float | None
):
    grid, table = _mu_table(energy_model, tissues, marrow_fat, kvp)
    sigma = _sigmas(tissues)
    best = None
    for g, row in zip(grid, table, strict=True):
        a, b, res = _line_fit(row[: len(tissues)], hu_values, sigma)
        chi = float(np.sqrt(np.mean((res / sigma) ** 2)))
        if b > 0 and (best is None or chi < best[0]):
            best = (chi, float(g), a, b, res, row)
    if best is None:
        raise ValueError("no beam gives a positive HU-attenuation slope for these tissues")
    return best


def fit_internal_calibration(
    tissue_hu: dict[str, float],
    energy_model: str = "spectrum",
    marrow_fat_fraction: float = DEFAULT_MARROW_FAT_FRACTION,
    robust: bool = True,
    kvp: float | None = None,
) -> InternalFit:
    """Fit the beam to measured mean HU of reference tissues (keys of ``TISSUE_MATERIALS``).

    With ``kvp`` known (DICOM tag KVP), the spectrum is fixed and only HU = a + b mu is fitted: the
    scanner's offset and scale come from the tissues, the spectral shape from the header."""
    names = tuple(sorted(t for t in tissue_hu if t in TISSUE_MATERIALS))
    if len(names) < 3:
        raise ValueError(f"internal calibration needs at least 3 reference tissues, got {list(names)}")
    values = np.array([tissue_hu[t] for t in names], float)
    chi, g, a, b, res, row = _best_energy(names, values, energy_model, marrow_fat_fraction, kvp)
    dropped: dict[str, float] = {}
    if robust and len(names) >= 4 and chi > 1.0:  # residuals beyond the tissues' expected spread
        # leave-one-out at the full fit's beam (a free beam would fit any three tissues exactly)
        beam = _beam(energy_model, g)
        mu_all = np.array([mat.mu_linear_per_cm(TISSUE_MATERIALS[t], beam) for t in names])
        sigma_all = _sigmas(names)
        trials = []
        for i, left_out in enumerate(names):
            keep_idx = np.arange(len(names)) != i
            t_a, t_b, _ = _line_fit(mu_all[keep_idx], values[keep_idx], sigma_all[keep_idx])
            loo_residual = float(values[i] - (t_a + t_b * mu_all[i]))
            # studentised: the left-out tissue's own spread plus the uncertainty of its prediction
            design = np.stack([np.ones(keep_idx.sum()), mu_all[keep_idx]], axis=1)
            cov = np.linalg.inv(design.T @ (design / sigma_all[keep_idx, None] ** 2))
            x = np.array([1.0, mu_all[i]])
            z = abs(loo_residual) / np.sqrt(sigma_all[i] ** 2 + float(x @ cov @ x))
            trials.append((z, i, left_out, loo_residual))
        z, i, left_out, loo_residual = max(trials)
        if z > MAX_Z:  # the tissue least consistent with the others, beyond its expected spread
            dropped[left_out] = loo_residual
            names, values = tuple(n for n in names if n != left_out), np.delete(values, i)
            _, g, a, b, res, row = _best_energy(names, values, energy_model, marrow_fat_fraction, kvp)
    rms = float(np.sqrt(np.mean(np.square(res))))
    n = len(names)
    mu_base, mu_ha = float(row[n]), float(row[n + 1])
    # HU -> mu = (HU - a) / b -> HA = 3160 (mu - mu_base) / (mu_ha - mu_base): linear in HU.
    scale = mat.HA_DENSITY_MG_CM3 / (mu_ha - mu_base)
    slope = scale / b
    intercept = scale * (-a / b - mu_base)
    beam = _beam(energy_model, g)
    return InternalFit(
        energy_model=energy_model,
        kvp=g if energy_model == "spectrum" else None,
        effective_kev=beam.effective_kev,
        a_hu=a,
        b_hu_cm=b,
        slope_mg_cm3_per_hu=float(slope),
        intercept_mg_cm3=float(intercept),
        rms_residual_hu=rms,
        residuals_hu={t: float(r) for t, r in zip(names, res, strict=True)},
        tissues_used=list(names),
        dropped=dropped,
        marrow_fat_fraction=marrow_fat_fraction,
        kvp_source="header" if (kvp is not None and energy_model == "spectrum") else "fitted",
    )


def _beam(energy_model: str, g: float) -> mat.Beam:
    return mat.Beam.mono(g) if energy_model == "mono" else mat.Beam(float(g))


# --------------------------------------------------------------------------------------------------
# Reference tissue ROIs on a CT
# --------------------------------------------------------------------------------------------------
def _z_range(rois: dict[str, np.ndarray], shape: tuple[int, ...], margin: int) -> tuple[int, int]:
    """Slices spanned by the trabecular ROIs (the calibration uses tissues at the measured levels)."""
    ks = [np.nonzero(m.any(axis=(1, 2)))[0] for name, m in rois.items() if name.startswith("trabecular_")]
    ks = [k for k in ks if k.size]
    if not ks:
        return 0, shape[0]
    lo = min(int(k.min()) for k in ks)
    hi = max(int(k.max()) for k in ks) + 1
    return max(0, lo - margin), min(shape[0], hi + margin)


def _erode_2d(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    if radius_mm <= 0:
        return mask
    dist = ndimage.distance_transform_edt(mask, sampling=(1e6, spacing_mm[1], spacing_mm[2]))
    return dist > radius_mm


def air_roi(ct: Volume, labels: Volume | None, z_lo: int, z_hi: int, clearance_mm: float = 15.0) -> np.ndarray:
    """Air outside the body, ``clearance_mm`` away from skin and table, in slices z_lo..z_hi.

    Values outside -1100..-850 HU are excluded (padding outside the reconstruction circle, e.g. -3024)."""
    sub = ct.array[z_lo:z_hi]
    if labels is not None and (labels.array[z_lo:z_hi] == 42).any():
        body = labels.array[z_lo:z_hi] > 0
        body &= labels.array[z_lo:z_hi] != 61
    else:
        body = sub > -500
    table = labels.array[z_lo:z_hi] == 61 if labels is not None else np.zeros_like(body)
    obstacles = body | table | (sub > -500)
    free = ~obstacles
    dist = ndimage.distance_transform_edt(free, sampling=(1e6, ct.spacing_mm[1], ct.spacing_mm[2]))
    mask = (dist > clearance_mm) & (sub > -1100) & (sub < -850)
    # not touching the image edge (reconstruction-circle rim)
    edge_mm = 5.0
    edge_j = max(1, int(round(edge_mm / ct.spacing_mm[1])))
    edge_i = max(1, int(round(edge_mm / ct.spacing_mm[2])))
    mask[:, :edge_j] = False
    mask[:, -edge_j:] = False
    mask[:, :, :edge_i] = False
    mask[:, :, -edge_i:] = False
    full = np.zeros(ct.array.shape, bool)
    full[z_lo:z_hi] = mask
    return full


def blood_roi(ct: Volume, labels: Volume, z_lo: int, z_hi: int, erosion_mm: float = 2.0) -> np.ndarray:
    vessels = np.isin(labels.array[z_lo:z_hi], (50, 51))
    core = _erode_2d(vessels, erosion_mm, ct.spacing_mm)
    full = np.zeros(ct.array.shape, bool)
    full[z_lo:z_hi] = core
    return full


def measure_reference_tissues(
    ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, use_cortical: bool = False
) -> tuple[dict[str, float], dict[str, dict], dict[str, np.ndarray]]:
    """Mean HU per reference tissue, per-tissue details, and the masks used."""
    z_lo, z_hi = _z_range(rois, ct.array.shape, margin=int(round(30.0 / ct.spacing_mm[0])))
    masks: dict[str, np.ndarray] = {}
    if rois.get("fat_roi") is not None and rois["fat_roi"].any():
        masks["fat"] = rois["fat_roi"]
    elif labels is not None:
        masks["fat"] = (labels.array == 40) & (ct.array > -190) & (ct.array < -30)
    if rois.get("muscle_roi") is not None and rois["muscle_roi"].any():
        masks["muscle"] = rois["muscle_roi"]
    elif labels is not None:
        masks["muscle"] = np.isin(labels.array, (30, 31)) & (ct.array > -30) & (ct.array < 150)
    masks["air"] = air_roi(ct, labels, z_lo, z_hi)
    if labels is not None:
        masks["blood"] = blood_roi(ct, labels, z_lo, z_hi)
        if use_cortical:
            femur = np.isin(labels.array, (20, 21))
            shell = femur & ~ndimage.binary_erosion(femur, iterations=1) & (ct.array > 800)
            masks["cortical_bone"] = shell
    values: dict[str, float] = {}
    details: dict[str, dict] = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        if n < 20:
            details[name] = {"used": False, "reason": f"only {n} voxels"}
            continue
        mean = float(ct.array[mask].mean())
        details[name] = {"hu_mean": mean, "hu_sd": float(ct.array[mask].std()), "voxel_count": n,
                         "material": TISSUE_MATERIALS[name]}
        if name == "blood" and mean > MAX_UNENHANCED_BLOOD_HU:
            details[name].update(used=False, reason=f"contrast-enhanced ({mean:.0f} HU)")
            continue
        values[name] = mean
    return values, details, masks


def internal_calibration(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                         options: AnalysisOptions) -> InternalFit:
    settings = options.calibration_settings
    tissue_hu, tissue_details, _ = measure_reference_tissues(ct, rois, labels, bool(settings.use_cortical))
    fit = fit_internal_calibration(
        tissue_hu,
        energy_model=settings.energy_model or "spectrum",
        marrow_fat_fraction=base_marrow_fat_fraction(settings, options.patient_age),
        robust=settings.robust is not False,
        kvp=known_kvp(ct, settings),
    )
    fit.tissue_details = tissue_details
    return fit


def fit_details(fit: InternalFit) -> dict:
    tissues = fit.tissue_details
    for name, res in fit.residuals_hu.items():
        tissues.setdefault(name, {})["residual_hu"] = res
    for name, res in fit.dropped.items():
        tissues.setdefault(name, {}).update(used=False, reason="dropped as outlier", loo_residual_hu=res)
    return {
        "reference": "Michalski et al. 2020, Med Eng Phys, doi:10.1016/j.medengphy.2020.01.009",
        "energy_model": fit.energy_model,
        "kvp": fit.kvp,
        "kvp_source": fit.kvp_source,
        "effective_energy_kev": fit.effective_kev,
        "hu_vs_mu_intercept_hu": fit.a_hu,
        "hu_vs_mu_slope_hu_cm": fit.b_hu_cm,
        "rms_residual_hu": fit.rms_residual_hu,
        "tissues_used": fit.tissues_used,
        "dropped_tissues": list(fit.dropped),
        "base_marrow_fat_fraction": fit.marrow_fat_fraction,
        "tissues": tissues,
    }


# vBMD bias with paraspinal instead of psoas muscle (measurement: qc.py, `obmd bench muscle-substitution`):
# the real CT +1 mg/cm3; digital patients mean +0.3, -0.4 to +0.6 (the fit weights the muscle least).
PARASPINAL_BIAS_MG_CM3 = (1.0, (0.3, -0.4, 0.6))


@register_calibration(
    "internal-multi", title="internal-multi (several tissues, robust fit)",
    help="several tissues, Michalski 2020",
    validation="phantomless, no ± stated; digital patients: bias −1.9, limits −13 to +9 mg/cm³",
    line_from=LINE_FROM_TISSUES, paraspinal_bias_mg_cm3=PARASPINAL_BIAS_MG_CM3)
def internal_multi_calibration(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                               options: AnalysisOptions) -> Calibration:
    fit = internal_calibration(ct, rois, labels, options)
    details = fit_details(fit)
    details["marrow_fat"] = marrow_fat_term(fit.kvp or REFERENCE_KVP, fit.marrow_fat_fraction,
                                            options.calibration_settings, options.patient_age,
                                            fit.slope_mg_cm3_per_hu)
    return Calibration("internal-multi", fit.slope_mg_cm3_per_hu, fit.intercept_mg_cm3, details)
