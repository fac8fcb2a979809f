"""Anatomy checks on the network's class map: pelvic bones the network invented are removed, and said.

On real CT it has not seen, the network can call contrast-filled heart and aorta "femur" or "hip bone",
enhanced kidneys "hip bone", shoulder blades "sacrum". A label there is worse than none: it anchors the
level naming (sacrum -> L5, iliac crest -> L4) and feeds the hip analysis. Each femur, hip-bone and
sacrum component (model grid) is tested against anatomy that holds in every adult, before the levels
are named; a removed component becomes "body" and one ``anatomy_removed`` QC warning per structure says
what was removed (cm3) and why:

- the chest: no pelvic bone reaches to within :data:`PELVIS_BELOW_LUNG_BASE_MM` of the lung bases when
  the lungs are in view (a chest CT ends with no femur, hip bone or sacrum);
- the ribs: no femur or hip bone lies mostly in slices that hold ribs;
- a femur lies below the top of the hip bone (its head sits in the acetabulum), and with no hip bone in
  view it does not lie beside the vertebral column; a femur or hip-bone piece smaller than
  :data:`MIN_FEMUR_CM3` / :data:`MIN_HIP_CM3` and far from any component of that size is not one
  (a femur piece cut by the field of view is kept: the cap of a femoral head);
- a sacrum lies between the hip bones and below the lowest lumbar vertebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .classes import NET_INDEX
from .naming import MIN_HIP_MM3, MIN_RIB_MM3, MIN_VERTEBRA_MM3

PELVIC_CLASSES = ("femur", "hip", "sacrum")
# Air in the body (model grid, ~3 mm): lung parenchyma reads about -850 HU, and stays below -400 HU even
# averaged with vessels and partial volume at 3 mm (soft tissue is above -200 HU).
AIR_HU = -400.0
# An internal air component of at least this volume whose median reads above LUNG_MAX_GAS_HU is a lung
# (design choice: one lung holds 2-3 L at inspiration, and a scan showing 0.5 L of it shows the chest;
# bowel gas pockets are smaller, 238 cm3 the largest in the shared abdominal CT). Lung parenchyma reads
# about -850 HU, -900..-950 in severe emphysema; the gas of a distended (or insufflated, CT colonography)
# colon is air, about -1000 HU.
LUNG_MIN_CM3 = 500.0
LUNG_MAX_GAS_HU = -960.0
LUNG_BASE_MIN_CM2 = 1.0  # the lung base is the lowest slice with this much lung (not a stray voxel)
# The iliac crest (L4, L3 at the highest: Chakraverty et al. 2007, Clin Anat 20:759) lies about two
# vertebrae below the lowest lung recess (T12-L1, L2 in hyperinflation): >= ~50 mm (two bodies of ~25 mm
# and their discs). Design choice: 40 mm keeps a margin for collapsed vertebrae.
PELVIS_BELOW_LUNG_BASE_MM = 40.0
# A femur or hip-bone component with this fraction of its voxels in slices holding ribs is not a femur
# or hip bone (design choice: a 12th rib can touch the iliac crest in the elderly, but only at its top).
MAX_FRACTION_IN_RIB_SLICES = 0.5
# A femoral head alone is ~50 cm3 (45-50 mm across); 10 cm3 is a cap of ~15 mm at the edge of the field
# of view (design choice). A hip bone smaller than naming.MIN_HIP_MM3 is no iliac crest either. Smaller
# pieces are kept when near a component of that size (a femur split by metal or by the model's boundary).
MIN_FEMUR_CM3 = 10.0
MIN_HIP_CM3 = MIN_HIP_MM3 / 1000.0
PIECE_NEAR_MM = 20.0
# Vertebral column present in a slice: a lumbar body's axial section is ~15 cm2 and the whole vertebra
# label more; the coccyx is ~1-2 cm2 (design choice: 5 cm2).
VERTEBRA_SLICE_MIN_CM2 = 5.0
SACRUM_HIP_MARGIN_MM = 10.0  # the sacrum and the hip bones overlap in z at the sacroiliac joints
# Removed specks below this total (per structure) are the model's boundary noise (on the shared CT: 1.8 cm3
# of "hip bone" on S1/L5), reported as info; more is invented anatomy, a warning (design choice).
WARN_REMOVED_CM3 = 5.0


@dataclass(frozen=True)
class Removal:
    structure: str  # network class: femur | hip | sacrum
    reason: str
    volume_cm3: float


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=np.ones((3, 3, 3), bool))


def lung_base_k(hu: np.ndarray, spacing_mm: float) -> float | None:
    """Lowest slice (k, increasing upwards) of the lungs (:data:`LUNG_MIN_CM3`, :data:`LUNG_MAX_GAS_HU`);
    None when no lung is in view."""
    air = hu < AIR_HU
    body = np.zeros_like(air)
    for k in range(air.shape[0]):  # air enclosed by the body in its slice: lungs and bowel gas, not outside
        body[k] = ndimage.binary_fill_holes(~air[k])
    comp, n = ndimage.label(body & air)
    if n == 0:
        return None
    sizes = np.bincount(comp.ravel()) * spacing_mm**3 / 1000.0
    sizes[0] = 0
    big = [c for c in np.nonzero(sizes >= LUNG_MIN_CM3)[0] if np.median(hu[comp == c]) > LUNG_MAX_GAS_HU]
    lungs = np.isin(comp, big)
    area_cm2 = lungs.sum(axis=(1, 2)) * spacing_mm**2 / 100.0
    ks = np.nonzero(area_cm2 >= LUNG_BASE_MIN_CM2)[0]
    return float(ks.min()) if len(ks) else None


def _large_pieces(mask: np.ndarray, spacing_mm: float, min_mm3: float) -> np.ndarray:
    """``mask`` without its connected pieces smaller than ``min_mm3``."""
    comp, n = _components(mask)
    if n == 0:
        return np.zeros(mask.shape, bool)
    keep = np.bincount(comp.ravel()) * spacing_mm**3 >= min_mm3
    keep[0] = False
    return keep[comp]


def _rib_slices(cls: np.ndarray, spacing_mm: float) -> np.ndarray:
    return _large_pieces(cls == NET_INDEX["rib"], spacing_mm, MIN_RIB_MM3).any(axis=(1, 2))


def _spine_slices(cls: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Slices holding a vertebra of the free spine (vertebra class, fragments ignored)."""
    vertebrae = _large_pieces(cls == NET_INDEX["vertebra"], spacing_mm, MIN_VERTEBRA_MM3)
    return vertebrae.sum(axis=(1, 2)) * spacing_mm**2 / 100.0 >= VERTEBRA_SLICE_MIN_CM2


