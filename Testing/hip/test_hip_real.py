"""Hip analysis on the shared real CT: the left femur (metal prosthesis) is excluded with a reason,
the right femur is measured with field-of-view QC (both femurs are cut at the bottom)."""

from __future__ import annotations

import numpy as np
import pytest

from OpportunisticBMDLib.hip import analyze_hips
from OpportunisticBMDLib.hip.pictures import save_hip_pictures
from OpportunisticBMDLib.io import read_ct, read_labels
from OpportunisticBMDLib.labels import totalseg_to_ours


class LinearCalibration:
    """A plain HU -> mg/cm^3 line (slope/intercept typical of 120 kVp HA calibration)."""

    method = "test-linear"

    def to_mg_cm3(self, hu):
        return 0.8 * np.asarray(hu, np.float32)


@pytest.fixture(scope="module")
def analysed(shared_data):
    ct = read_ct(shared_data / "ct.nii.gz")
    labels = read_labels(shared_data / "ct_seg_total.nii.gz", like=ct)
    labels = labels.like(totalseg_to_ours(labels.array))
    return ct, analyze_hips(ct, labels, LinearCalibration())


def test_left_excluded_for_metal(analysed):
    _, (results, rois, pictures) = analysed
    left = results["left"]
    assert "metal" in left["excluded_reason"]
    assert left["neck"] is None and left["total_hip"] is None
    assert [q["code"] for q in left["qc"]] == ["hip_metal"]
    assert "left" not in pictures and not any(k.endswith("_left") for k in rois)


def test_right_measured_with_fov_qc(analysed):
    ct, (results, rois, pictures) = analysed
    right = results["right"]
    assert right["excluded_reason"] is None
    assert 0.1 < right["neck"]["abmd_g_cm2"] < 1.5
    assert 2.0 < right["neck"]["area_cm2"] < 10.0
    codes = {q["code"] for q in right["qc"]}
    # The femurs end ~30 mm below the head centre: no lesser trochanter, no shaft, neck cut.
    assert {"hip_lesser_trochanter_outside_fov", "hip_femur_cut_fov", "hip_shaft_not_in_view"} <= codes
    assert right["total_hip"] is None
    assert 110 <= right["neck_shaft_angle_deg"] <= 150
    assert rois["hip_neck_roi_right"].shape == ct.shape and rois["hip_neck_roi_right"].any()


def test_report_png(analysed, tmp_path):
    _, (_, _, pictures) = analysed
    written = save_hip_pictures(pictures, tmp_path)
    png = written["hip_right_png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
