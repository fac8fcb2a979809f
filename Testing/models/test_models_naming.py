"""Level naming from anatomy (sacrum, lowest ribs) on synthetic class maps with shifted/truncated fields of view."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.models import naming
from OpportunisticBMDLib.models.classes import NET_INDEX

SPACING_MM = 3.0
LEVELS_BOTTOM_UP = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
RIB_LEVELS = ("T12", "T11", "T10")


def spine_class_map(rib_levels=RIB_LEVELS) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Net class map (k, j, i) at 3 mm: sacrum, 8 vertebrae (21 mm body + 9 mm disc), ribs, psoas, femur."""
    cls = np.full((110, 60, 60), NET_INDEX["body"], dtype=np.uint8)
    cls[:, :, :3] = cls[:, :, -3:] = NET_INDEX["background"]
    cls[:12, 12:30, 22:38] = NET_INDEX["sacrum"]
    z_ranges = {}
    z = 15
    for level in LEVELS_BOTTOM_UP:
        cls[z:z + 7, 15:26, 25:36] = NET_INDEX["vertebra"]  # body
        cls[z + 1:z + 6, 26:36, 28:33] = NET_INDEX["vertebra"]  # posterior arch
        cls[z + 7:z + 10, 15:26, 25:36] = NET_INDEX["intervertebral_disc"]
        z_ranges[level] = (z, z + 7)
        if level in rib_levels:
            cls[z + 3:z + 5, 27:30, 38:52] = NET_INDEX["rib"]  # left (i > midline), 2 voxels from the arch
            cls[z + 3:z + 5, 27:30, 8:23] = NET_INDEX["rib"]  # right
        z += 10
    cls[20:60, 10:16, 40:48] = NET_INDEX["psoas"]  # left of the midline (i grows to the patient's left)
    cls[20:60, 10:16, 12:20] = NET_INDEX["psoas"]
    cls[:10, 5:15, 50:56] = NET_INDEX["femur"]
    return cls, z_ranges


def named_levels(result: naming.Naming, z_ranges, k0: int = 0) -> dict[str, str]:
    """Reference level -> the level the naming put on it."""
    out = {}
    for level, (z0, z1) in z_ranges.items():
        z0, z1 = z0 - k0, z1 - k0
        if z1 <= 0 or z0 >= result.instances.shape[0]:
            continue
        ids = result.instances[max(z0, 0):z1, 15:26, 25:36]
        ids = ids[ids > 0]
        if ids.size:
            got = int(np.bincount(ids).argmax())
            out[level] = next(n.split("_")[1] for n, i in LABELS.items() if i == got)
    return out


def test_full_view_named_from_sacrum_and_ribs_agree():
    cls, z_ranges = spine_class_map()
    result = naming.name_levels(cls, None, SPACING_MM)
    assert result.method == "sacrum+ribs" and result.confident, result.qc
    got = named_levels(result, z_ranges)
    assert got == {lvl: lvl for lvl in LEVELS_BOTTOM_UP}


@pytest.mark.parametrize("k0", [0, 3, 6])
def test_chest_only_scan_named_from_lowest_rib(k0):
    cls, z_ranges = spine_class_map()
    cut = 45 + k0  # sacrum, L5, L4 and L3 out of view
    result = naming.name_levels(cls[cut:], None, SPACING_MM)
    assert result.method == "ribs"
    assert result.confident  # L1 (no rib) is seen below T12
    got = named_levels(result, z_ranges, cut)
    for level in ("L1", "T12", "T11"):
        assert got[level] == level


def test_pelvis_only_scan_named_from_sacrum():
    cls, z_ranges = spine_class_map()
    top = 62  # T12 and above out of view
    result = naming.name_levels(cls[:top], None, SPACING_MM)
    assert result.method == "sacrum" and result.confident
    got = named_levels(result, z_ranges)
    for level in ("L5", "L4", "L3", "L2"):
        assert got[level] == level


def test_slab_around_t12_is_named_but_flagged():
    cls, z_ranges = spine_class_map()
    lo, hi = z_ranges["T12"][0] - 2, z_ranges["T11"][1] + 2
    result = naming.name_levels(cls[lo:hi], None, SPACING_MM)
    got = named_levels(result, z_ranges, lo)
    assert got.get("T12") == "T12"
    assert not result.confident
    assert any(q["code"] == "level_naming_uncertain" for q in result.qc)


