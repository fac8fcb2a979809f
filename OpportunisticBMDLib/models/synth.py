"""SynthSeg-style synthetic CT patches from anatomy templates, with spatial and imaging augmentation.

Every tissue id of a template gets its own random HU drawn around the plausible range of its tissue
type (Gaussian mixture), then bone cortex, partial-volume blur (slice thickness 0.5-5 mm), bias
field (beam hardening/scatter), noise, contrast, metal and truncated fields of view are simulated.
Everything runs in torch on one small patch so it stays cheap on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .classes import NET_INDEX
from .templates import Template

# Tissue type -> (low, high) of the mean HU drawn per tissue id, and (low, high) of its texture SD.
# Ranges span native scans of adults (fat -120..-80, muscle 20..65 incl. fat infiltration,
# trabecular bone 50..300 by age; e.g. Lamba et al. 2019 CT HU reference values).
TISSUE_HU: dict[str, tuple[float, float, float, float]] = {
    "air": (-1010, -980, 0, 5),
    "lung": (-900, -750, 10, 40),
    "gas": (-1000, -500, 10, 60),
    "fat": (-130, -70, 5, 20),
    "muscle": (15, 65, 5, 15),
    "soft": (10, 60, 5, 20),
    "organ": (40, 70, 5, 12),
    "kidney": (25, 45, 5, 12),
    "blood": (30, 55, 3, 10),
    "bowel": (-20, 50, 10, 40),
    "fluid": (-5, 20, 3, 10),
    "disc": (40, 100, 5, 15),
    "cartilage": (80, 200, 10, 30),
    "bone": (70, 280, 10, 40),
    "rib": (150, 500, 20, 60),
    "metal": (2000, 3500, 50, 200),
    "table": (-200, 300, 10, 50),
}
CONTRAST_BOOST_HU: dict[str, tuple[float, float]] = {"blood": (80, 300), "organ": (30, 70), "kidney": (80, 200)}
# cortical shell over trabecular bone after partial volume at 3 mm: a 0.5-1 mm shell of ~1000 HU adds
# roughly 50-250 HU to the outer voxel; real vertebral bodies at 3 mm show little rim
CORTEX_EXTRA_HU = (30.0, 250.0)
BONE_OVER_DISC_HU = 25.0  # trabecular bone stays brighter than disc (median body ~120 HU vs disc ~80 HU)
BONE_TYPES = ("bone", "rib")
AIR_NORM = 0.0


def normalise_hu(hu: torch.Tensor | np.ndarray):
    """Network input from HU: air 0, water 1, dense bone ~2, clipped to [0, 3]."""
    if isinstance(hu, np.ndarray):
        return np.clip((hu + 1000.0) / 1000.0, 0.0, 3.0).astype(np.float32)
    return torch.clamp((hu + 1000.0) / 1000.0, 0.0, 3.0)


def _gauss_kernel1d(sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-(x**2) / (2 * max(sigma, 1e-3) ** 2))
    return k / k.sum()


def blur3d(x: torch.Tensor, sigmas: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, D, H, W) tensor; sigma per axis in voxels."""
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        k = _gauss_kernel1d(sigma, x.device)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = len(k) // 2
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    return x