@dataclass(frozen=True)
class _Piece:
    """One connected component: its bounding box and its mask inside that box."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def z_range(self) -> tuple[int, int]:
        ks = np.nonzero(self.mask.any(axis=(1, 2)))[0] + self.box[0].start
        return int(ks.min()), int(ks.max())

    def slices(self) -> np.ndarray:
        """The k indices of the slices the piece lies in."""
        return np.nonzero(self.mask.any(axis=(1, 2)))[0] + self.box[0].start


class _Checker:
    def __init__(self, cls: np.ndarray, hu: np.ndarray, spacing_mm: float) -> None:
        self.cls, self.spacing = cls, spacing_mm
        self.voxel_cm3 = spacing_mm**3 / 1000.0
        self.lung_base = lung_base_k(hu, spacing_mm)
        self.rib_slices = _rib_slices(cls, spacing_mm)
        self.spine_slices = _spine_slices(cls, spacing_mm)
        self.removed = np.zeros(cls.shape, bool)
        self.removals: list[Removal] = []

    def remove(self, structure: str, piece: _Piece, reason: str) -> None:
        self.removed[piece.box] |= piece.mask
        self.cls[piece.box][piece.mask] = NET_INDEX["body"]
        self.removals.append(Removal(structure, reason, round(piece.voxels * self.voxel_cm3, 2)))

    def components(self, structure: str) -> list[_Piece]:
        comp, _ = _components(self.cls == NET_INDEX[structure])
        return [_Piece(box, comp[box] == c) for c, box in enumerate(ndimage.find_objects(comp), start=1) if box]

    def in_chest(self, piece: _Piece) -> bool:
        if self.lung_base is None:
            return False
        return piece.z_range[1] > self.lung_base - PELVIS_BELOW_LUNG_BASE_MM / self.spacing

    def rib_fraction(self, piece: _Piece) -> float:
        in_ribs = self.rib_slices[piece.box[0]]
        return float(piece.mask[in_ribs].sum()) / max(piece.voxels, 1)

    def hip_top_and_range(self) -> tuple[float | None, list[tuple[int, int]]]:
        """Top slice of the hip bones (components of hip-bone size) and each one's z range."""
        ranges = [p.z_range for p in self.components("hip") if p.voxels * self.spacing**3 >= MIN_HIP_MM3]
        return (max(r[1] for r in ranges) if ranges else None), ranges

    def chest_and_ribs(self, structure: str) -> None:
        for p in self.components(structure):
            if self.in_chest(p):
                self.remove(structure, p, f"reaches to within {PELVIS_BELOW_LUNG_BASE_MM:.0f} mm of the lung bases "
                                          "(in the chest)")
            elif structure != "sacrum" and self.rib_fraction(p) >= MAX_FRACTION_IN_RIB_SLICES:
                self.remove(structure, p, "lies in slices that hold ribs")

    def femurs(self) -> None:
        hip_top, _ = self.hip_top_and_range()
        for p in self.components("femur"):
            if hip_top is not None and p.z_range[1] > hip_top:
                self.remove("femur", p, "lies above the top of the hip bone (the femoral head sits in the acetabulum)")
            elif hip_top is None and self.spine_slices[p.slices()].mean() >= 0.5:
                self.remove("femur", p, "lies beside the vertebral column with no hip bone in view")

    def isolated_pieces(self, structure: str, min_cm3: float, keep_cut: bool = False) -> None:
        """Components smaller than ``min_cm3`` and far from any component of that size; with ``keep_cut``, a
        piece on the first or last slice is kept (the cap of a femoral head cut by the field of view)."""
        pieces = self.components(structure)
        small = [p for p in pieces if p.voxels * self.voxel_cm3 < min_cm3]
        if not small:
            return
        big = np.zeros(self.cls.shape, bool)
        for p in pieces:
            if p.voxels * self.voxel_cm3 >= min_cm3:
                big[p.box] |= p.mask
        last = self.cls.shape[0] - 1
        for p in small:
            lo, hi = p.z_range
            if not self.near(p, big) and not (keep_cut and (lo == 0 or hi == last)):
                self.remove(structure, p, f"is a piece smaller than {min_cm3:.0f} cm3 far from any {structure}")

    def near(self, piece: _Piece, other: np.ndarray) -> bool:
        """Whether ``piece`` lies within :data:`PIECE_NEAR_MM` of ``other`` (distances in a box around it)."""
        r = int(np.ceil(PIECE_NEAR_MM / self.spacing))
        box = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, n in zip(piece.box, other.shape, strict=True))
        if not other[box].any():
            return False
        dist = ndimage.distance_transform_edt(~other[box]) * self.spacing
        inner = tuple(slice(b.start - e.start, b.stop - e.start) for b, e in zip(piece.box, box, strict=True))
        return bool((dist[inner][piece.mask] <= PIECE_NEAR_MM).any())

    def sacrum(self) -> None:
        _, hip_ranges = self.hip_top_and_range()
        margin = SACRUM_HIP_MARGIN_MM / self.spacing
        spine_ks = np.nonzero(self.spine_slices)[0]
        lowest_vertebra = float(spine_ks.min()) if len(spine_ks) else None
        for p in self.components("sacrum"):
            lo, hi = p.z_range
            if not any(lo - margin <= h_hi and h_lo <= hi + margin for h_lo, h_hi in hip_ranges):
                self.remove("sacrum", p, "has no hip bone beside it (the sacrum lies between the hip bones)")
            elif lowest_vertebra is not None and lo > lowest_vertebra:
                self.remove("sacrum", p, "lies above the lowest lumbar vertebra")


