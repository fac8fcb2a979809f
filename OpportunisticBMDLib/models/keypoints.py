"""Vertebral body centres: reference positions from label maps, heatmap targets, and peak read-out.

A vertebra label holds body and posterior elements; the body is its anterior part. The same
definition gives the training targets and the benchmark's reference keypoints, so they agree.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Fraction of a vertebra label's anterior-posterior extent taken as the body: the body is about
# 35 mm deep of a lumbar vertebra's ~85-90 mm total (Zhou et al. 2000, lumbar morphometry).
BODY_AP_FRACTION = 0.40
HEATMAP_SIGMA_MM = 6.0
MIN_FRACTION_OF_TYPICAL = 0.4


def body_centre_kji(mask: np.ndarray) -> np.ndarray | None:
    """Centroid (k, j, i voxel index) of the anterior (body) part of one vertebra mask."""
    idx = np.argwhere(mask)
    if len(idx) < 5:
        return None
    j = idx[:, 1]
    j_lo, j_hi = np.percentile(j, 1), np.percentile(j, 99)
    body = idx[j <= j_lo + BODY_AP_FRACTION * (j_hi - j_lo)]
    if len(body) == 0:
        body = idx
    return body.mean(axis=0)


def level_centres(labels: np.ndarray, level_ids: dict[str, int]) -> dict[str, np.ndarray]:
    """Body centre (k, j, i index) of every level present in ``labels`` (library schema ids)."""
    out: dict[str, np.ndarray] = {}
    counts = {level: int((labels == label_id).sum()) for level, label_id in level_ids.items()}
    typical = float(np.median([c for c in counts.values() if c > 0])) if any(counts.values()) else 0.0
    for level, label_id in level_ids.items():
        if counts[level] < MIN_FRACTION_OF_TYPICAL * typical:
            continue  # a vertebra cut by the field of view has no reliable body centre
        centre = body_centre_kji(labels == label_id)
        if centre is not None:
            out[level] = centre
    return out


def heatmap(shape: tuple[int, ...], centres_kji: list[np.ndarray], spacing_mm: tuple[float, float, float],
            sigma_mm: float = HEATMAP_SIGMA_MM) -> np.ndarray:
    """Max of isotropic Gaussians (peak 1) at the given centres."""
    out = np.zeros(shape, dtype=np.float32)
    grids = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing_mm, strict=True)]
    for c in centres_kji:
        cm = [float(ci) * s for ci, s in zip(c, spacing_mm, strict=True)]
        g = [np.exp(-((grids[a] - cm[a]) ** 2) / (2 * sigma_mm**2)).astype(np.float32) for a in range(3)]
        np.maximum(out, g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :], out=out)
    return out


def heatmap_peak(heat: np.ndarray, region: np.ndarray, min_value: float = 0.2) -> np.ndarray | None:
    """Subvoxel peak (k, j, i) of ``heat`` inside ``region`` (weighted centroid around the max)."""
    if not region.any():
        return None
    masked = np.where(region, heat, 0.0)
    peak = np.unravel_index(int(np.argmax(masked)), heat.shape)
    if masked[peak] < min_value:
        return None
    sl = tuple(slice(max(0, p - 2), p + 3) for p in peak)
    w = np.clip(masked[sl] - 0.5 * masked[peak], 0, None)
    return np.asarray(ndimage.center_of_mass(w)) + np.asarray([s.start for s in sl])
