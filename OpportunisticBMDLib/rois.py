"""Reference-tissue ROIs for phantomless calibration: psoas muscle and anterior subcutaneous fat.

Both are taken at the z-levels of the measured vertebrae, as in the reference study (Radiologic
Practice 2024, doi:10.13609/j.cnki.1000-0313.2024.02.019: psoas chosen from the T12-L2 keypoints,
anterior abdominal subcutaneous fat selected by HU), and returned as bool masks on the CT grid so a
user can see and edit them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .labels import LABELS
from .spine import erode_mm
from .volume import Volume

# Adipose tissue HU window of the reference study and of CT body-composition work in general
# (-190 to -30 HU: Kvist et al., Am J Clin Nutr 48:1351 (1988)).
FAT_HU_MIN, FAT_HU_MAX = -190.0, -30.0
# Skeletal muscle HU window (-29 to +150 HU: Mitsiopoulos et al., J Appl Physiol 85:115 (1998)): drops
# intramuscular fat and partial-volume voxels from the psoas ROI.
MUSCLE_HU_MIN, MUSCLE_HU_MAX = -29.0, 150.0
# Psoas erosion against partial volume with the surrounding fat: ~one 2-3 mm voxel layer.
MUSCLE_EROSION_MM = 2.0
# Below this psoas volume (at the measured levels) the paraspinal muscles are used instead (design
# choice: ~ 1 cm3 gives a mean with < 1 HU noise at usual 10-20 HU voxel noise).
MIN_PSOAS_MM3 = 1000.0
# Body outline: anything denser than this is patient (air -1000, lung ~-800, fat -100).
BODY_THRESHOLD_HU = -500.0
# Anterior wall sampled on columns between these distances (mm) left/right of the spine's midline:
# covers the rectus abdominis region and skips the linea alba, where no muscle separates subcutaneous
# from preperitoneal fat (design choice; rectus abdominis spans ~1-8 cm from the midline).
FAT_COLUMNS_MIN_MM, FAT_COLUMNS_MAX_MM = 15.0, 60.0
SKIN_MM = 2.0  # skin (and its partial volume with air) skipped before the fat layer


@dataclass
class FatLayer:
    mask: np.ndarray
    thickness_mm: float  # median over the sampled columns of the anterior subcutaneous fat layer


def z_range_of(masks: list[np.ndarray]) -> tuple[int, int] | None:
    """(first, last) axial slice covered by any of ``masks`` (inclusive), or None."""
    ks = [np.nonzero(m.any(axis=(1, 2)))[0] for m in masks if m is not None and m.any()]
    if not ks:
        return None
    all_k = np.concatenate(ks)
    return int(all_k.min()), int(all_k.max())


def _slab(shape: tuple[int, ...], z_range: tuple[int, int]) -> np.ndarray:
    slab = np.zeros(shape, dtype=bool)
    slab[z_range[0]: z_range[1] + 1] = True
    return slab


def muscle_roi(
    ct: Volume, labels: Volume, z_range: tuple[int, int], erosion_mm: float = MUSCLE_EROSION_MM
) -> np.ndarray:
    """Psoas (TotalSegmentator iliopsoas) within ``z_range``, eroded and HU-windowed; the paraspinal
    muscles when the psoas is absent or tiny there (thoracolumbar-only scans).

    Restricting to the measured vertebrae's slices keeps the ROI at lumbar levels: caudally the
    iliopsoas label also holds the iliacus inside the pelvis."""
    slab = _slab(ct.shape, z_range)
    roi = _muscle(ct, labels, ("psoas_left", "psoas_right"), slab, erosion_mm)
    if roi.sum() * ct.voxel_volume_mm3 < MIN_PSOAS_MM3:
        # thoracolumbar-only scans (chest CT): the psoas starts at T12-L1 and may be absent or tiny;
        # the paraspinal (erector spinae) muscles at the same levels are the next reference muscle
        roi = _muscle(ct, labels, ("paraspinal_left", "paraspinal_right"), slab, erosion_mm)
    return roi


def _muscle(ct: Volume, labels: Volume, names: tuple[str, ...], slab: np.ndarray, erosion_mm: float) -> np.ndarray:
    muscle = np.isin(labels.array, [LABELS[n] for n in names]) & slab
    eroded = erode_mm(muscle, erosion_mm, ct.spacing_mm)
    if eroded.sum() < 0.2 * muscle.sum():  # thin muscle on a coarse grid: keep it whole
        eroded = muscle
    return eroded & (ct.array >= MUSCLE_HU_MIN) & (ct.array <= MUSCLE_HU_MAX)


def muscle_source(rois_muscle: np.ndarray, labels: Volume | None) -> str | None:
    """Which muscle a (possibly edited) muscle ROI mostly lies in: ``psoas``, ``paraspinal`` or ``other``."""
    if labels is None or not rois_muscle.any():
        return None
    values = labels.array[rois_muscle]
    psoas = np.isin(values, (LABELS["psoas_left"], LABELS["psoas_right"])).mean()
    para = np.isin(values, (LABELS["paraspinal_left"], LABELS["paraspinal_right"])).mean()
    return "psoas" if psoas >= 0.5 else ("paraspinal" if para >= 0.5 else "other")


def body_outline(ct: Volume, z_range: tuple[int, int] | None = None) -> np.ndarray:
    """Patient body: voxels > -500 HU, largest 3D component (drops the table), holes filled per slice;
    only within ``z_range`` (inclusive) when given (False elsewhere)."""
    k0, k1 = (0, ct.shape[0] - 1) if z_range is None else z_range
    body = np.zeros(ct.shape, dtype=bool)
    dense = ct.array[k0: k1 + 1] > BODY_THRESHOLD_HU
    comp, n = ndi.label(dense)
    if n == 0:
        return body
    slab = comp == (int(np.argmax(np.bincount(comp.ravel())[1:])) + 1)
    for k in range(slab.shape[0]):  # per slice: lungs and bowel gas are inside the body
        slab[k] = ndi.binary_fill_holes(slab[k])
    body[k0: k1 + 1] = slab
    return body


def anterior_fat_roi(
    ct: Volume,
    z_range: tuple[int, int],
    spine_mask: np.ndarray,
    labels: Volume | None = None,
    body: np.ndarray | None = None,
) -> FatLayer:
    """Subcutaneous fat of the anterior abdominal wall in ``z_range``, selected by HU (-190..-30).

    On each axial slice, columns (fixed left-right position) 15-60 mm either side of the spine's midline
    are followed from the skin backwards: after the skin, the run of fat voxels until the first two
    non-fat voxels (the abdominal muscles) is the subcutaneous layer. Only voxels anterior to the
    vertebrae are used. With a ``subcutaneous_fat`` label present the layer is also kept inside it."""
    body = body_outline(ct, z_range) if body is None else body
    dz, dy, dx = ct.spacing_mm
    zs = slice(z_range[0], z_range[1] + 1)
    fat = np.zeros(ct.shape, dtype=bool)
    fat[zs] = (ct.array[zs] >= FAT_HU_MIN) & (ct.array[zs] <= FAT_HU_MAX) & body[zs]
    if labels is not None:
        # a labelled organ (bowel, liver, ...) or visceral fat ends the layer
        fat[zs] &= np.isin(labels.array[zs], (0, LABELS["body"], LABELS["subcutaneous_fat"]))
        if (labels.array[zs] == LABELS["subcutaneous_fat"]).any():
            fat[zs] &= labels.array[zs] == LABELS["subcutaneous_fat"]
    mask = np.zeros(ct.shape, dtype=bool)
    per_i = spine_mask.sum(axis=(0, 1), dtype=np.int64)
    rows = np.nonzero(spine_mask.any(axis=(0, 2)))[0]
    i_mid = float((per_i * np.arange(per_i.size)).sum() / per_i.sum()) if per_i.sum() else ct.shape[2] / 2
    j_front = int(rows[0]) if rows.size else ct.shape[1]
    offsets = np.abs(np.arange(ct.shape[2]) - i_mid) * dx
    columns = np.nonzero((offsets >= FAT_COLUMNS_MIN_MM) & (offsets <= FAT_COLUMNS_MAX_MM))[0]
    skin = max(1, int(np.ceil(SKIN_MM / dy)))
    runs: list[tuple[int, int, int, int]] = []  # (k, i, first j, last j)
    for k in range(z_range[0], z_range[1] + 1):
        for i in columns:
            col_body = np.nonzero(body[k, :j_front, i])[0]
            if col_body.size == 0:
                continue
            start = int(col_body[0]) + skin
            j = start
            while j < j_front and not fat[k, j, i] and j <= start + 1:  # allow thick skin
                j += 1
            first = j
            while j < j_front and fat[k, j, i]:  # the layer ends at the first non-fat voxel (muscle)
                j += 1
            runs.append((k, int(i), first, j - 1))
    lengths = np.array([max(0, b - a + 1) for _, _, a, b in runs]) if runs else np.zeros(0)
    nonzero = lengths[lengths > 0]
    if nonzero.size == 0:
        return FatLayer(mask=mask, thickness_mm=0.0)
    # Columns where no muscle stops the run (thin or absent abdominal muscle, flank) run on into
    # preperitoneal/visceral fat: drop runs much longer than the typical layer.
    limit = 1.5 * float(np.median(nonzero)) + 2
    for (k, i, a, b), n in zip(runs, lengths, strict=True):
        if 0 < n <= limit:
            mask[k, a: b + 1, i] = True
    return FatLayer(mask=mask, thickness_mm=float(np.median(lengths)) * dy)
