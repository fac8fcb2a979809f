"""Naming vertebral levels from anatomy, and splitting left/right, on the network's class map.

The network says "vertebra", not which one. Vertebrae are separated by geodesic growth from
body-centre seeds (heatmap peaks, else eroded components), ordered along the spine, and named by
anchors: the lowest lumbar vertebra sits on the sacrum (L5), and the lowest rib-bearing vertebra is
T12. When both anchors are seen they must agree; otherwise the result is flagged in ``qc``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..labels import LABELS
from .classes import NET_INDEX, SIDED

# Ordered from superior to inferior; names beyond our schema (T9...) are kept for counting only.
SPINE_ORDER: tuple[str, ...] = ("T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
MIN_HIP_MM3 = 20000.0  # an ilium is > 100 cm3; smaller hip-bone blobs are not a crest
MAX_SEED_OFF_AXIS_MM = 22.0  # body centres stay within ~2 cm of the spine's axis (no severe scoliosis)
MIN_SACRUM_MM3 = 15000.0  # the sacrum is ~100-200 cm3; smaller sacrum-class blobs are not an anchor
SPLIT_HEIGHT_FACTOR = 1.5  # a vertebra this much taller than the median is two merged ones
MIN_SEED_Z_GAP_MM = 22.0  # body centres closer than this in z are one vertebra (pitch body+disc >= 25 mm)
MIN_PITCH_MM = 25.0  # smallest vertebra pitch (T10: ~20 mm body + ~5 mm disc)
# largest pitch between neighbouring body centres: a lumbar body ~30-35 mm high (Zhou et al. 2000) + disc
# ~10-12 mm is ~45 mm; design choice 55 mm (tilt, 3 mm grid). Centres farther apart mean vertebrae were
# missed or merged, even when every gap is that large (no gap then stands out from the median).
MAX_PITCH_MM = 55.0
# tallest plausible body label along the spine: a lumbar body is ~30-35 mm high (Zhou et al. 2000); the
# 2-98 % extent on the 3 mm grid adds a voxel and the endplates' partial volume (shared CT: 29-37 mm).
# Design choice: a taller label holds vertebrae merged into one.
MAX_BODY_HEIGHT_MM = 50.0
MAX_OFF_MIDLINE_MM = 35.0  # vertebra voxels farther from the spine's midline are not spine (lumbar body ~50 mm wide)
MAX_L5_TO_SACRUM_MM = 45.0  # L5 body centre to the top of S1: half a body (~14 mm) + disc (~10 mm) + margin
# rib head to its vertebra's label: 9-13 mm in TotalSegmentator labels (joint gap); the next vertebra is >= 23 mm
RIB_CONTACT_MM = 15.0
MIN_RIB_VOXELS = 3
MIN_RIB_MM3 = 150.0  # the visible stub of a 12th rib can be ~0.2 cm3 (thin slab); smaller blobs are noise
MIN_VERTEBRA_MM3 = 1500.0  # fragments smaller than this are not a vertebra (a lumbar body is ~30 000 mm3)
BODY_DEPTH_MM = 35.0  # lumbar body depth ~35 mm (Zhou et al. 2000)


@dataclass
class Naming:
    instances: np.ndarray  # int16, library label ids of vertebrae (0 elsewhere)
    centres_kji: dict[str, np.ndarray]  # level -> body centre (model-grid index)
    method: str  # "sacrum+ribs", "sacrum", "ribs", "none"
    confident: bool
    qc: list[dict[str, str]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _clean_spine(vert: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Vertebra mask without small blobs and without voxels far from the spine's midline."""
    comp, n = ndimage.label(vert, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return vert
    sizes = np.bincount(comp.ravel()) * spacing_mm**3
    keep = sizes >= MIN_VERTEBRA_MM3
    keep[0] = False
    vert = keep[comp]
    if not vert.any():
        return vert
    i_mid = float(np.median(np.nonzero(vert)[2]))
    ii = np.arange(vert.shape[2])[None, None, :]
    return vert & (np.abs(ii - i_mid) * spacing_mm <= MAX_OFF_MIDLINE_MM)


def _bodies(vert: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The anterior ~35 mm of the vertebra mask per slice: the vertebral bodies."""
    front = np.full(vert.shape[0], np.inf)
    for k in np.nonzero(vert.any(axis=(1, 2)))[0]:
        front[k] = np.nonzero(vert[k].any(axis=1))[0].min()
    jj = np.arange(vert.shape[1])[None, :, None]
    return vert & (jj <= front[:, None, None] + BODY_DEPTH_MM / spacing_mm)


def _profile_seeds(bodies: np.ndarray, spacing_mm: float) -> list[np.ndarray]:
    """Body centres between the discs, found as minima of the body area per axial slice (robust to
    bodies that touch across a thin disc)."""
    area = ndimage.gaussian_filter1d(bodies.sum(axis=(1, 2)).astype(float), 0.7)
    ks = np.nonzero(area > 0.25 * area.max())[0] if area.max() > 0 else []
    if len(ks) == 0:
        return []
    lo, hi = int(ks.min()), int(ks.max())
    half = int(round(MIN_SEED_Z_GAP_MM / spacing_mm)) // 2
    level = 0.8 * float(np.median(area[lo:hi + 1]))
    minima = [k for k in range(lo + 1, hi) if area[k] < level and area[k] == area[max(lo, k - half):k + half + 1].min()]
    bounds = [lo] + minima + [hi]
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        sub = np.argwhere(bodies[a:b + 1])
        if (b - a) * spacing_mm >= 0.7 * MIN_SEED_Z_GAP_MM and len(sub):
            centre = sub.mean(axis=0)
            centre[0] += a
            out.append(centre)
    return out


def _seeds(vert: np.ndarray, heat: np.ndarray | None, spacing_mm: float) -> list[np.ndarray]:
    """Body-centre seeds, inferior -> superior: body components split by the discs, then heatmap
    peaks where no body component was found; one seed per vertebra height."""
    seeds: list[tuple[float, np.ndarray]] = []
    # the anterior ~35 mm of the vertebra mask per slice holds the bodies; discs and a z-erosion
    # separate neighbours
    bodies = ndimage.binary_erosion(_bodies(vert, spacing_mm), structure=np.ones((3, 1, 1), bool))
    seeds += [(2.0, c) for c in _profile_seeds(bodies, spacing_mm)]
    comp, n = ndimage.label(bodies)
    min_vox = 0.3 * MIN_VERTEBRA_MM3 / spacing_mm**3
    for c in range(1, n + 1):
        idx = np.argwhere(comp == c)
        if len(idx) >= min_vox:
            seeds.append((1.0 + len(idx) * 1e-6, idx.mean(axis=0)))
    if heat is not None and vert.any():
        near = ndimage.binary_dilation(vert, iterations=2)
        size = max(3, int(round(15.0 / spacing_mm)) | 1)
        peaks = (heat == ndimage.maximum_filter(heat, size=size)) & (heat > 0.3) & near
        seeds += [(float(heat[tuple(p)]) * 0.5, p.astype(float)) for p in np.argwhere(peaks)]
    # one seed per vertebra height in z: body components first, then the strongest peaks
    seeds.sort(key=lambda s: -s[0])
    kept: list[np.ndarray] = []
    for _, p in seeds:
        if all(abs(p[0] - q[0]) * spacing_mm >= MIN_SEED_Z_GAP_MM for q in kept):
            kept.append(p)
    if len(kept) >= 3:  # a seed far off the line of the others is not on the spine
        centre_ji = np.median(np.asarray(kept)[:, 1:], axis=0)
        kept = [p for p in kept if np.linalg.norm(p[1:] - centre_ji) * spacing_mm <= MAX_SEED_OFF_AXIS_MM]
    return sorted(kept, key=lambda p: p[0])


def _assign(vert: np.ndarray, seeds: list[np.ndarray]) -> np.ndarray:
    """Geodesic growth of the seeds through the vertebra mask (breadth-first, one voxel per step)."""
    lab = np.zeros(vert.shape, dtype=np.int16)
    for n, p in enumerate(seeds, start=1):
        lab[tuple(np.clip(np.round(p).astype(int), 0, np.array(vert.shape) - 1))] = n
    idx = np.argwhere(vert | (lab > 0))
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub, mask = lab[box].copy(), vert[box] | (lab[box] > 0)
    for _ in range(200):
        grown = ndimage.maximum_filter(sub, size=3)
        new = mask & (sub == 0) & (grown > 0)
        if not new.any():
            break
        sub[new] = grown[new]
    out = np.zeros(vert.shape, dtype=np.int16)
    out[box] = np.where(vert[box], sub, 0)
    return out


def _split_tall(inst: np.ndarray, seeds: list[np.ndarray], spacing_mm: float) -> tuple[list[np.ndarray], bool]:
    """Add a seed in any vertebra whose body is about two vertebrae tall (a missed disc)."""
    if len(seeds) < 3:
        return seeds, False
    heights = [_height_along_spine_mm(inst, seeds, m, spacing_mm) for m in range(1, len(seeds) + 1)]
    typical = float(np.median(heights))
    out, split = list(seeds), False
    for m, h in enumerate(heights, start=1):
        if typical > 0 and h > SPLIT_HEIGHT_FACTOR * typical:
            idx = np.argwhere(inst == m)
            mid = np.median(idx[:, 0])
            lower, upper = idx[idx[:, 0] < mid], idx[idx[:, 0] >= mid]
            if len(lower) and len(upper):
                out = [q for q in out if q is not seeds[m - 1]] + [lower.mean(axis=0), upper.mean(axis=0)]
                split = True
    return sorted(out, key=lambda p: p[0]), split


def _height_along_spine_mm(inst: np.ndarray, seeds: list[np.ndarray], m: int, spacing_mm: float) -> float:
    """Body height of instance ``m`` along the local spine axis (through its neighbours' centres), from
    the 2nd to the 98th percentile: a tilted body (L5 on the sacral slope, ~30 deg) spans far more
    slices than its height, and must not look like two merged vertebrae."""
    idx = np.argwhere(inst == m).astype(float)
    if len(idx) == 0:
        return 0.0
    lo, hi = seeds[max(m - 2, 0)], seeds[min(m, len(seeds) - 1)]
    axis = np.asarray(hi, float) - np.asarray(lo, float)
    if np.linalg.norm(axis) < 1e-6:
        axis = np.array([1.0, 0.0, 0.0])
    axis /= np.linalg.norm(axis)
    if axis[0] < 0.5:  # implausible axis (seeds side by side): fall back to the scanner's z
        axis = np.array([1.0, 0.0, 0.0])
    t = idx @ axis
    lo_t, hi_t = np.percentile(t, [2, 98])
    return float(hi_t - lo_t + 1) * spacing_mm


def _rib_bearing(inst: np.ndarray, n: int, ribs: np.ndarray, spacing_mm: float) -> np.ndarray:
    contact = np.zeros(n + 1, dtype=bool)
    if not ribs.any():
        return contact
    iters = max(1, int(round(RIB_CONTACT_MM / spacing_mm)))
    rib_near = ndimage.binary_dilation(ribs, iterations=iters)
    counts = np.bincount(inst[rib_near & (inst > 0)], minlength=n + 1)
    contact[:] = counts >= MIN_RIB_VOXELS
    contact[0] = False
    return contact


def name_levels(cls: np.ndarray, heat: np.ndarray | None, spacing_mm: float) -> Naming:
    """Name the vertebrae in a network class map (model grid, isotropic ``spacing_mm``)."""
    vert = cls == NET_INDEX["vertebra"]
    sacrum = cls == NET_INDEX["sacrum"]
    ribs = cls == NET_INDEX["rib"]
    qc: list[dict[str, str]] = []
    if vert.sum() * spacing_mm**3 < 3 * MIN_VERTEBRA_MM3 and (cls == NET_INDEX["intervertebral_disc"]).any():
        # bodies mistaken for disc (low-density bone looks like disc): take the spine column instead
        vert = vert | (cls == NET_INDEX["intervertebral_disc"])
        qc.append({"code": "vertebrae_from_spine_column", "severity": "warning",
                   "message": "the model found almost no vertebral bone; vertebrae taken from the whole spine "
                              "column (discs included): check the labels"})
    vert = _clean_spine(vert, spacing_mm)
    seeds = _seeds(vert, heat, spacing_mm)
    if not seeds:
        return Naming(np.zeros(cls.shape, np.int16), {}, "none", False,
                      [{"code": "no_vertebrae", "severity": "error", "message": "no vertebra found by the model"}])
    inst = _assign(vert, seeds)
    seeds, split = _split_tall(np.where(_bodies(vert, spacing_mm), inst, 0), seeds, spacing_mm)
    if split:
        inst = _assign(vert, seeds)
        qc.append({"code": "vertebra_split", "severity": "warning",
                   "message": "a vertebra twice the usual height was split in two (two vertebrae merged): check "
                              "the labels"})
    n = len(seeds)
    bodies = np.where(_bodies(vert, spacing_mm), inst, 0)
    tallest = max(_height_along_spine_mm(bodies, seeds, m, spacing_mm) for m in range(1, n + 1))
    if tallest > MAX_BODY_HEIGHT_MM:
        qc.append({"code": "vertebra_missed", "severity": "warning",
                   "message": f"a vertebral body label {tallest:.0f} mm high (a body is at most ~35 mm): vertebrae "
                              "merged into one, so levels were missed; check the labels"})
    # drop instances too small to be a vertebra (fragments, a cut-off edge)
    sizes = np.bincount(inst.ravel(), minlength=n + 1) * spacing_mm**3
    z = np.array([s[0] for s in seeds]) * spacing_mm
    # --- anchors
    sacrum_offset = None  # index of L5 among seeds
    if sacrum.sum() * spacing_mm**3 > MIN_SACRUM_MM3:
        lab, nl = ndimage.label(sacrum)
        big = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        sacrum_top_mm = np.argwhere(big)[:, 0].max() * spacing_mm
        above = [m for m in range(n) if z[m] > sacrum_top_mm - 10.0]
        if above and z[above[0]] - sacrum_top_mm <= MAX_L5_TO_SACRUM_MM:
            sacrum_offset = above[0]
    ribs = _plausible_ribs(ribs, cls, spacing_mm)
    bearing = _rib_bearing(inst, n, ribs, spacing_mm)
    rib_offset = None  # index of T12 among seeds
    rib_idx = [m for m in range(n) if bearing[m + 1]]
    if rib_idx:
        rib_offset = rib_idx[0]
    # --- names: L5 = SPINE_ORDER[-1] at sacrum_offset; T12 at rib_offset
    t12 = SPINE_ORDER.index("T12")
    l5 = SPINE_ORDER.index("L5")
    start = None  # SPINE_ORDER index of seed 0 (the most inferior) if no vertebra were missed
    anchor_m = 0  # the seed the anchor names
    confident = False
    if sacrum_offset is not None and rib_offset is not None:
        from_sacrum, from_ribs = l5 + sacrum_offset, t12 + rib_offset
        method = "sacrum+ribs"
        start, confident, anchor_m = from_sacrum, from_sacrum == from_ribs, sacrum_offset
        if not confident:
            qc.append({"code": "level_naming_disagree", "severity": "warning",
                       "message": f"counting from the sacrum and from the last rib disagree by "
                                  f"{from_sacrum - from_ribs} level(s) (transitional vertebra or segmentation "
                                  "error): levels named from the sacrum; check the labels"})
    elif sacrum_offset is not None:
        method, start, confident, anchor_m = "sacrum", l5 + sacrum_offset, True, sacrum_offset
    elif rib_offset is not None and _crest_disagrees(cls, z, spacing_mm, t12 + rib_offset):
        crest = _crest_offset(cls, z, spacing_mm)
        method, start, anchor_m = "iliac-crest", SPINE_ORDER.index("L4") + int(crest), int(crest)  # type: ignore[arg-type]
        qc.append({"code": "level_naming_disagree", "severity": "warning",
                   "message": "the lowest rib and the iliac crests disagree by 2 or more levels: levels named "
                              "from the iliac crests (L4 +-1 level); check the labels"})
    elif rib_offset is not None:
        method, start, anchor_m = "ribs", t12 + rib_offset, rib_offset
        # sure only when a rib-free vertebra is seen below the last rib-bearing one
        confident = rib_offset > 0
        if not confident:
            qc.append({"code": "level_naming_uncertain", "severity": "warning",
                       "message": "levels named from the lowest rib-bearing vertebra (T12) only; no vertebra "
                                  "below it in view to confirm: check the labels"})
    elif (crest := _crest_offset(cls, z, spacing_mm)) is not None:
        method, start, anchor_m = "iliac-crest", SPINE_ORDER.index("L4") + crest, crest
        qc.append({"code": "level_naming_uncertain", "severity": "warning",
                   "message": "neither sacrum nor lowest ribs recognised: levels named from the iliac crests "
                              "(L4 at the crest line, +-1 level between people): check the labels"})
    else:
        method = "none"
        qc.append({"code": "level_naming_failed", "severity": "error",
                   "message": "neither sacrum nor ribs found: vertebral levels cannot be named"})
    names: dict[int, str] = {}
    if start is not None:
        # walk up and down from the anchored seed; a gap of about two vertebra pitches between
        # neighbours means one was missed: skip a name
        gaps = np.diff(z)
        typical = max(float(np.median(gaps)), MIN_PITCH_MM) if len(gaps) else 30.0
        anchor_pos = start - anchor_m
        names[anchor_m + 1] = SPINE_ORDER[anchor_pos] if 0 <= anchor_pos < len(SPINE_ORDER) else ""
        for direction in (1, -1):  # 1: upwards (superior, smaller SPINE_ORDER index)
            pos, m = anchor_pos, anchor_m
            while 0 <= m + direction < n:
                gap = gaps[m if direction == 1 else m - 1]
                m += direction
                step = 1
                if gap > 1.6 * typical:
                    step = int(round(gap / typical))
                    if direction == 1 or m >= 0:
                        qc.append({"code": "vertebra_missed", "severity": "warning",
                                   "message": "a gap in the spine suggests a vertebra the model missed"})
                pos -= step * direction
                names[m + 1] = SPINE_ORDER[pos] if 0 <= pos < len(SPINE_ORDER) else ""
        names = {k: v for k, v in names.items() if v}
        missed = any(q["code"] == "vertebra_missed" for q in qc)
        if len(z) > 1 and float(np.diff(z).max()) > MAX_PITCH_MM and not missed:
            qc.append({"code": "vertebra_missed", "severity": "warning",
                       "message": f"vertebral body centres up to {float(np.diff(z).max()):.0f} mm apart (neighbours "
                                  f"are at most ~{MAX_PITCH_MM:.0f} mm): vertebrae were missed or merged; check "
                                  "the labels"})
    # the seeds the names hang on: both anchors when they agree, else the one used
    anchor_seeds = [anchor_m] if start is not None else []
    if method == "sacrum+ribs" and confident:
        anchor_seeds = sorted({int(sacrum_offset), int(rib_offset)})  # type: ignore[arg-type]
    out = np.zeros(cls.shape, dtype=np.int16)
    centres: dict[str, np.ndarray] = {}
    for m, level in names.items():
        key = f"vertebra_{level}"
        if key in LABELS and sizes[m] >= MIN_VERTEBRA_MM3:
            out[inst == m] = LABELS[key]
            centres[level] = seeds[m - 1]
    details = {"spacing_mm": spacing_mm, "n_vertebrae_found": n, "sacrum_anchor": sacrum_offset is not None,
               "rib_anchor": rib_offset is not None, "levels": [names.get(m + 1) for m in range(n)],
               "anchor_seeds": [int(m) for m in anchor_seeds]}
    return Naming(out, centres, method, confident, qc, details)


def _plausible_ribs(ribs: np.ndarray, cls: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Rib voxels in components of rib size that lie above the iliac crests (ribs never reach the pelvis)."""
    comp, n = ndimage.label(ribs, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return ribs
    sizes = np.bincount(comp.ravel()) * spacing_mm**3
    keep = sizes >= MIN_RIB_MM3
    keep[0] = False
    crest_k = _crest_k(cls, spacing_mm)
    if crest_k is not None:
        lowest = ndimage.minimum(np.indices(ribs.shape)[0], comp, index=np.arange(n + 1))
        keep &= np.asarray(lowest) > crest_k
    return keep[comp]


def _crest_k(cls: np.ndarray, spacing_mm: float) -> float | None:
    comp, n = ndimage.label(cls == NET_INDEX["hip"])
    if n == 0:
        return None
    sizes = np.bincount(comp.ravel())[1:] * spacing_mm**3
    big = [c + 1 for c in np.argsort(sizes)[::-1][:2] if sizes[c] >= MIN_HIP_MM3]
    if not big:
        return None
    return float(np.mean([np.argwhere(comp == c)[:, 0].max() for c in big]))


def _crest_disagrees(cls: np.ndarray, z_mm: np.ndarray, spacing_mm: float, start_from_ribs: int) -> bool:
    crest = _crest_offset(cls, z_mm, spacing_mm)
    return crest is not None and abs(SPINE_ORDER.index("L4") + crest - start_from_ribs) >= 2


def _crest_offset(cls: np.ndarray, z_mm: np.ndarray, spacing_mm: float) -> int | None:
    """Index of the seed at the iliac crest line (tops of the two largest hip-bone components): L4
    (Tuffier's line crosses L4 or the L4/L5 disc; Chakraverty et al. 2007, Clin Anat 20:759)."""
    crest_k = _crest_k(cls, spacing_mm)
    if crest_k is None or len(z_mm) == 0:
        return None
    crest_mm = crest_k * spacing_mm
    m = int(np.argmin(np.abs(z_mm - crest_mm)))
    return m if abs(z_mm[m] - crest_mm) <= 25.0 else None


def midline_i(cls: np.ndarray) -> np.ndarray:
    """Midline column (i index) per axial slice: median of spine voxels, interpolated, else body centre."""
    spine = np.isin(cls, [NET_INDEX["vertebra"], NET_INDEX["sacrum"], NET_INDEX["intervertebral_disc"]])
    body = cls > 0
    default = float(np.argwhere(body)[:, 2].mean()) if body.any() else cls.shape[2] / 2
    ks = np.arange(cls.shape[0])
    have = [k for k in ks if spine[k].sum() >= 3]
    if not have:
        return np.full(cls.shape[0], default)
    mids = np.array([np.median(np.nonzero(spine[k])[1]) for k in have])
    return np.interp(ks, have, mids)


def to_schema(cls: np.ndarray, naming: Naming) -> np.ndarray:
    """Library-schema label map from network classes + named vertebrae (model grid)."""
    out = np.zeros(cls.shape, dtype=np.int16)
    out[cls == NET_INDEX["body"]] = LABELS["body"]
    out[cls == NET_INDEX["subcutaneous_fat"]] = LABELS["subcutaneous_fat"]
    out[cls == NET_INDEX["intervertebral_disc"]] = LABELS["intervertebral_disc"]
    out[cls == NET_INDEX["sacrum"]] = LABELS["sacrum"]
    # vertebrae the naming could not place (e.g. above T10) stay "body"-free bone: keep as body
    out[cls == NET_INDEX["vertebra"]] = LABELS["body"]
    out[naming.instances > 0] = naming.instances[naming.instances > 0]
    mid = midline_i(cls)
    left = np.broadcast_to(np.arange(cls.shape[2])[None, None, :] > mid[:, None, None], cls.shape)  # i: right->left
    for name in SIDED:
        m = cls == NET_INDEX[name]
        out[m & left] = LABELS[f"{name}_left"]
        out[m & ~left] = LABELS[f"{name}_right"]
    _ribs_to_schema(cls, naming, left, out)
    return out


def _ribs_to_schema(cls: np.ndarray, naming: Naming, left: np.ndarray, out: np.ndarray) -> None:
    ribs = cls == NET_INDEX["rib"]
    out[ribs] = LABELS["ribs_other"]
    comp, n = ndimage.label(ribs)
    if not n:
        return
    for level, number in (("T12", 12), ("T11", 11)):
        vid = LABELS.get(f"vertebra_{level}")
        iters = max(1, int(round(RIB_CONTACT_MM / naming.details.get("spacing_mm", 3.0))))
        near = ndimage.binary_dilation(naming.instances == vid, iterations=iters)
        if not near.any():
            continue
        for c in np.unique(comp[near & ribs]):
            if c == 0:
                continue
            m = comp == c
            side = "left" if left[m].mean() > 0.5 else "right"
            out[m] = LABELS[f"rib_{side}_{number}"]