def remove_invented_anatomy(cls: np.ndarray, hu: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, list[Removal]]:
    """The voxels removed from ``cls`` (changed in place to "body") and what was removed, why.

    ``cls``: network classes on the model grid (k increasing upwards, isotropic ``spacing_mm``); ``hu``:
    the CT on the same grid in HU."""
    check = _Checker(cls, hu, spacing_mm)
    for structure in ("hip", "femur", "sacrum"):
        check.chest_and_ribs(structure)
    check.isolated_pieces("hip", MIN_HIP_CM3)
    check.femurs()
    check.isolated_pieces("femur", MIN_FEMUR_CM3, keep_cut=True)
    check.sacrum()
    return check.removed, check.removals


def qc_flags(removals: list[Removal]) -> list[dict[str, str]]:
    """One ``anatomy_removed`` flag per structure: the volumes removed and why (a warning from
    :data:`WARN_REMOVED_CM3`, info below)."""
    names = {"femur": "femur", "hip": "hip-bone", "sacrum": "sacrum"}
    flags = []
    for structure in PELVIC_CLASSES:
        mine = [r for r in removals if r.structure == structure]
        if not mine:
            continue
        reasons: dict[str, list[float]] = {}
        for r in mine:
            reasons.setdefault(r.reason, []).append(r.volume_cm3)
        why = "; ".join(f"{sum(v):.1f} cm3 in {len(v)} piece(s) {reason}" for reason, v in reasons.items())
        total = sum(r.volume_cm3 for r in mine)
        flags.append({"code": "anatomy_removed", "severity": "warning" if total >= WARN_REMOVED_CM3 else "info",
                      "message": f"{total:.1f} cm3 of {names[structure]} label removed as anatomically "
                                 f"impossible ({why}): the model took other tissue for it; check the labels"})
    return flags


def move_to_body(probs: torch.Tensor, removed: np.ndarray) -> None:
    """Give the pelvic classes' probability at ``removed`` model voxels to "body" (in place), so that the
    labels interpolated to the CT grid do not bring the removed structures back."""
    if not removed.any():
        return
    where = torch.from_numpy(removed)
    for name in PELVIC_CLASSES:
        channel = probs[NET_INDEX[name]]
        probs[NET_INDEX["body"]][where] += channel[where]
        channel[where] = 0.0
