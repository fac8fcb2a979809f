"""Training smoke run on a tiny nnU-Net raw dataset (checkpoint, log, resume), and weight shipping checks."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_models_naming import SPACING_MM, spine_class_map

from OpportunisticBMDLib.cli import main
from OpportunisticBMDLib.errors import ModelError
from OpportunisticBMDLib.labels import LABELS
from OpportunisticBMDLib.models import naming
from OpportunisticBMDLib.models.network import build_network
from OpportunisticBMDLib.models.weights import export_model, load_model, read_manifest, save_weights, sha256

HU_OF_LABEL = {0: -1000, LABELS["body"]: 40, LABELS["sacrum"]: 250, LABELS["intervertebral_disc"]: 80,
               LABELS["psoas_left"]: 50, LABELS["psoas_right"]: 50, LABELS["femur_left"]: 300}


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # LPS on disk: identity orientation after reading
    sitk.WriteImage(image, str(path))


def tiny_nnunet_dataset(root: Path, n_cases: int = 2) -> Path:
    cls, _ = spine_class_map()
    labels = naming.to_schema(cls, naming.name_levels(cls, None, SPACING_MM))[:, ::-1, ::-1].copy()
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for n in range(n_cases):
        hu = np.full(labels.shape, 40.0, np.float32)
        for label_id, value in HU_OF_LABEL.items():
            hu[labels == label_id] = value
        hu[(labels >= 1) & (labels <= 8)] = 200
        hu += rng.normal(0, 10, hu.shape).astype(np.float32)
        _write(hu.astype(np.int16), root / "imagesTr" / f"case_{n:03d}_0000.nii.gz")
        _write(labels.astype(np.uint8), root / "labelsTr" / f"case_{n:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                   "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return root


def test_training_smoke_run_checkpoints_and_resumes(tmp_path):
    dataset = tiny_nnunet_dataset(tmp_path / "Dataset001_tiny")
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--dataset", str(dataset), "--use-images", "--iters-per-epoch", "2",
            "--batch-size", "1", "--patch-size", "32", "--val-samples", "1", "--threads", "1"]
    t0 = time.perf_counter()
    assert main([*args, "--epochs", "1"]) == 0
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and state["iteration"] == 2
    assert (out / "best.safetensors").is_file()
    assert main([*args, "--epochs", "2", "--export", str(tmp_path / "models")]) == 0  # resumes at epoch 1
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert int(rows[-1]["iteration"]) == 4
    assert 0.0 <= float(rows[-1]["val_dice_mean"]) <= 1.0
    net, entry = load_model(directory=tmp_path / "models")
    assert entry["sha256"] == sha256(tmp_path / "models" / entry["file"])
    assert time.perf_counter() - t0 < 60


def test_corrupted_or_replaced_weights_are_refused(tmp_path):
    weights = tmp_path / "w.safetensors"
    save_weights(build_network(), weights)
    export_model(weights, tmp_path / "models")
    load_model(directory=tmp_path / "models")  # intact: loads
    target = tmp_path / "models" / read_manifest(tmp_path / "models")["models"][0]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(directory=tmp_path / "models")
    target.write_bytes(b"not a safetensors file")
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    manifest["models"][0]["sha256"] = sha256(target)  # hash matches, content is garbage
    (tmp_path / "models" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="unreadable"):
        load_model(directory=tmp_path / "models")
    with pytest.raises(ModelError, match="manifest"):
        load_model(directory=tmp_path / "nothing-here")


def test_shipped_manifest_verifies():
    manifest = read_manifest()
    entry = manifest["models"][0]
    for key in ("name", "version", "sha256", "input_spacing_mm", "outputs", "training", "validation",
                "intensity_normalisation"):
        assert key in entry
    net, _ = load_model(entry["name"])
    assert sum(p.numel() for p in net.parameters()) < 5_000_000


def test_template_bundle_round_trip_and_training_from_it(tmp_path):
    """--save-templates writes train/validation templates to one .npz; --templates trains from it."""
    from OpportunisticBMDLib.models.templates import load_bundle

    dataset = tiny_nnunet_dataset(tmp_path / "Dataset002_tiny", n_cases=3)
    bundle = tmp_path / "bundle.npz"
    assert main(["train", "--out", str(tmp_path / "unused"), "--dataset", str(dataset), "--use-images",
                 "--save-templates", str(bundle)]) == 0
    templates = load_bundle(bundle)
    assert [t.split for t in templates].count("val") == 1 and len(templates) == 3
    assert all(t.image_hu is not None and t.tissue.shape == t.target.shape == t.heat.shape for t in templates)
    assert all(0.0 <= float(t.heat.min()) and float(t.heat.max()) <= 1.0 for t in templates)
    assert max(float(t.heat.max()) for t in templates) > 0.5  # the body-centre peaks survived the uint8 steps
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--templates", str(bundle), "--epochs", "1", "--iters-per-epoch", "1",
                 "--batch-size", "1", "--patch-size", "32", "--val-samples", "1", "--threads", "1",
                 "--channels", "8,16,32,64", "--export", str(tmp_path / "models")]) == 0
    net, entry = load_model(directory=tmp_path / "models")
    assert entry["network"]["channels"] == [8, 16, 32, 64]  # the trained architecture, not the default
