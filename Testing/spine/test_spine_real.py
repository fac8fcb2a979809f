"""The real shared CT (TotalSegmentator example) end to end through ``obmd analyze``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from OpportunisticBMDLib import io
from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.hip.pad_anchor import HIP_ABMD_PERCENT_PER_HU
from OpportunisticBMDLib.labels import LABELS, totalseg_to_ours, vertebra_label
from OpportunisticBMDLib.rois import FAT_HU_MAX, FAT_HU_MIN


@pytest.fixture(scope="module")
def run_dir(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze")
    rc = main(["analyze", str(shared_data / "ct.nii.gz"), "--seg", str(shared_data / "ct_seg_total.nii.gz"),
               "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def grid(shared_data):
    ct = io.read_ct(shared_data / "ct.nii.gz")
    labels = io.read_labels(shared_data / "ct_seg_total.nii.gz", like=ct)
    return ct, totalseg_to_ours(labels.array)


def test_levels_present_and_vbmd_plausible(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    levels = res["spine"]["levels"]
    for level in ("T12", "L1", "L2", "L3", "L4", "L5"):
        assert level in levels
        v = levels[level]["vbmd_mg_cm3"]
        assert v is not None and np.isfinite(v) and 50 < v < 250, (level, v)
        assert levels[level]["voxel_count"] > 100 and levels[level]["roi_volume_mm3"] > 5000
    summary = res["spine"]["summary"]
    assert summary["levels_used"] == ["L1", "L2"]
    assert summary["category"] in ("normal", "osteopenia", "osteoporosis")
    assert summary["vbmd_mg_cm3"] == pytest.approx(np.mean([levels["L1"]["vbmd_mg_cm3"], levels["L2"]["vbmd_mg_cm3"]]))
    cal = res["calibration"]
    assert cal["method"] == "muscle-fat" and 20 < cal["muscle_hu"] < 80 and -150 < cal["fat_hu"] < -60
    # the contract keys (docs/results-contract.md)
    assert {"input", "software", "spine", "calibration", "qc"} <= set(res)
    assert {"name", "version", "models"} <= set(res["software"])
    for key in ("vbmd_mg_cm3", "trabecular_hu_mean", "trabecular_hu_median", "trabecular_hu_sd", "voxel_count",
                "roi_volume_mm3"):
        assert key in levels["L1"]
    for key in ("method", "slope", "intercept", "muscle_hu", "fat_hu", "muscle_density_mg_cm3", "fat_density_mg_cm3"):
        assert key in cal
    assert all({"code", "severity", "message"} <= set(q) and q["severity"] in ("info", "warning", "error")
               for q in res["qc"])
    # T11 is only partly in the scan: flagged; the left hip prosthesis is reported (away from the spine)
    codes = {(q["code"], q["message"].split()[0]) for q in res["qc"]}
    assert ("level_cut_by_fov", "T11") in codes
    assert any(q["code"].startswith("metal") for q in res["qc"])
    # muscle-fat states its uncertainty (psoas composition unknown), carried to the vBMD and the hip T-score
    rel = cal["details"]["slope_relative_sd"]
    assert 0.02 < rel < 0.05
    # and the marrow's fat (no age in this header: the widened SD), additive on the vBMD, an offset at the hip
    marrow = cal["details"]["marrow_fat"]
    assert marrow["source"] == "default (age unknown)" and marrow["sd_fraction"] == 0.11
    assert 5.0 < marrow["hu_sd"] < 8.0
    assert marrow["mg_cm3_sd"] == pytest.approx(marrow["hu_sd"] * cal["slope"], abs=0.01)
    vbmd_sd = np.hypot(rel * (summary["vbmd_mg_cm3"] - cal["fat_density_mg_cm3"]), marrow["mg_cm3_sd"])
    assert summary["vbmd_calibration_sd_mg_cm3"] == pytest.approx(vbmd_sd)
    hip_rel = np.hypot(rel, marrow["hu_sd"] * HIP_ABMD_PERCENT_PER_HU / 100.0)
    neck = res["hip"]["right"]["neck"]
    assert neck["abmd_calibration_sd_g_cm2"] == pytest.approx(hip_rel * neck["abmd_g_cm2"])
    assert res["hip"]["right"]["calibration"]["slope_relative_sd"] == pytest.approx(hip_rel)


def test_rois_inside_the_right_structures(run_dir, grid):
    ct, labels = grid
    masks = {p.name[: -len(".nii.gz")]: io.read_labels(p, like=ct).array.astype(bool)
             for p in (run_dir / "masks").glob("*.nii.gz")}
    assert {"trabecular_L1", "trabecular_L2", "trabecular_T12", "muscle_roi", "fat_roi"} <= set(masks)
    for name, mask in masks.items():
        assert mask.any(), name
        if name.startswith("trabecular_"):
            assert (labels[mask] == vertebra_label(name.split("_")[1])).all(), name
    psoas = np.isin(labels, (LABELS["psoas_left"], LABELS["psoas_right"]))
    assert psoas[masks["muscle_roi"]].all()
    fat_hu = ct.array[masks["fat_roi"]]
    assert (fat_hu >= FAT_HU_MIN).all() and (fat_hu <= FAT_HU_MAX).all()
    assert not (masks["fat_roi"] & masks["muscle_roi"]).any() and not (masks["fat_roi"] & (labels > 0)).any()
    # anterior wall: in front of the vertebral bodies, within the measured levels' slices
    vertebrae = np.isin(labels, [vertebra_label(lvl) for lvl in ("T12", "L1", "L2", "L3", "L4")])
    assert np.nonzero(masks["fat_roi"])[1].max() < np.nonzero(vertebrae)[1].min()
    # psoas at lumbar levels only: nothing below L4's lowest slice (the iliacus is in the pelvis)
    l4_bottom = np.nonzero((labels == vertebra_label("L4")).any(axis=(1, 2)))[0].min()
    assert np.nonzero(masks["muscle_roi"].any(axis=(1, 2)))[0].min() >= l4_bottom - 1


def test_csv_row(run_dir):
    with (run_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    res = json.loads((run_dir / "results.json").read_text())
    assert len(rows) == 1
    assert float(rows[0]["summary_vbmd_mg_cm3"]) == pytest.approx(res["spine"]["summary"]["vbmd_mg_cm3"])
    l3 = res["spine"]["levels"]["L3"]
    assert float(rows[0]["L3_trabecular_hu_median"]) == pytest.approx(l3["trabecular_hu_median"])
    assert rows[0]["summary_levels_used"] == "L1-L2"


def test_body_mask_option_and_json_only(shared_data, tmp_path, capsys):
    rc = main(["analyze", str(shared_data / "ct.nii.gz"), "--seg", str(shared_data / "ct_seg_total.nii.gz"),
               "--body-seg", str(shared_data / "ct_seg_vertebrae_body.nii.gz"), "--out", str(tmp_path),
               "--json-only", "--quiet", "--calibration", "hu"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".obmd-output", "results.json"]  # and the marker
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["input"]["vertebral_body_mask"].endswith("ct_seg_vertebrae_body.nii.gz")
    assert res["spine"]["levels"]["L1"]["vbmd_mg_cm3"] is None
    assert 60 < res["spine"]["levels"]["L1"]["trabecular_hu_median"] < 200
    printed = capsys.readouterr().out
    assert "L1" in printed and "calibration: hu" in printed


def test_cli_errors_exit_nonzero_with_one_line(shared_data, tmp_path):
    cmd = [sys.executable, "-m", "OpportunisticBMDLib.cli", "analyze", str(shared_data / "ct.nii.gz"),
           "--seg", str(shared_data / "crop_T12-L2" / "ct_seg_total.nii.gz"), "--out", str(tmp_path), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("obmd: error:") and "grid" in lines[0]
    rc = main(["analyze", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path)])
    assert rc == 2


def test_reference_rois_agree_with_totalsegmentator_tissue_masks(shared_data):
    """Independent check: TotalSegmentator's tissue masks of the T12-L2 crop (not used by the pipeline)."""
    from OpportunisticBMDLib import pipeline

    crop = shared_data / "crop_T12-L2"
    ct = io.read_ct(crop / "ct.nii.gz")
    result = pipeline.analyze(ct, io.read_labels(crop / "ct_seg_total.nii.gz", like=ct))
    subcutaneous = io.read_labels(crop / "subcutaneous_fat.nii.gz", like=ct).array > 0
    muscle = io.read_labels(crop / "skeletal_muscle.nii.gz", like=ct).array > 0
    fat_roi, muscle_roi = result.rois["fat_roi"], result.rois["muscle_roi"]
    assert fat_roi.sum() > 1000 and (fat_roi & subcutaneous).sum() >= 0.85 * fat_roi.sum()
    assert muscle_roi.sum() > 300 and (muscle_roi & muscle).sum() >= 0.9 * muscle_roi.sum()
    # L2 reaches the crop's bottom slice: only L1 is whole, and the summary says so
    assert result.results["spine"]["summary"]["levels_used"] == ["L1"]


def test_contrast_enhanced_dicom_series(shared_data):
    """The real contrast-enhanced DICOM series (T11-T12 only, no psoas): contrast flagged from the header
    and from the aorta, paraspinal muscle used as the reference, T12 measured."""
    from OpportunisticBMDLib import pipeline

    folder = shared_data / "dicom_upper_abdomen"
    ct = io.read_ct(folder / "series")
    res = pipeline.analyze(ct, io.read_labels(folder / "ct_seg_total.nii.gz", like=ct)).results
    codes = [q["code"] for q in res["qc"]]
    assert codes.count("contrast") == 2 and "muscle_not_psoas" in codes
    assert res["calibration"]["muscle_roi_source"] == "paraspinal"
    assert res["input"]["format"] == "dicom" and res["input"]["kvp"] == "120"
    assert 60 < res["spine"]["levels"]["T12"]["trabecular_hu_median"] < 300
