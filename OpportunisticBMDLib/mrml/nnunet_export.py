"""A corrected case appended to an nnU-Net v2 raw dataset folder (``obmd train``'s input): the CT and its
label map of our schema on the CT's own grid, and ``dataset.json``. No slicer import: it works on
:class:`..volume.Volume` objects (the Logic reads them from the scene)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..io import write_like
from ..labels import LABELS
from ..volume import Volume


def export_training_case(
    ct: Volume, labels: Volume, dataset_dir: str | Path, name: str, case_id: str | None = None
) -> dict[str, Path]:
    """Append ``ct`` and ``labels`` (on its grid) to ``dataset_dir``: ``imagesTr/<case>_0000.nii.gz``,
    ``labelsTr/<case>.nii.gz`` and ``dataset.json`` (``labels`` = :data:`..labels.LABELS`, ``numTraining``
    = cases present). ``case_id`` defaults to ``name`` (letters and digits) numbered ``_000``, ``_001``...
    The caller checks that ``labels`` holds a label (it knows what to call the segmentation that has none)."""
    dataset_dir = Path(dataset_dir)
    case_id = case_id or _next_case_id(dataset_dir, name)
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", case_id):
        raise ValueError(f"case id {case_id!r}: use letters, digits, '_' and '-' only")
    image_path = dataset_dir / "imagesTr" / f"{case_id}_0000.nii.gz"
    label_path = dataset_dir / "labelsTr" / f"{case_id}.nii.gz"
    if image_path.exists() or label_path.exists():
        raise FileExistsError(f"{case_id}: already in {dataset_dir}")
    ct_out = ct.like(ct.array)
    ct_out.metadata = {}  # not the input path: write_like refuses to overwrite an input only
    write_like(np.round(ct.array).astype(np.int16), ct_out, image_path)
    write_like(labels.array.astype(np.uint8), ct_out, label_path)
    dataset_json = _update_dataset_json(dataset_dir)
    return {"image": image_path, "label": label_path, "dataset_json": dataset_json}


def _next_case_id(dataset_dir: Path, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "", name) or "case"
    existing = {p.name[: -len(".nii.gz")] for p in (dataset_dir / "labelsTr").glob("*.nii.gz")}
    n = 0
    while f"{stem}_{n:03d}" in existing:
        n += 1
    return f"{stem}_{n:03d}"


def _update_dataset_json(dataset_dir: Path) -> Path:
    path = dataset_dir / "dataset.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("name", dataset_dir.name)
    data.setdefault("description", "OpportunisticBMD training cases; labels in the library schema (labels.py)")
    data["channel_names"] = {"0": "CT"}
    data["labels"] = dict(LABELS)
    data["file_ending"] = ".nii.gz"
    data["numTraining"] = len(list((dataset_dir / "labelsTr").glob("*.nii.gz")))
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path

