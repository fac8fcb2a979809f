"""Moving between the CT grid and the model's isotropic grid, in the CT's own (k, j, i) frame.

Both grids cover the same extent (outer voxel edges aligned, ``align_corners=False`` semantics), so
the model spacing is adjusted slightly per axis to fit the CT's extent exactly. Downsampling
averages (box filter, no aliasing); upsampling of class probabilities is done in slabs of slices so
memory stays bounded for large scans.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .synth import normalise_hu

HU_CLIP = (-1024.0, 3071.0)  # padding below -1024 (e.g. -3024 outside the scan circle) is air


def model_shape(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], model_spacing_mm: float
                ) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * s / model_spacing_mm))) for n, s in zip(shape, spacing_mm, strict=True))  # type: ignore[return-value]


def to_model_grid(array_hu: np.ndarray, target_shape: tuple[int, int, int], slab: int = 32) -> torch.Tensor:
    """Normalised network input (1, 1, D, H, W) on the model grid from a CT array in HU."""
    n = array_hu.shape
    mid = tuple(min(a, b) for a, b in zip(n, target_shape, strict=True))
    # in-plane average pooling slab by slab (bounded memory), then along z
    parts = []
    for k0 in range(0, n[0], slab):
        chunk = torch.from_numpy(np.clip(array_hu[k0:k0 + slab], *HU_CLIP).astype(np.float32, copy=False))
        parts.append(F.adaptive_avg_pool2d(chunk[:, None], mid[1:])[:, 0])
    x = torch.cat(parts)[None, None]  # (1, 1, n0, mid1, mid2)
    x = F.adaptive_avg_pool3d(x, mid)
    if mid != tuple(target_shape):
        x = F.interpolate(x, size=target_shape, mode="trilinear", align_corners=False)
    return normalise_hu(x)


def model_input_to_hu(x: np.ndarray) -> np.ndarray:
    """HU from the network input (inverse of :func:`synth.normalise_hu` inside its clip range)."""
    return x * 1000.0 - 1000.0


def _axis_map(n_fine: int, n_model: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each fine index: lower model index, upper model index, weight of upper (linear)."""
    pos = (np.arange(n_fine) + 0.5) * n_model / n_fine - 0.5
    pos = np.clip(pos, 0, n_model - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_model - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def nearest_model_index(n_fine: int, n_model: int) -> np.ndarray:
    return np.minimum(((np.arange(n_fine) + 0.5) * n_model / n_fine).astype(np.int64), n_model - 1)


def upsample_argmax_slabs(probs: torch.Tensor, fine_shape: tuple[int, int, int], slab: int = 16,
                          min_prob: float = 0.05) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (z slice, class index (slab, H, W) uint8) on the fine grid: probabilities linear in z, then
    bilinear in-plane, argmax. Only classes that reach ``min_prob`` in the slab are interpolated."""
    c, dm, hm, wm = probs.shape
    lo, hi, w = _axis_map(fine_shape[0], dm)
    for k0 in range(0, fine_shape[0], slab):
        k1 = min(k0 + slab, fine_shape[0])
        wz = torch.from_numpy(w[k0:k1])[None, :, None, None]
        z = probs[:, lo[k0:k1]] * (1 - wz) + probs[:, hi[k0:k1]] * wz  # (C, s, hm, wm)
        present = [int(i) for i in torch.nonzero(z.amax(dim=(1, 2, 3)) >= min_prob).flatten()]
        if len(present) == 1:
            yield slice(k0, k1), np.full((k1 - k0,) + tuple(fine_shape[1:]), present[0], np.uint8)
            continue
        up = F.interpolate(z[present].permute(1, 0, 2, 3).contiguous(), size=fine_shape[1:], mode="bilinear",
                           align_corners=False)  # (s, P, H, W)
        best = up[:, 0].clone()
        arg = torch.zeros(best.shape, dtype=torch.uint8)
        for n in range(1, len(present)):  # running max over channels: contiguous passes, no strided reduce
            better = up[:, n] > best
            best = torch.where(better, up[:, n], best)
            arg[better] = n
        yield slice(k0, k1), np.asarray(present, np.uint8)[arg.numpy()]


def model_to_fine_index(kji_model: np.ndarray, model_shape_: tuple[int, int, int],
                        fine_shape: tuple[int, int, int]) -> np.ndarray:
    """Continuous fine-grid index of a continuous model-grid index."""
    ratio = np.asarray(fine_shape, float) / np.asarray(model_shape_, float)
    return (np.asarray(kji_model, float) + 0.5) * ratio - 0.5
