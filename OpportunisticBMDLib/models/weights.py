"""Shipped weights: safetensors files (never pickle) listed in ``Resources/Models/manifest.json``.

The manifest records, per model, the file, its SHA-256, the network config, input spacing,
intensity normalisation, class table, training description and validation metrics. The loader
refuses a missing, corrupted or hash-mismatched file with :class:`ModelError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ModelError
from ..resources import models_dir
from .network import build_network

MANIFEST_NAME = "manifest.json"
DEFAULT_MODEL = "obmd-seg"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    directory = Path(directory) if directory else models_dir()
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"no model manifest at {path}: the shipped models are missing (reinstall, or pass --seg)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: model manifest is not valid JSON ({exc.msg})") from exc


def model_entry(name: str = DEFAULT_MODEL, directory: Path | None = None) -> dict[str, Any]:
    manifest = read_manifest(directory)
    for entry in manifest.get("models", []):
        if entry.get("name") == name:
            return entry
    raise ModelError(f"model {name!r} is not in the model manifest")


def load_model(name: str = DEFAULT_MODEL, directory: Path | None = None, device: str = "cpu"
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The verified network (eval mode) and its manifest entry."""
    directory = Path(directory) if directory else models_dir()
    entry = model_entry(name, directory)
    path = directory / entry["file"]
    if not path.is_file():
        raise ModelError(f"model weights missing: {path}")
    actual = sha256(path)
    if actual != entry.get("sha256"):
        raise ModelError(f"{path.name}: SHA-256 {actual[:12]}… does not match the manifest: corrupted or replaced file")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path.name}: unreadable weights ({exc})") from exc
    net = build_network(entry.get("network"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path.name}: weights do not fit the network in the manifest") from exc
    return net.to(device).eval(), entry


def save_weights(net: torch.nn.Module, path: Path, half: bool = False) -> str:
    """Write the network's weights as safetensors (float16 when ``half``: half the size, same
    predictions to well below a voxel's worth); returns their SHA-256."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    save_file(state, str(path))
    return sha256(path)


def write_manifest_entry(directory: Path, entry: dict[str, Any]) -> Path:
    """Insert or replace one model's entry (by name) in the manifest."""
    path = Path(directory) / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {"format": 1, "models": []}
    manifest["models"] = [m for m in manifest.get("models", []) if m.get("name") != entry["name"]] + [entry]
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def export_model(weights: Path, directory: Path, *, name: str = DEFAULT_MODEL, version: str = "0.1.0",
                 network: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
                 validation: dict[str, Any] | None = None, input_spacing_mm: float = 3.0) -> dict[str, Any]:
    """Copy trained safetensors into ``directory`` and record them in its manifest."""
    from safetensors.torch import load_file as _load

    from .classes import NET_CLASSES
    from .network import DEFAULT_CONFIG

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    net = build_network(network)
    net.load_state_dict(_load(str(weights)))
    target = directory / f"{name}.safetensors"
    digest = save_weights(net, target, half=True)
    entry = {
        "name": name,
        "version": version,
        "file": target.name,
        "dtype": "float16",
        "sha256": digest,
        "size_bytes": target.stat().st_size,
        "framework": "pytorch+monai",
        "network": {**DEFAULT_CONFIG, **(network or {})},
        "input_spacing_mm": input_spacing_mm,
        "intensity_normalisation": "x = clip((HU + 1000) / 1000, 0, 3) after box-averaging to the model grid",
        "outputs": {"classes": list(NET_CLASSES), "extra_channels": ["vertebral_body_centre_heatmap (sigmoid)"]},
        "label_mapping": "classes -> library schema (labels.py) by anatomy naming and midline side split "
                         "(OpportunisticBMDLib/models/naming.py)",
        "training": training or {},
        "validation": validation or {},
    }
    write_manifest_entry(directory, entry)
    return entry
