"""TotalSegmentator label mapping on the shared outputs, and the model output files (labels, keypoints, markups)."""

from __future__ import annotations

import json

import numpy as np

from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.models.outputs import write_model_outputs
from OpportunisticBMDLib.models.totalseg_backend import labels_from_totalseg


def test_totalseg_mapping_and_outputs(shared_data, tmp_path):
    ct = read_ct(shared_data / "ct.nii.gz")
    total = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct).array
    labels, keypoints = labels_from_totalseg(ct, total)
    # TotalSegmentator ids: 31 = L1, 76 = femur_right, 88 = iliopsoas_left (label_maps.json)
    assert ((total == 31) == (labels.array == LABELS["vertebra_L1"])).all()
    assert ((total == 76) == (labels.array == LABELS["femur_right"])).all()
    assert ((total == 88) == (labels.array == LABELS["psoas_left"])).all()
    levels = keypoints["levels"]
    assert {"T12", "L1", "L2", "L3", "L4", "L5"} <= set(levels)
    z = [levels[lvl]["position_lps_mm"][2] for lvl in ("L5", "L4", "L3", "L2", "L1", "T12")]
    assert all(b - a > 20 for a, b in zip(z, z[1:], strict=False))  # ordered upwards, a vertebra apart
    written = write_model_outputs(labels, keypoints, ct, tmp_path)
    back = read_labels(written["labels"], like=ct).array
    assert np.array_equal(back, labels.array)
    assert json.loads(written["labels_table"].read_text())["vertebra_L1"] == LABELS["vertebra_L1"]
    markups = json.loads(written["keypoints_markups"].read_text())["markups"][0]
    assert markups["coordinateSystem"] == "LPS"
    l1 = next(p for p in markups["controlPoints"] if p["label"] == "L1")
    assert l1["position"] == levels["L1"]["position_lps_mm"]