def test_rib_on_l1_disagrees_with_sacrum_and_is_flagged():
    cls, z_ranges = spine_class_map(rib_levels=("L1", "T12", "T11", "T10"))
    result = naming.name_levels(cls, None, SPACING_MM)
    assert not result.confident
    assert any(q["code"] == "level_naming_disagree" for q in result.qc)
    assert named_levels(result, z_ranges)["L1"] == "L1"  # counted from the sacrum


def test_no_anchor_is_an_error_in_qc():
    cls, _ = spine_class_map(rib_levels=())
    result = naming.name_levels(cls[20:], None, SPACING_MM)
    assert result.method == "none"
    assert any(q["severity"] == "error" for q in result.qc)


def test_schema_sides_and_rib_12():
    cls, _ = spine_class_map()
    result = naming.name_levels(cls, None, SPACING_MM)
    schema = naming.to_schema(cls, result)
    assert (schema[20:60, 10:16, 40:48] == LABELS["psoas_left"]).all()
    assert (schema[20:60, 10:16, 12:20] == LABELS["psoas_right"]).all()
    assert (schema[:10, 5:15, 50:56] == LABELS["femur_left"]).all()
    assert (schema == LABELS["rib_left_12"]).any() and (schema == LABELS["rib_right_12"]).any()


def test_iliac_crest_names_levels_when_sacrum_and_ribs_are_missed():
    cls, z_ranges = spine_class_map(rib_levels=())
    cls[cls == NET_INDEX["sacrum"]] = NET_INDEX["body"]
    crest_k = (z_ranges["L4"][0] + z_ranges["L4"][1]) // 2
    cls[:crest_k + 1, 20:40, 40:56] = NET_INDEX["hip"]  # left ilium, its crest at the L4 body
    cls[:crest_k + 1, 20:40, 4:20] = NET_INDEX["hip"]
    result = naming.name_levels(cls, None, SPACING_MM)
    assert result.method == "iliac-crest" and not result.confident
    got = named_levels(result, z_ranges)
    for level in ("L4", "L3", "L2", "L1"):
        assert got[level] == level


def test_two_merged_vertebrae_are_split_and_named():
    cls, z_ranges = spine_class_map()
    disc = slice(z_ranges["L2"][1], z_ranges["L1"][0])  # the L1/L2 disc is missed: the bodies merge
    cls[disc, 15:26, 25:36] = NET_INDEX["vertebra"]
    result = naming.name_levels(cls, None, SPACING_MM)
    assert any(q["code"] == "vertebra_split" for q in result.qc)
    got = named_levels(result, z_ranges)
    assert got == {lvl: lvl for lvl in LEVELS_BOTTOM_UP}


def _tilted_body(height_vox: float, tilt_deg: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Instance map with one disc-shaped body (radius 8 voxels) whose axis is tilted in the k-j plane."""
    axis = np.array([np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg)), 0.0])
    centre = np.array([30.0, 30.0, 30.0])
    k, j, i = np.indices((60, 60, 60)).astype(float)
    rel = np.stack([k, j, i], -1) - centre
    along = rel @ axis
    radial = np.linalg.norm(rel - along[..., None] * axis, axis=-1)
    inst = np.zeros((60, 60, 60), np.int16)
    inst[(np.abs(along) <= height_vox / 2) & (radial <= 8)] = 2
    seeds = [centre - 10 * axis, centre, centre + 10 * axis]
    return inst, seeds


def test_height_is_measured_along_the_spine_so_a_tilted_l5_is_not_split():
    inst, seeds = _tilted_body(height_vox=9, tilt_deg=35)  # 27 mm body on a 35 deg sacral slope
    k_extent_mm = np.ptp(np.nonzero(inst.any(axis=(1, 2)))[0]) * SPACING_MM
    assert k_extent_mm > 1.5 * 27  # counting slices would call it two vertebrae
    assert naming._height_along_spine_mm(inst, seeds, 2, SPACING_MM) == pytest.approx(27, abs=4)
    merged, seeds = _tilted_body(height_vox=18, tilt_deg=35)  # two bodies merged along the same axis
    assert naming._height_along_spine_mm(merged, seeds, 2, SPACING_MM) == pytest.approx(54, abs=5)
