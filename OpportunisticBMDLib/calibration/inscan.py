"""``inscan``: HU -> mg/cm3 from an in-scan calibration pad found in the CT.

A pad (QCT practice: Mindways, QRM) lies under the patient during the scan: a water-equivalent base
holding rods of known hydroxyapatite density, running along z. It is found without labels: rods are
z-invariant cylinders, so in the z-mean image they are small bright discs (top-hat against a horizontal
line wider than a rod) that are round, sit in a homogeneous water-like base and line up side by side
with the same base around them. Each rod's HU is the mean of its core (:data:`CORE_MARGIN_MM` inside the
edge: blur and partial volume) over the slices that agree; the base around the rods gives the 0 mg/cm3
point. Rods are matched to the nominal densities by rank of HU and a least-squares line HA-in-water
``mg/cm3 = a + b * HU`` is fitted.

The pad's scale is HA in water; the project's scale (truth, ``muscle-fat``, ``internal-multi``) is HA in a
marrow base (:func:`.composition.base_marrow_fat_fraction`). The line is converted with
:mod:`materials`: the beam (the scan's kVp, water path matched to the measured HU per mg/cm3 of the rods)
gives the base's HU relative to water and its HU per mg/cm3 (volume mixing). Limits: the rods lie
outside the body, so the body's cupping and scatter offsets are not seen by them; the nominal densities
are the user's (``CalibrationSettings.pad_densities``, default :data:`DEFAULT_ROD_MG_CM3`: the digital
patient's pad).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from .. import materials as mat
from ..errors import InputError
from ..settings import AnalysisOptions, CalibrationSettings
from ..volume import Volume
from .composition import REFERENCE_KVP, base_marrow_fat_fraction, known_kvp, marrow_fat_term
from .registry import LINE_FROM_PAD, register_calibration
from .types import Calibration

DEFAULT_ROD_MG_CM3 = (50.0, 100.0, 150.0, 200.0)  # the digital patient's pad (phantom/pad.py)
BASE_MG_CM3 = 0.0  # the pad's water-equivalent base
ROD_RADIUS_MM = (3.0, 12.0)  # rods accepted (radius at half contrast)
LINE_MM = 35.0  # top-hat line: wider than a rod, shorter than the pad
MIN_CONTRAST_HU = 20.0  # a rod stands this far above its base (50 mg/cm3 HA: ~55-100 HU, 80-140 kVp)
CANDIDATE_HU = 12.0  # top-hat level bounding a candidate (below half the weakest rod's contrast)
BASE_HU_RANGE = (-100.0, 100.0)  # water-equivalent base, scanner offsets included
BASE_TOLERANCE_HU = 25.0  # pixels of the ring this close to its median are base
BASE_MAX_SD_HU = 15.0  # z-mean image SD of the base ring (homogeneous)
MIN_BASE_SHARE = 0.4  # of the ring must be base
RING_MM = (2.5, 5.0)  # base ring beyond a rod's edge
CORE_MARGIN_MM = 2.0  # rod core this far inside its edge (blur, partial volume)
MIN_RODS = 3
ROW_TOLERANCE_MM = 5.0  # rods of one pad: centres at the same height ...
BASE_MATCH_HU = 15.0  # ... and the same base around them
SLOPE_RANGE_HU_PER_MG = (0.8, 2.6)  # HA in water (materials.py): 80 kVp/16 cm water 2.06 .. 140 kVp/40 cm 1.08
MIN_R2 = 0.99
MAX_RESIDUAL_MG_CM3 = 10.0
SLICE_OUTLIER_SD = 4.0  # slices whose core mean strays this many SDs are dropped (pad shorter than the scan)
WATER_PATHS_CM = tuple(float(w) for w in range(8, 62, 4))  # beam hardening searched to match the rods' slope


@dataclass
class PadRod:
    centre_ji: tuple[float, float]  # pixel (j, i) in the axial plane
    radius_mm: float
    base_hu: float  # z-mean of the ring around it (detection)
    contrast_hu: float


@dataclass
class PadDetection:
    rods: list[PadRod]
    base_mask: np.ndarray  # 2D, the base rings
    candidates: int


def z_mean_image(ct: Volume) -> np.ndarray:
    """Mean HU along z of each (j, i) (float64; slab by slab to bound memory)."""
    total = np.zeros(ct.shape[1:], np.float64)
    step = max(1, 8_000_000 // max(ct.shape[1] * ct.shape[2], 1))
    for k in range(0, ct.shape[0], step):
        total += ct.array[k:k + step].sum(axis=0, dtype=np.float64)
    return total / ct.shape[0]


def _ring(cj: float, ci: float, r0_px: np.ndarray | None, r1_px: np.ndarray, jj: np.ndarray,
          ii: np.ndarray) -> np.ndarray:
    """Pixels (of the grids ``jj``, ``ii``) within radius r1 and beyond r0 (pixels per axis; None: a disc)."""
    rr = np.sqrt(((jj - cj) / r1_px[0]) ** 2 + ((ii - ci) / r1_px[1]) ** 2)
    r0 = np.sqrt(((jj - cj) / r0_px[0]) ** 2 + ((ii - ci) / r0_px[1]) ** 2) if r0_px is not None else None
    return (rr <= 1.0) if r0 is None else (rr <= 1.0) & (r0 > 1.0)


def _candidate(img: np.ndarray, comp: np.ndarray, spacing_ji: np.ndarray) -> PadRod | None:
    """A rod from one top-hat component, or None when it is not a round rod in a water-like base."""
    jj, ii = np.nonzero(comp)
    area_mm2 = jj.size * float(np.prod(spacing_ji))
    r_area = float(np.sqrt(area_mm2 / np.pi))
    if not ROD_RADIUS_MM[0] * 0.7 <= r_area <= ROD_RADIUS_MM[1] * 1.4:
        return None
    pts = np.column_stack([jj * spacing_ji[0], ii * spacing_ji[1]])
    ev = np.linalg.eigvalsh(np.cov(pts.T)) if jj.size > 2 else np.zeros(2)
    if ev[0] <= 0 or ev[0] / ev[1] < 0.6:  # round, not a streak or a slab edge
        return None
    cj, ci = float(jj.mean()), float(ii.mean())
    pad_px = int(np.ceil((r_area + RING_MM[1] + 3) / spacing_ji.min()))
    j0, j1 = max(int(cj) - pad_px, 0), min(int(cj) + pad_px + 1, img.shape[0])
    i0, i1 = max(int(ci) - pad_px, 0), min(int(ci) + pad_px + 1, img.shape[1])
    win = img[j0:j1, i0:i1]
    gj, gi = np.mgrid[j0:j1, i0:i1]
    ring = _ring(cj, ci, (r_area + RING_MM[0]) / spacing_ji, (r_area + RING_MM[1]) / spacing_ji, gj, gi)
    base_med = float(np.median(win[ring]))
    base = ring & (np.abs(win - base_med) <= BASE_TOLERANCE_HU)
    if not BASE_HU_RANGE[0] <= base_med <= BASE_HU_RANGE[1] or base.sum() < MIN_BASE_SHARE * ring.sum():
        return None
    base_hu = float(win[base].mean())
    if float(win[base].std()) > BASE_MAX_SD_HU:
        return None
    centre = _ring(cj, ci, None, np.full(2, 1.5) / spacing_ji + 0.5, gj, gi)
    contrast = float(win[centre].mean()) - base_hu
    if contrast < MIN_CONTRAST_HU:
        return None
    # radius where the rod stands above half its contrast (its edge, whatever the top-hat level)
    inner = _ring(cj, ci, None, (r_area + RING_MM[0]) / spacing_ji, gj, gi)
    half = inner & (win - base_hu >= contrast / 2)
    radius = float(np.sqrt(half.sum() * np.prod(spacing_ji) / np.pi))
    if not ROD_RADIUS_MM[0] <= radius <= ROD_RADIUS_MM[1]:
        return None
    return PadRod((cj, ci), radius, base_hu, contrast)


def _pad_row(rods: list[PadRod], spacing_ji: np.ndarray) -> list[PadRod]:
    """The largest set of rods side by side (same height, same base, similar size); ties: the lowest."""
    best: list[PadRod] = []
    for seed in rods:
        row = [r for r in rods if abs(r.centre_ji[0] - seed.centre_ji[0]) * spacing_ji[0] <= ROW_TOLERANCE_MM
               and abs(r.base_hu - seed.base_hu) <= BASE_MATCH_HU
               and 1 / 1.5 <= r.radius_mm / seed.radius_mm <= 1.5]
        if len(row) > len(best) or (len(row) == len(best) and row and
                                    np.mean([r.centre_ji[0] for r in row]) > np.mean([r.centre_ji[0] for r in best])):
            best = row
    return sorted(best, key=lambda r: r.centre_ji[1])


def find_pad(ct: Volume, image: np.ndarray | None = None) -> PadDetection | None:
    """The pad's rods in ``ct`` (None: no row of at least :data:`MIN_RODS` rods)."""
    img = z_mean_image(ct) if image is None else image
    spacing_ji = np.asarray(ct.spacing_mm[1:], float)
    line_px = max(3, int(round(LINE_MM / spacing_ji[1])) | 1)
    tophat = img - ndimage.grey_opening(img, size=(1, line_px))
    comps, n = ndimage.label(tophat > CANDIDATE_HU)
    rods = []
    for n_comp, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        size = (sl[0].stop - sl[0].start) * spacing_ji[0], (sl[1].stop - sl[1].start) * spacing_ji[1]
        if max(size) > 2.8 * ROD_RADIUS_MM[1] + 6 or min(size) < ROD_RADIUS_MM[0]:
            continue
        comp = np.zeros(img.shape, bool)
        comp[sl] = comps[sl] == n_comp
        rod = _candidate(img, comp, spacing_ji)
        if rod is not None:
            rods.append(rod)
    row = _pad_row(rods, spacing_ji)
    if len(row) < MIN_RODS:
        return None
    jj, ii = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    base = np.zeros(img.shape, bool)
    for r in row:
        ring = _ring(*r.centre_ji, (r.radius_mm + RING_MM[0]) / spacing_ji,
                           (r.radius_mm + RING_MM[1]) / spacing_ji, jj, ii)
        base |= ring & (np.abs(img - r.base_hu) <= BASE_TOLERANCE_HU)
    return PadDetection(row, base, n)