def _smooth_field(shape: tuple[int, int, int], rng: np.random.Generator, coarse: int = 4,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    field = torch.from_numpy(rng.standard_normal((1, 1, coarse, coarse, coarse)).astype(np.float32)).to(device)
    return F.interpolate(field, size=shape, mode="trilinear", align_corners=True)[0, 0]


def _random_grid(size: int, crop_shape: tuple[int, int, int], rng: np.random.Generator,
                 strength: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sampling grid (normalised coords of the crop) for a patch of ``size``^3: rotation, scale, elastic."""
    angles = rng.uniform(-1, 1, 3) * np.radians([15.0, 8.0, 8.0]) * strength
    scale = np.exp(rng.uniform(-1, 1, 3) * 0.15 * strength)
    ca, cb, cc = np.cos(angles)
    sa, sb, sc = np.sin(angles)
    rz = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])  # rotation in the axial plane (axes j, i)
    ry = np.array([[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]])
    rx = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    mat = rz @ ry @ rx @ np.diag(1 / scale)
    # patch voxel offsets from the centre (in voxels, order k, j, i)
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    kk, jj, ii = torch.meshgrid(r, r, r, indexing="ij")
    pts = torch.stack([kk, jj, ii], -1) @ torch.from_numpy(mat.T.astype(np.float32)).to(device)
    if strength > 0:
        disp = torch.stack([_smooth_field((size,) * 3, rng, 5, device) for _ in range(3)], -1)
        pts = pts + disp * float(rng.uniform(0, 2.0)) * strength
    centre = torch.tensor([(n - 1) / 2 for n in crop_shape], dtype=torch.float32, device=device)
    norm = (pts + centre) / centre - 1
    return norm.flip(-1).unsqueeze(0)  # grid_sample wants (x=i, y=j, z=k)


def pick_centre(tpl: Template, rng: np.random.Generator) -> np.ndarray:
    """Patch centre: mostly on a random foreground class (class-balanced), sometimes anywhere."""
    if rng.random() < 0.75:
        present = [c for c in range(2, int(tpl.target.max()) + 1) if c != NET_INDEX["subcutaneous_fat"]]
        cls_counts = np.bincount(tpl.target.ravel(), minlength=int(tpl.target.max()) + 1)
        present = [c for c in present if cls_counts[c] > 0]
        if present:
            c = present[rng.integers(len(present))]
            idx = np.flatnonzero(tpl.target.ravel() == c)
            return np.asarray(np.unravel_index(idx[rng.integers(len(idx))], tpl.target.shape))
    return np.asarray([rng.integers(n) for n in tpl.target.shape])


def _crop(arr: np.ndarray, centre: np.ndarray, half: int, fill: float) -> np.ndarray:
    out = np.full((2 * half,) * 3, fill, dtype=arr.dtype)
    src, dst = [], []
    for c, n in zip(centre, arr.shape, strict=True):
        lo, hi = int(c) - half, int(c) + half
        s0, s1 = max(lo, 0), min(hi, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s0 - lo + max(0, s1 - s0)))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def synth_sample(tpl: Template, size: int, rng: np.random.Generator, strength: float = 1.0,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training patch: (input (1,D,H,W) normalised, target (D,H,W) long, heat (1,D,H,W)).

    ``device`` runs the synthesis there (a GPU makes it ~100x cheaper than the network step on CPU).
    """
    centre = pick_centre(tpl, rng)
    half = int(size * 0.8)

    def crop(arr: np.ndarray, fill: float) -> torch.Tensor:
        return torch.from_numpy(_crop(arr, centre, half, fill).astype(np.float32)).to(device)[None, None]

    tissue, target, heat = crop(tpl.tissue, 0), crop(tpl.target, 0), crop(tpl.heat, 0)
    grid = _random_grid(size, tissue.shape[2:], rng, strength, device)
    tissue = F.grid_sample(tissue, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0].long()
    target = F.grid_sample(target, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0].long()
    heat = F.grid_sample(heat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    if tpl.image_hu is not None and rng.random() < tpl.image_fraction:
        img = crop(tpl.image_hu, -1000.0)
        hu = F.grid_sample(img + 1000, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0] - 1000
        hu, sigmas = augment_image(hu, tissue, tpl.tissue_types, tpl.spacing_mm, rng)
    else:
        hu = _intensities(tissue, tpl.tissue_types, rng)
        thick_mm = float(np.exp(rng.uniform(np.log(0.5), np.log(5.0))))
        # Gaussian sigma (voxels at 3 mm) of slice profile + in-plane kernel, on top of the 3 mm sampling
        sigmas = (max(0.3, thick_mm / 2.355 / tpl.spacing_mm * 1.2), float(rng.uniform(0.3, 0.7)),
                  float(rng.uniform(0.3, 0.7)))
    hu = blur3d(hu[None, None], sigmas)[0, 0]
    hu = _imaging(hu, tissue, rng)
    hu, target, heat = _truncate(hu, target, heat, rng)
    return normalise_hu(hu)[None], target, heat


def augment_image(hu: torch.Tensor, tissue: torch.Tensor, types: dict[int, str], spacing_mm: float,
                  rng: np.random.Generator) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Intensity augmentation of a template's own image (a real or phantom CT in HU).

    Contrast-like enhancement of vessels/organs/kidneys (30 % of patches, same boosts as the synthetic
    path), gain and offset, and the blur sigmas (voxels at the model grid) of a slice thickness drawn
    0.5-5 mm; noise, bias field and field-of-view cuts follow in :func:`synth_sample`.
    """
    if rng.random() < 0.3:
        ids = torch.unique(tissue).tolist()
        boost = np.zeros(max(ids) + 1, np.float32)
        for t in ids:
            ttype = types.get(int(t), "soft")
            if ttype in CONTRAST_BOOST_HU:
                boost[t] = float(rng.uniform(*CONTRAST_BOOST_HU[ttype]))
        if boost.any():
            add = torch.from_numpy(boost).to(hu.device)[tissue]
            hu = hu + blur3d(add[None, None], (0.5, 0.5, 0.5))[0, 0]  # soft edge, as after partial volume
    hu = hu * float(rng.uniform(0.92, 1.08)) + float(rng.normal(0, 20))
    thick_mm = float(np.exp(rng.uniform(np.log(0.5), np.log(5.0))))
    # the image is already at the model grid (3 mm): only the extra blur of thick slices (sigma along k)
    sigmas = (max(0.0, thick_mm / 2.355 / spacing_mm * 1.2 - 0.3), float(rng.uniform(0, 0.4)),
              float(rng.uniform(0, 0.4)))
    return hu, sigmas


def _intensities(tissue: torch.Tensor, types: dict[int, str], rng: np.random.Generator) -> torch.Tensor:
    ids = torch.unique(tissue).tolist()
    lut_mean = np.zeros(max(ids) + 1, np.float32)
    lut_sd = np.zeros(max(ids) + 1, np.float32)
    contrast = rng.random() < 0.3
    bone = np.zeros(max(ids) + 1, dtype=bool)
    shared_bone = rng.uniform(*TISSUE_HU["bone"][:2])  # one patient: vertebrae of similar density
    disc_mean = rng.uniform(*TISSUE_HU["disc"][:2])
    for t in ids:
        ttype = types.get(int(t), "soft")
        lo, hi, sd_lo, sd_hi = TISSUE_HU.get(ttype, TISSUE_HU["soft"])
        mean = disc_mean + rng.normal(0, 5) if ttype == "disc" else rng.uniform(lo, hi)
        if ttype == "bone":
            mean = shared_bone + rng.normal(0, 25)
            mean = max(mean, disc_mean + BONE_OVER_DISC_HU)
        if contrast and ttype in CONTRAST_BOOST_HU:
            mean += rng.uniform(*CONTRAST_BOOST_HU[ttype])
        lut_mean[t] = float(mean)
        lut_sd[t] = float(rng.uniform(sd_lo, sd_hi))
        bone[t] = ttype in BONE_TYPES
    dev = tissue.device
    lut_mean_t, lut_sd_t = torch.from_numpy(lut_mean).to(dev), torch.from_numpy(lut_sd).to(dev)
    texture = blur3d(torch.randn((1, 1) + tuple(tissue.shape), device=dev), (0.7, 0.7, 0.7))[0, 0]
    hu = lut_mean_t[tissue] + lut_sd_t[tissue] * texture * 2
    bone_mask = torch.from_numpy(bone).to(dev)[tissue].float()[None, None]
    inner = -F.max_pool3d(-bone_mask, 3, 1, 1)
    rim = (bone_mask - inner)[0, 0] > 0
    hu = hu + rim.float() * float(rng.uniform(*CORTEX_EXTRA_HU))
    return hu


def _imaging(hu: torch.Tensor, tissue: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    shape = tuple(hu.shape)
    dev = hu.device
    body = tissue > 0
    hu = hu + body.float() * _smooth_field(shape, rng, 3, dev) * float(rng.uniform(0, 25))  # scatter/beam hardening
    hu = hu * float(rng.uniform(0.93, 1.07)) + float(rng.normal(0, 10))  # scanner calibration spread
    if rng.random() < 0.1:  # metal implant with streaks
        c = [int(rng.integers(8, n - 8)) for n in shape]
        r = [float(rng.uniform(2, 6)) for _ in range(3)]
        zz, yy, xx = torch.meshgrid(*[torch.arange(n, dtype=torch.float32, device=dev) for n in shape], indexing="ij")
        blob = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        hu = torch.where(blob, torch.tensor(float(rng.uniform(2000, 3500)), device=dev), hu)
        theta = torch.atan2(yy - c[1], xx - c[2])
        streak = torch.cos(theta * int(rng.integers(3, 9))) * float(rng.uniform(50, 400))
        near = (torch.abs(zz - c[0]) <= r[0]).float() * torch.exp(-torch.sqrt((yy - c[1]) ** 2 + (xx - c[2]) ** 2) / 15)
        hu = hu + streak * near * (~blob).float()
    noise_sd = float(np.exp(rng.uniform(np.log(3), np.log(40))))
    return hu + torch.randn(shape, device=dev) * noise_sd


def _truncate(hu: torch.Tensor, target: torch.Tensor, heat: torch.Tensor, rng: np.random.Generator):
    """Field-of-view edges: an axial cut (chest-only / pelvis-only scans) or an in-plane circle."""
    n = hu.shape[0]
    keep = torch.ones_like(hu, dtype=torch.bool)
    u = rng.random()
    if u < 0.2:
        cut = int(rng.integers(n // 4, 3 * n // 4))
        if rng.random() < 0.5:
            keep[:cut] = False
        else:
            keep[cut:] = False
    elif u < 0.3:  # a thin slab (e.g. 20 slices of 2 mm around one level): 8-20 voxels of 3 mm
        thick = int(rng.integers(8, 21))
        start = int(rng.integers(0, max(1, n - thick)))
        keep[:start] = False
        keep[start + thick:] = False
    if rng.random() < 0.1:
        _, yy, xx = torch.meshgrid(*[torch.arange(s, dtype=torch.float32, device=hu.device) for s in hu.shape],
                                   indexing="ij")
        cy, cx = rng.uniform(0, hu.shape[1]), rng.uniform(0, hu.shape[2])
        keep &= (yy - cy) ** 2 + (xx - cx) ** 2 <= float(rng.uniform(0.4, 1.0) * hu.shape[1]) ** 2
    if keep.all():
        return hu, target, heat
    hu = torch.where(keep, hu, torch.tensor(-1000.0, device=hu.device))
    target = torch.where(keep, target, torch.tensor(0, device=hu.device))
    heat = heat * keep.float()[None]
    return hu, target, heat
