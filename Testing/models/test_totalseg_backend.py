"""``--backend totalsegmentator``: its ``total`` labels mapped to our schema (checked against the shared
TotalSegmentator outputs and their own label table, ``label_maps.json``), keypoints at the level body
centres, and a clear refusal when the package is not installed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from OpportunisticBMDLib import pipeline
from OpportunisticBMDLib.errors import InputError, ModelError
from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.models import keypoints as kp
from OpportunisticBMDLib.models import totalseg_backend
from OpportunisticBMDLib.models.inference import segment
from OpportunisticBMDLib.models.totalseg_backend import labels_from_totalseg

LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")


@pytest.fixture(scope="module")
def mapped(shared_data):
    ct = read_ct(shared_data / "ct.nii.gz")
    total = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct).array
    # ids from TotalSegmentator's own table in the shared data, not from our copy in labels.py
    names = json.loads((shared_data / "label_maps.json").read_text())["total"]
    ts_id = {name: int(i) for i, name in names.items()}
    labels, keypoints = labels_from_totalseg(ct, total)
    return ct, total, ts_id, labels, keypoints


def test_levels_psoas_femur_keep_their_voxels(mapped):
    ct, total, ts_id, labels, _ = mapped
    ours = labels.array
    assert labels.shape == ct.shape
    pairs = [(f"vertebrae_{lvl}", f"vertebra_{lvl}") for lvl in LEVELS]
    pairs += [("iliopsoas_left", "psoas_left"), ("iliopsoas_right", "psoas_right"),
              ("femur_left", "femur_left"), ("femur_right", "femur_right"),
              ("rib_left_12", "rib_left_12"), ("rib_right_12", "rib_right_12")]
    for ts_name, our_name in pairs:
        ts_mask = total == ts_id[ts_name]
        our_mask = ours == LABELS[our_name]
        assert ts_mask.sum() > 0, ts_name  # the shared scan shows every one of these
        assert our_mask.sum() == ts_mask.sum(), (ts_name, int(our_mask.sum()), int(ts_mask.sum()))
        assert np.array_equal(our_mask, ts_mask), ts_name
    # the sacrum gathers TotalSegmentator's sacrum and S1
    sacrum = np.isin(total, [ts_id["sacrum"], ts_id["vertebrae_S1"]])
    assert np.array_equal(ours == LABELS["sacrum"], sacrum)
    # left/right not swapped: patient left is larger i (LPS), for the psoas as for the femurs
    i_left = np.argwhere(ours == LABELS["psoas_left"])[:, 2].mean()
    i_right = np.argwhere(ours == LABELS["psoas_right"])[:, 2].mean()
    assert i_left > i_right


def test_keypoints_at_level_body_centres(mapped):
    ct, total, ts_id, _, keypoints = mapped
    levels = keypoints["levels"]
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= set(levels)  # T11 is cut by the field of view
    assert keypoints["naming"]["method"] == "totalsegmentator"
    for lvl, point in levels.items():
        mask = total == ts_id[f"vertebrae_{lvl}"]
        whole = np.argwhere(mask).mean(axis=0)
        expected = kp.body_centre_kji(mask)
        np.testing.assert_allclose(point["index_kji"], expected, atol=0.01)
        np.testing.assert_allclose(point["position_lps_mm"], ct.index_to_lps_mm(expected), atol=0.01)
        k, j, i = np.round(expected).astype(int)
        assert mask[max(k - 1, 0):k + 2, max(j - 1, 0):j + 2, max(i - 1, 0):i + 2].any(), lvl  # in the bone
        spacing = np.asarray(ct.spacing_mm)
        # near the height of the level's centroid (the arch slopes down: a few mm, far less than the
        # ~25 mm between levels), and anterior of it (the body, not the arch)
        assert abs(expected[0] - whole[0]) * spacing[0] < 6.0, lvl
        assert (whole[1] - expected[1]) * spacing[1] > 5.0, lvl


def test_analyze_backend_missing_is_a_clear_error(shared_data, tmp_path):
    if totalseg_backend.available():
        pytest.skip("TotalSegmentator is installed here: the refusal cannot be shown")
    ct = shared_data / "crop_T12-L2" / "ct.nii.gz"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", "analyze", str(ct), "--out", str(out),
                           "--backend", "totalsegmentator", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "--backend totalsegmentator needs the 'totalsegmentator' package" in proc.stderr
    assert not (out / "results.json").exists()
    # the library path says the same (pipeline.analyze without labels, as the Slicer module calls it)
    volume = read_ct(ct)
    with pytest.raises(ModelError, match="pip install TotalSegmentator"):
        pipeline.analyze(volume, None, pipeline.AnalysisOptions(segmentation_backend="totalsegmentator"))


def test_unknown_backend_is_refused(shared_data):
    volume = read_ct(shared_data / "crop_T12-L2" / "ct.nii.gz")
    with pytest.raises(InputError, match="segmentation backend 'nnunet'"):  # refused with the settings
        pipeline.AnalysisOptions(segmentation_backend="nnunet")
    with pytest.raises(ModelError, match="unknown segmentation backend"):  # and by the models themselves
        segment(volume, backend="nnunet")
