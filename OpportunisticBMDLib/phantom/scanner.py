"""What the scanner adds to the ideal HU map: beam-hardening/scatter offsets (cupping and a smooth
random field), metal streaks, the point spread function (in-plane Gaussian and slice profile),
noise (white or in-plane correlated) and int16 quantisation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from .options import PhantomOptions

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
TRUNCATE = 2.5  # Gaussian kernels cut at 2.5 SD


@dataclass
class ScannerSettings:
    kvp: float = 120.0
    noise_hu: float = 12.0
    blur_fwhm_mm: float = 1.0  # in-plane PSF FWHM
    slice_thickness_mm: float = 2.0  # slice profile FWHM
    cupping_hu: float = 0.0  # centre of the body darker by this much (beam hardening)
    offset_field_hu: float = 0.0  # amplitude of the smooth random offset field (scatter)
    streak_hu: float = 0.0  # metal streak amplitude
    max_hu: float = 3071.0  # 12-bit CT range; pass a larger value for extended-HU reconstructions

    def as_dict(self, spacing_kji_mm) -> dict:
        return {
            "kvp": self.kvp, "noise_hu": self.noise_hu, "noise_texture": "white noise through the PSF",
            "blur_mm": self.blur_fwhm_mm, "blur_fwhm_mm": self.blur_fwhm_mm,
            "slice_thickness_mm": self.slice_thickness_mm, "cupping_hu": self.cupping_hu,
            "offset_field_hu": self.offset_field_hu, "streak_hu": self.streak_hu, "max_hu": self.max_hu,
            "spacing_mm": [float(spacing_kji_mm[2]), float(spacing_kji_mm[1]), float(spacing_kji_mm[0])],
            "spacing_order": "x, y, z",
        }


def _chunks(n: int, per_slice: int, max_voxels: int = 4_000_000):
    step = max(1, max_voxels // max(per_slice, 1))
    for a in range(0, n, step):
        yield slice(a, min(a + step, n))


def apply_offset_field(hu: np.ndarray, inside: np.ndarray, grid, body_center_xy, body_half_axes,
                       settings: ScannerSettings, rng: np.random.Generator) -> None:
    """Add a low-frequency HU offset inside the body (``inside``: bool mask): cupping (quadratic, darker
    centre) plus a smooth random field standing for scatter and residual beam hardening. In place."""
    if settings.cupping_hu == 0 and settings.offset_field_hu == 0:
        return
    y = grid.axis_mm(1).reshape(1, -1, 1)
    x = grid.axis_mm(2).reshape(1, 1, -1)
    z_all = grid.axis_mm(0)
    cx, cy = body_center_xy
    a, b = body_half_axes
    cup = -settings.cupping_hu * (1.0 - np.clip(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2, 0, 1))
    k = rng.uniform(0.5, 1.5, 3) * 2 * np.pi / np.array([300.0, 250.0, 350.0])
    ph = rng.uniform(0, 2 * np.pi, 3)
    w = rng.normal(0, 1, 3) * settings.offset_field_hu / np.sqrt(1.5)
    plane = (cup + w[0] * np.cos(k[0] * x + ph[0]) + w[1] * np.cos(k[1] * y + ph[1])).astype(np.float32)
    for sl in _chunks(hu.shape[0], hu.shape[1] * hu.shape[2]):
        zterm = (w[2] * np.cos(k[2] * z_all[sl] + ph[2])).astype(np.float32).reshape(-1, 1, 1)
        hu[sl] += (plane + zterm) * inside[sl]


def metal_streaks(hu: np.ndarray, labels: np.ndarray, metal_label: int, spacing_kji_mm, settings: ScannerSettings,
                  rng: np.random.Generator) -> None:
    """Radial bright/dark streaks from metal in each axial slice (a cartoon of photon starvation). In place."""
    if settings.streak_hu <= 0:
        return
    ks = np.nonzero((labels == metal_label).any(axis=(1, 2)))[0]
    if ks.size == 0:
        return
    _, sy, sx = spacing_kji_mm
    nj, ni = labels.shape[1:]
    yy = (np.arange(nj) * sy).reshape(-1, 1)
    xx = (np.arange(ni) * sx).reshape(1, -1)
    angles = rng.uniform(0, np.pi, 6)
    signs = rng.choice([-1.0, 1.0], 6)
    for k in ks:
        jj, ii = np.nonzero(labels[k] == metal_label)
        cy, cx = jj.mean() * sy, ii.mean() * sx
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) + 1.0
        th = np.arctan2(yy - cy, xx - cx)
        pattern = np.zeros_like(r)
        for a, s in zip(angles, signs, strict=True):
            pattern += s * np.exp(-((np.sin(th - a) * r) / 2.5) ** 2)  # a thin line through the metal
        size = np.sqrt(jj.size * sx * sy / np.pi)
        hu[k] += (settings.streak_hu * pattern * np.exp(-np.maximum(r - size, 0) / 60.0)).astype(np.float32)


def _psf_sigmas_vox(spacing_kji_mm, settings: ScannerSettings) -> list[float]:
    sz, sy, sx = spacing_kji_mm
    sig_xy = settings.blur_fwhm_mm / FWHM_PER_SIGMA
    extra = max(settings.slice_thickness_mm**2 - sz**2, 0.0) ** 0.5  # slice profile beyond the sampling
    sig = [extra / FWHM_PER_SIGMA / sz, sig_xy / sy, sig_xy / sx]
    return [s if s >= 0.2 else 0.0 for s in sig]


def _gaussian_noise_gain(sigma_vox: float) -> float:
    """SD of white unit noise after a sampled, normalised Gaussian kernel (same kernel as scipy's)."""
    if sigma_vox <= 0:
        return 1.0
    r = int(TRUNCATE * sigma_vox + 0.5)
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_vox) ** 2)
    w /= w.sum()
    return float(np.sqrt(np.sum(w**2)))


