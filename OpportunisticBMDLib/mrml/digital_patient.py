"""A digital patient (:func:`..phantom.digital_patient`) put into the scene as a CT node and its label
segmentation: the Slicer module's Sample Data entry and "Load digital patient" button, its self-test and
``obmd bench recompute``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .labelmaps import labels_to_segmentation
from .volumes import node_from_volume


def load_digital_patient(seed: int = 0, work_dir: str | Path | None = None, region: str = "torso") -> tuple[Any, Any]:
    """Digital patient ``seed`` in ``slicer.mrmlScene``: (CT volume node, label segmentation).
    ``region``: "torso" (spine and hips), "spine" (smaller, faster) or "hip"; ``work_dir``: also write the
    patient's files there (as ``obmd phantom --out``)."""
    from ..phantom import digital_patient

    phantom = digital_patient(seed, region, write_to=work_dir)
    name = f"Digital patient {seed}"
    volume_node = node_from_volume(phantom.ct, name=name)  # its header (kVp, age, sex) as node attributes
    seg_node = labels_to_segmentation(phantom.labels, volume_node, name=f"{name} labels")
    return volume_node, seg_node
