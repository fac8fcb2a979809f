"""Optional backend: TotalSegmentator (when the ``totalsegmentator`` package and its weights are
installed), its ``total`` labels mapped to the library schema with :func:`labels.totalseg_to_ours`."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..labels import LABELS, VERTEBRA_LEVELS, totalseg_to_ours
from ..progress import Progress, no_progress
from ..volume import Volume
from . import keypoints as kp

MISSING_MESSAGE = ("--backend totalsegmentator needs the 'totalsegmentator' package, which is not installed "
                   "(pip install TotalSegmentator; it fetches its weights on first use); use the built-in model "
                   "(--backend obmd, the default) or pass a label map with --seg LABELS")


def available() -> bool:
    return importlib.util.find_spec("totalsegmentator") is not None


def labels_from_totalseg(ct: Volume, total_labels: np.ndarray) -> tuple[Volume, dict[str, Any]]:
    """Library-schema labels and body-centre keypoints from a TotalSegmentator ``total`` array on the CT grid."""
    ours = totalseg_to_ours(total_labels).astype(np.int16)
    centres = kp.level_centres(ours, {lvl: LABELS[f"vertebra_{lvl}"] for lvl in VERTEBRA_LEVELS})
    levels = {lvl: {"position_lps_mm": [round(float(v), 2) for v in ct.index_to_lps_mm(c)],
                    "index_kji": [round(float(v), 2) for v in c], "heatmap": None} for lvl, c in centres.items()}
    keypoints = {"model": {"name": "totalsegmentator", "version": None}, "levels": levels,
                 "naming": {"method": "totalsegmentator", "confident": True, "levels_bottom_up": list(centres)[::-1]},
                 "qc": []}
    return ct.like(ours, source="totalsegmentator"), keypoints


def segment_totalsegmentator(ct: Volume, device: str = "cpu", progress: Progress = no_progress,
                             fast: bool = True) -> tuple[Volume, dict[str, Any]]:
    """Run TotalSegmentator's ``total`` task on ``ct`` (needs the package and its downloaded weights)."""
    if not available():
        raise ModelError(MISSING_MESSAGE)
    from totalsegmentator.python_api import totalsegmentator

    from ..io import read_labels, write_like

    progress(0.05, "TotalSegmentator")
    with tempfile.TemporaryDirectory() as tmp:
        src = write_like(ct.array.astype(np.int16), ct, Path(tmp) / "ct.nii.gz")
        out = Path(tmp) / "seg.nii.gz"
        totalsegmentator(str(src), str(out), ml=True, fast=fast, device="gpu" if device.startswith("cuda") else "cpu",
                         quiet=True)
        total = read_labels(out, like=ct).array
    progress(1.0, "TotalSegmentator done")
    return labels_from_totalseg(ct, total)