def add_noise_and_blur(hu: np.ndarray, spacing_kji_mm, settings: ScannerSettings, rng: np.random.Generator) -> None:
    """Noise then PSF, in place: white Gaussian noise added before the blur takes the PSF's texture, as CT
    noise takes the reconstruction kernel's; it is scaled so that its SD after the blur is ``noise_hu``.
    The PSF is a Gaussian in-plane (FWHM ``blur_fwhm_mm``) and the slice profile along z; each separable
    pass runs slab by slab along the other axes (exact, bounded memory)."""
    sig = _psf_sigmas_vox(spacing_kji_mm, settings)
    if settings.noise_hu > 0:
        gain = _gaussian_noise_gain(sig[0]) * _gaussian_noise_gain(sig[1]) * _gaussian_noise_gain(sig[2])
        scale = np.float32(settings.noise_hu / gain)
        for sl in _chunks(hu.shape[0], hu.shape[1] * hu.shape[2], 2_000_000):
            noise = rng.standard_normal((sl.stop - sl.start,) + hu.shape[1:], dtype=np.float32)
            noise *= scale
            hu[sl] += noise
    if sig[1] or sig[2]:
        for sl in _chunks(hu.shape[0], hu.shape[1] * hu.shape[2]):
            hu[sl] = ndimage.gaussian_filter(hu[sl], [0.0, sig[1], sig[2]], mode="nearest", truncate=TRUNCATE)
    if sig[0]:
        for sl in _chunks(hu.shape[1], hu.shape[0] * hu.shape[2]):
            hu[:, sl] = ndimage.gaussian_filter1d(hu[:, sl], sig[0], axis=0, mode="nearest", truncate=TRUNCATE)


def quantise(hu: np.ndarray, settings: ScannerSettings) -> np.ndarray:
    """Round to integer HU within the scanner's range, in place (float32 array of integer values)."""
    for sl in _chunks(hu.shape[0], hu.shape[1] * hu.shape[2]):
        np.rint(hu[sl], out=hu[sl])
        np.clip(hu[sl], -1024, settings.max_hu, out=hu[sl])
    return hu


def draw_scanner_settings(options: PhantomOptions, rng: np.random.Generator, spacing_mm) -> ScannerSettings:
    """Scanner settings: drawn from the seed's scanner stream, then overridden by the options."""
    draws = {
        "noise_hu": float(rng.uniform(8.0, 28.0)),
        "noise_correlation_mm": float(rng.uniform(0.3, 0.9)),  # drawn (stream stability), no longer used
        "blur_fwhm_mm": float(rng.uniform(0.7, 1.5)),
        "slice_factor": float(rng.uniform(1.0, 1.5)),
        "cupping_hu": float(rng.uniform(0.0, 12.0)),
        "offset_field_hu": float(rng.uniform(0.0, 8.0)),
        "streak_hu": float(rng.uniform(150.0, 400.0)),
    }
    s = ScannerSettings(kvp=float(options.kvp), noise_hu=draws["noise_hu"],
                        blur_fwhm_mm=draws["blur_fwhm_mm"],
                        slice_thickness_mm=float(spacing_mm[0]) * draws["slice_factor"],
                        cupping_hu=draws["cupping_hu"], offset_field_hu=draws["offset_field_hu"],
                        streak_hu=draws["streak_hu"] if options.metal else 0.0,
                        max_hu=30000.0 if options.extended_hu else 3071.0)
    if options.ideal:
        s.noise_hu = s.blur_fwhm_mm = s.cupping_hu = s.offset_field_hu = s.streak_hu = 0.0
        s.slice_thickness_mm = float(spacing_mm[0])
    given = {"noise_hu": options.noise_hu, "blur_fwhm_mm": options.blur_fwhm_mm,
             "slice_thickness_mm": options.slice_thickness_mm, "cupping_hu": options.cupping_hu,
             "offset_field_hu": options.offset_field_hu}
    return replace(s, **{name: float(value) for name, value in given.items() if value is not None})
