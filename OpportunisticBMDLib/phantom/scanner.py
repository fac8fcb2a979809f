"""What the scanner adds to the ideal HU map: beam-hardening/scatter offsets (cupping and a smooth
random field), metal streaks, the point spread function (in-plane Gaussian and slice profile),
noise (white or in-plane correlated) and int16 quantisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass
class ScannerSettings:
    kvp: float = 120.0
    noise_hu: float = 12.0
    noise_correlation_mm: float = 0.6  # in-plane Gaussian sigma of the noise texture (0: white)
    blur_fwhm_mm: float = 1.0  # in-plane PSF FWHM
    slice_thickness_mm: float = 2.0  # slice profile FWHM
    cupping_hu: float = 0.0  # centre of the body darker by this much (beam hardening)
    offset_field_hu: float = 0.0  # amplitude of the smooth random offset field (scatter)
    streak_hu: float = 0.0  # metal streak amplitude
    max_hu: float = 3071.0  # 12-bit CT range; pass a larger value for extended-HU reconstructions

    def as_dict(self, spacing_kji_mm) -> dict:
        return {
            "kvp": self.kvp, "noise_hu": self.noise_hu, "noise_correlation_mm": self.noise_correlation_mm,
            "blur_mm": self.blur_fwhm_mm, "blur_fwhm_mm": self.blur_fwhm_mm,
            "slice_thickness_mm": self.slice_thickness_mm, "cupping_hu": self.cupping_hu,
            "offset_field_hu": self.offset_field_hu, "streak_hu": self.streak_hu, "max_hu": self.max_hu,
            "spacing_mm": [float(spacing_kji_mm[2]), float(spacing_kji_mm[1]), float(spacing_kji_mm[0])],
            "spacing_order": "x, y, z",
        }


def offset_field(grid, body_frac: np.ndarray, body_center_xy, body_half_axes, settings: ScannerSettings,
                 rng: np.random.Generator) -> np.ndarray | None:
    """Low-frequency HU offset inside the body: cupping (quadratic, darker centre) + smooth random field."""
    if settings.cupping_hu == 0 and settings.offset_field_hu == 0:
        return None
    z = grid.axis_mm(0).reshape(-1, 1, 1)
    y = grid.axis_mm(1).reshape(1, -1, 1)
    x = grid.axis_mm(2).reshape(1, 1, -1)
    cx, cy = body_center_xy
    a, b = body_half_axes
    rho2 = np.clip(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2, 0, 1)
    field = -settings.cupping_hu * (1.0 - rho2)
    if settings.offset_field_hu:
        k = rng.uniform(0.5, 1.5, 3) * 2 * np.pi / np.array([300.0, 250.0, 350.0])
        ph = rng.uniform(0, 2 * np.pi, 3)
        w = rng.normal(0, 1, 3)
        rnd = (w[0] * np.cos(k[0] * x + ph[0]) + w[1] * np.cos(k[1] * y + ph[1]) + w[2] * np.cos(k[2] * z + ph[2]))
        field = field + settings.offset_field_hu / np.sqrt(1.5) * rnd
    return (field * body_frac).astype(np.float32)


def metal_streaks(labels: np.ndarray, metal_label: int, spacing_kji_mm, settings: ScannerSettings,
                  rng: np.random.Generator) -> np.ndarray | None:
    """Radial bright/dark streaks from metal in each axial slice (a cartoon of photon starvation)."""
    if settings.streak_hu <= 0:
        return None
    ks = np.nonzero((labels == metal_label).any(axis=(1, 2)))[0]
    if ks.size == 0:
        return None
    _, sy, sx = spacing_kji_mm
    nj, ni = labels.shape[1:]
    yy = (np.arange(nj) * sy).reshape(-1, 1)
    xx = (np.arange(ni) * sx).reshape(1, -1)
    angles = rng.uniform(0, np.pi, 6)
    signs = rng.choice([-1.0, 1.0], 6)
    out = np.zeros(labels.shape, np.float32)
    for k in ks:
        jj, ii = np.nonzero(labels[k] == metal_label)
        cy, cx = jj.mean() * sy, ii.mean() * sx
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) + 1.0
        th = np.arctan2(yy - cy, xx - cx)
        pattern = np.zeros_like(r)
        for a, s in zip(angles, signs, strict=True):
            pattern += s * np.exp(-((np.sin(th - a) * r) / 2.5) ** 2)  # a thin line through the metal
        size = np.sqrt(jj.size * sx * sy / np.pi)
        out[k] = settings.streak_hu * pattern * np.exp(-np.maximum(r - size, 0) / 60.0)
    return out


def apply_psf(hu: np.ndarray, spacing_kji_mm, settings: ScannerSettings) -> np.ndarray:
    sz, sy, sx = spacing_kji_mm
    sig_xy = settings.blur_fwhm_mm / FWHM_PER_SIGMA
    # the slice profile beyond the sampling itself (thickness equal to spacing adds no extra blur)
    extra = max(settings.slice_thickness_mm**2 - sz**2, 0.0) ** 0.5
    sig_z = extra / FWHM_PER_SIGMA
    sigma = [sig_z / sz, sig_xy / sy, sig_xy / sx]
    sigma = [s if s >= 0.2 else 0.0 for s in sigma]
    if not any(sigma):
        return hu
    return ndimage.gaussian_filter(hu, sigma, mode="nearest", truncate=3.0)


def add_noise(hu: np.ndarray, spacing_kji_mm, settings: ScannerSettings, rng: np.random.Generator) -> None:
    if settings.noise_hu <= 0:
        return
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    sig = settings.noise_correlation_mm
    if sig > 0:
        _, sy, sx = spacing_kji_mm
        s = [0.0, sig / sy, sig / sx]
        if s[1] >= 0.2 or s[2] >= 0.2:
            ndimage.gaussian_filter(noise, s, output=noise, mode="wrap", truncate=3.0)
            noise *= np.float32(1.0 / max(float(noise[:: max(1, hu.shape[0] // 8)].std()), 1e-6))
    noise *= np.float32(settings.noise_hu)
    hu += noise


def quantise(hu: np.ndarray, settings: ScannerSettings) -> np.ndarray:
    out = np.empty(hu.shape, np.int16)
    np.clip(np.rint(hu), -1024, settings.max_hu, out=hu)
    out[...] = hu
    return out
