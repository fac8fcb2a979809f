"""Recompute's measuring step: what :meth:`.logic.BMDLogic.prepare_recompute` read from the scene, measured
again without touching MRML (numpy only, so a worker thread may run it), with the hip redone or carried
over and the model's naming evidence carried while its vertebra labels are unedited."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import validity
from ..settings import AnalysisOptions
from ..volume import Volume


@dataclass
class RecomputeJob:
    """What :meth:`BMDLogic.prepare_recompute` read from the scene; :meth:`measure` touches no MRML object
    (numpy only), so it may run in a worker thread."""

    ct: Volume
    rois: dict[str, np.ndarray]
    labels: Volume | None
    options: AnalysisOptions
    previous: dict | None  # the results the table held (the last Analyze or Recompute)
    recompute_hip: bool | None
    volume_node: Any
    table_node: Any
    roi_segmentation_node: Any
    labels_segmentation_node: Any
    model_naming: dict | None = None  # the model's naming evidence, while its vertebra labels are unedited
    hip_recomputed: bool = False

    def measure(self) -> Any:
        """``pipeline.measure`` on the ROIs (with the model's naming evidence carried over), then the hip
        (redone or carried over with its QC)."""
        from .. import pipeline

        result = pipeline.measure(self.ct, self.rois, self.options, labels=self.labels, hip=False)
        if self.model_naming:
            _carry_model_naming(result.results, self.model_naming)
        self.hip_recomputed = _hip_after_measure(result, self.previous, self.ct, self.options,
                                                 recompute=self.recompute_hip)
        return result


def model_naming_evidence(previous: dict | None, labels_edited: bool) -> dict | None:
    """What the last Analyze knew about the model's level naming (its naming flags, per-level confidences),
    or None when the labels were not the model's or a user has edited a vertebra since (the naming is then
    theirs). Recompute measures labels read back from the scene, which carry none of it: without this an
    uncertain naming would back a category after a Recompute with no edit."""
    from ..pipeline import MODEL_LABELS_SOURCE

    if not previous or labels_edited or (previous.get("input") or {}).get("labels_source") != MODEL_LABELS_SOURCE:
        return None
    levels = (previous.get("spine") or {}).get("levels") or {}
    return {"qc": [q for q in previous.get("qc") or [] if q.get("code") in validity.NAMING_UNCERTAIN_CODES],
            "levels": {lvl: {key: entry.get(key) for key in ("naming_confidence", "segmentation_confidence")}
                       for lvl, entry in levels.items()}}


def _carry_model_naming(results: dict, evidence: dict) -> None:
    results["qc"] = list(evidence["qc"]) + list(results.get("qc") or [])
    for level, entry in (results.get("spine") or {}).get("levels", {}).items():
        entry.update(evidence["levels"].get(level) or {})
    from ..pipeline import MODEL_LABELS_SOURCE

    results.setdefault("input", {})["labels_source"] = MODEL_LABELS_SOURCE
    validity.finalize(results)


def _hip_after_measure(result: Any, previous: dict | None, ct: Volume, options: AnalysisOptions,
                       recompute: bool | None) -> bool:
    """After ``pipeline.measure(hip=False)``: redo the hip (``recompute``; None: when the calibration changed since the
    previous results -- its line or the compositions given, which under a pad move the hip's anchor and
    not the line -- or there are none) or carry the previous hip results over, their QC flags with them
    (a T-score must never lose the warnings that qualify it). True when the hip was measured again."""
    changed = _calibration_inputs(previous or {}) != _calibration_inputs(result.results)
    if recompute is None:
        recompute = not previous or changed
    if recompute and result.labels is not None:
        from .. import pipeline
        from ..hip.site import femur_in_view

        if femur_in_view(result.labels):
            pipeline.add_hip(result, ct, options.with_header_defaults(ct.metadata))
            validity.finalize(result.results)
            return True
    if not previous or not previous.get("hip"):
        return False
    result.results["hip"] = previous["hip"]
    qc = result.results.setdefault("qc", [])
    for block in previous["hip"].values():  # pipeline.add_hip put each side's flags in the scan's QC list too
        if isinstance(block, dict):
            qc.extend(block.get("qc") or [])
    if changed:
        qc.append({
            "code": "hip_not_recomputed", "severity": "info",
            "message": "Hip aBMD is from the last Analyze, before the calibration changed: Analyze again to update it.",
        })
    validity.finalize(result.results)
    return False


def _calibration_inputs(results: dict) -> tuple[dict, dict]:
    """What the hip's numbers depend on from the calibration: its line and the parameters given."""
    cal = results.get("calibration") or {}
    return ({k: cal.get(k) for k in ("slope", "intercept")},
            dict((results.get("options") or {}).get("calibration_params") or {}))