def _robust_mean(ct: Volume, mask2d: np.ndarray) -> dict[str, Any]:
    """Mean HU of ``mask2d`` over the slices whose own mean agrees (a pad shorter than the scan, metal
    streaks): per-slice means beyond :data:`SLICE_OUTLIER_SD` robust SDs of their median are dropped."""
    jj, ii = np.nonzero(mask2d)
    vals = ct.array[:, jj, ii].astype(np.float64)  # (k, n)
    per_slice = vals.mean(axis=1)
    med = float(np.median(per_slice))
    sd = 1.4826 * float(np.median(np.abs(per_slice - med)))
    keep = np.abs(per_slice - med) <= SLICE_OUTLIER_SD * max(sd, 0.5)
    used = vals[keep]
    return {"hu": float(used.mean()), "sd_hu": float(used.std()), "voxels": int(used.size),
            "slices": int(keep.sum())}


def measure_pad(ct: Volume, detection: PadDetection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per rod (left to right) its core's HU and the base's HU."""
    spacing_ji = np.asarray(ct.spacing_mm[1:], float)
    jj, ii = np.mgrid[0:ct.shape[1], 0:ct.shape[2]]
    rods = []
    for r in detection.rods:
        core_mm = max(r.radius_mm - CORE_MARGIN_MM, 1.0 * spacing_ji.max())
        core = _ring(*r.centre_ji, None, core_mm / spacing_ji, jj, ii)
        rods.append({**_robust_mean(ct, core), "centre_ji": [round(v, 2) for v in r.centre_ji],
                     "centre_lps_mm": [round(ct.origin_lps_mm[0] + r.centre_ji[1] * ct.spacing_mm[2], 2),
                                       round(ct.origin_lps_mm[1] + r.centre_ji[0] * ct.spacing_mm[1], 2)],
                     "radius_mm": round(r.radius_mm, 2), "core_radius_mm": round(core_mm, 2)})
    return rods, _robust_mean(ct, detection.base_mask)


def fit_line(hu: np.ndarray, mg_cm3: np.ndarray) -> dict[str, float]:
    """Least squares ``mg = a + b * HU`` with the slope's standard error, R^2 and RMS residual."""
    design = np.column_stack([np.ones_like(hu), hu])
    coef, *_ = np.linalg.lstsq(design, mg_cm3, rcond=None)
    res = mg_cm3 - design @ coef
    dof = max(len(hu) - 2, 1)
    cov = np.linalg.inv(design.T @ design) * float(res @ res) / dof
    ss_tot = float(((mg_cm3 - mg_cm3.mean()) ** 2).sum())
    return {"intercept": float(coef[0]), "slope": float(coef[1]), "slope_se": float(np.sqrt(cov[1, 1])),
            "r2": 1.0 - float(res @ res) / ss_tot if ss_tot > 0 else 0.0,
            "rms_residual_mg_cm3": float(np.sqrt(np.mean(res ** 2)))}


@lru_cache(maxsize=32)
def _base_table(kvp: float, marrow_fat_fraction: float) -> tuple[np.ndarray, ...]:
    """Per water path (beam hardening): HU per mg/cm3 of HA in water, marrow base minus water HU, the
    marrow base's HU per mg/cm3 over water's (volume mixing, :mod:`materials`) and the path (cm); sorted
    by the first."""
    s_w, d_hu, ratio = [], [], []
    for w in WATER_PATHS_CM:
        beam = mat.Beam(float(kvp), patient_water_cm=w)
        v = 200.0 / mat.HA_DENSITY_MG_CM3
        hw0 = mat.hu("water", beam)
        sw = (mat.hu(mat.mix({"hydroxyapatite": v, "water": 1 - v}), beam) - hw0) / 200.0
        hm0 = mat.hu(mat.trabecular_bone(0.0, marrow_fat_fraction), beam)
        sm = (mat.hu(mat.trabecular_bone(200.0, marrow_fat_fraction), beam) - hm0) / 200.0
        s_w.append(sw)
        d_hu.append(hm0 - hw0)
        ratio.append(sm / sw)
    order = np.argsort(s_w)
    return tuple(np.asarray(v)[order] for v in (s_w, d_hu, ratio, WATER_PATHS_CM))


def marrow_base_line(water_hu0: float, hu_per_mg: float, kvp: float, marrow_fat_fraction: float) -> dict[str, Any]:
    """The HA-in-marrow line (mg/cm3 per HU, intercept) from the pad's HA-in-water line ``HU = water_hu0 +
    hu_per_mg * mg``: the beam whose water path reproduces ``hu_per_mg`` at ``kvp`` gives the base's offset
    from water and its slope ratio."""
    s_w, d_hu, ratio, water = _base_table(round(float(kvp), 1), round(float(marrow_fat_fraction), 4))
    offset = float(np.interp(hu_per_mg, s_w, d_hu))
    r = float(np.interp(hu_per_mg, s_w, ratio))
    hu0, s_m = water_hu0 + offset, hu_per_mg * r
    return {"slope": 1.0 / s_m, "intercept": -hu0 / s_m, "marrow_minus_water_hu": offset, "slope_ratio": r,
            "matched_water_path_cm": float(np.interp(hu_per_mg, s_w, water)),
            "beam_outside_table": not s_w[0] <= hu_per_mg <= s_w[-1]}


def pad_densities(settings: CalibrationSettings) -> tuple[float, ...]:
    """The rods' nominal densities (ascending): the settings' or the default."""
    given = settings.pad_densities
    if given is None:
        return DEFAULT_ROD_MG_CM3
    try:
        values = tuple(sorted(float(v) for v in given))
    except (TypeError, ValueError) as exc:
        raise InputError(f"pad densities {given!r}: numbers in mg/cm3 HA") from exc
    if len(values) < 2 or len(set(values)) != len(values) or values[0] <= BASE_MG_CM3:
        raise InputError(f"pad densities {list(given)}: at least two distinct rod densities above the base's "
                         f"{BASE_MG_CM3:g} mg/cm3")
    return values


def inscan_calibration(ct: Volume, options: AnalysisOptions, detection: PadDetection | None = None) -> Calibration:
    """The ``inscan`` line from the pad in ``ct``; :class:`InputError` when there is none or it is implausible."""
    settings = options.calibration_settings
    nominal = pad_densities(settings)
    detection = detection or find_pad(ct)
    if detection is None:
        raise InputError("calibration 'inscan': no calibration pad found in the CT (a row of at least "
                         f"{MIN_RODS} round rods in a water-equivalent base running through the scan); "
                         "choose another method (--calibration auto, muscle-fat, phantom)")
    rods, base = measure_pad(ct, detection)
    if len(rods) != len(nominal):
        raise InputError(f"calibration 'inscan': {len(rods)} pad rods found, {len(nominal)} densities given "
                         f"({', '.join(f'{d:g}' for d in nominal)} mg/cm3): give the pad's densities "
                         "(--pad-densities)")
    by_hu = sorted(range(len(rods)), key=lambda n: rods[n]["hu"])
    for rank, n in enumerate(by_hu):
        rods[n]["nominal_mg_cm3"] = nominal[rank]
    hu = np.array([base["hu"]] + [rods[n]["hu"] for n in by_hu])
    mg = np.array([BASE_MG_CM3] + list(nominal))
    fit = fit_line(hu, mg)
    hu_per_mg = 1.0 / fit["slope"] if fit["slope"] > 0 else float("nan")
    steps = np.diff(hu) / np.diff(mg)
    problems = []
    if not SLOPE_RANGE_HU_PER_MG[0] <= hu_per_mg <= SLOPE_RANGE_HU_PER_MG[1]:
        problems.append(f"{hu_per_mg:.2f} HU per mg/cm3, outside {SLOPE_RANGE_HU_PER_MG[0]}-"
                        f"{SLOPE_RANGE_HU_PER_MG[1]} for HA")
    if np.any(steps <= 0.5 * hu_per_mg) or np.any(steps >= 2.0 * hu_per_mg):
        problems.append("the rods' HU steps do not follow their densities (wrong --pad-densities?)")
    if fit["r2"] < MIN_R2 or fit["rms_residual_mg_cm3"] > MAX_RESIDUAL_MG_CM3:
        problems.append(f"line fit R^2 {fit['r2']:.4f}, residual {fit['rms_residual_mg_cm3']:.1f} mg/cm3")
    if problems:
        raise InputError("calibration 'inscan': implausible pad calibration: " + "; ".join(problems))
    kvp = known_kvp(ct, settings)
    kvp_assumed = kvp is None
    kvp = REFERENCE_KVP if kvp is None else round(kvp, 1)
    marrow_fat = base_marrow_fat_fraction(settings, options.patient_age)
    water_hu0 = -fit["intercept"] / fit["slope"]
    line = marrow_base_line(water_hu0, hu_per_mg, kvp, marrow_fat)
    rel_sd = fit["slope_se"] / fit["slope"]
    details: dict[str, Any] = {
        "source": "in-scan calibration pad detected in the CT (z-mean image: round rods in a water-equivalent base)",
        "rods": rods,
        "base": {**base, "nominal_mg_cm3": BASE_MG_CM3},
        "nominal_densities_mg_cm3": list(nominal),
        "densities_source": "user" if settings.pad_densities is not None else "default (the digital pad)",
        "water_line": {"slope": fit["slope"], "intercept": fit["intercept"], "hu_per_mg_cm3": hu_per_mg,
                       "water_hu": water_hu0},
        "fit_r2": fit["r2"], "fit_rms_residual_mg_cm3": fit["rms_residual_mg_cm3"],
        "slope_relative_sd": rel_sd,
        "uncertainty": (f"1 SD of the pad line's slope from the fit: +-{rel_sd:.2%}; the rods lie outside the "
                        "body, so the body's cupping and scatter offsets come on top"),
        "kvp": kvp, "kvp_source": "assumed" if kvp_assumed else "header",
        "base_marrow_fat_fraction": marrow_fat,
        "marrow_base": {k: line[k] for k in ("marrow_minus_water_hu", "slope_ratio", "matched_water_path_cm",
                                             "beam_outside_table")},
        "candidates": detection.candidates,
        "marrow_fat": marrow_fat_term(kvp, marrow_fat, settings, options.patient_age, line["slope"]),
    }
    return Calibration("inscan", line["slope"], line["intercept"], details)


@register_calibration(
    "inscan", title="inscan (calibration pad scanned with the patient)", help="the pad's rods; --pad-densities",
    validation="validated against the pad's rods of known density (QCT practice); no ± on the spine value",
    check=lambda options: pad_densities(options.calibration_settings), line_from=LINE_FROM_PAD)
def inscan_method(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                  options: AnalysisOptions) -> Calibration:
    return inscan_calibration(ct, options)
