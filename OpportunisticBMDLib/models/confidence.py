"""Per-level confidence of the model's labels, in 0..1: how sure the naming is, how sure the voxels are.

``naming_confidence`` is a documented rule on the naming evidence (:mod:`.naming`), not a probability:

- the evidence of the whole spine: both anchors (sacrum -> L5, lowest rib-bearing vertebra -> T12) seen
  and agreeing :data:`BOTH_ANCHORS`; one anchor confirmed (the sacrum, or the ribs with a rib-free
  vertebra below them) :data:`ONE_ANCHOR`; the ribs alone unconfirmed :data:`UNCONFIRMED`; the iliac
  crests only :data:`CREST_ONLY`; anchors that disagree :data:`DISAGREE`; no anchor 0;
- times :data:`PER_LEVEL_FROM_ANCHOR` for each vertebra between the level and the nearest anchored one
  (levels between two agreeing anchors are bracketed: no loss), since one missed or extra vertebra on
  the way misnames every level beyond it;
- times :data:`STRUCTURE_FLAG_FACTOR` when the naming saw the spine's structure go wrong (a vertebra
  missed, two merged, bodies taken from the whole column).

``segmentation_confidence`` is the mean, over the level's voxels on the model grid, of the network's
largest class probability there (softmax): 1 when every voxel was sure, lower where the network hesitated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..labels import LABELS
from .naming import Naming

# Design choices, ordered as the evidence: two agreeing anchors are counted from both ends; one anchor
# is wrong with a transitional vertebra (lumbosacral transitional vertebrae in 4-30 % of people, Konin &
# Walz 2010, AJNR 31:1778) or a missed 12th rib; an iliac crest line is L4 +- 1 level
# (Chakraverty et al. 2007, Clin Anat 20:759).
BOTH_ANCHORS = 0.95
ONE_ANCHOR = 0.8
UNCONFIRMED = 0.45
CREST_ONLY = 0.35
DISAGREE = 0.25
PER_LEVEL_FROM_ANCHOR = 0.92
STRUCTURE_FLAG_FACTOR = 0.5
STRUCTURE_CODES = frozenset({"vertebra_missed", "vertebra_split", "vertebrae_from_spine_column"})


def _evidence(named: Naming) -> float:
    codes = {q["code"] for q in named.qc}
    if named.method == "none" or not named.details.get("anchor_seeds"):
        return 0.0
    if "level_naming_disagree" in codes:
        return DISAGREE
    if named.method == "sacrum+ribs":
        return BOTH_ANCHORS
    if named.method == "iliac-crest":
        return CREST_ONLY
    return ONE_ANCHOR if named.confident else UNCONFIRMED


def naming_confidence(named: Naming) -> dict[str, float]:
    """Level -> naming confidence (see the module docstring)."""
    base = _evidence(named)
    if any(q["code"] in STRUCTURE_CODES for q in named.qc):
        base *= STRUCTURE_FLAG_FACTOR
    anchors = named.details.get("anchor_seeds") or []
    out: dict[str, float] = {}
    for m, level in enumerate(named.details.get("levels") or []):
        if not level or level not in named.centres_kji:
            continue
        if len(anchors) == 2 and anchors[0] <= m <= anchors[1]:
            steps = 0
        else:
            steps = min(abs(m - a) for a in anchors) if anchors else 0
        out[level] = round(float(base * PER_LEVEL_FROM_ANCHOR**steps), 3)
    return out


def segmentation_confidence(probs: torch.Tensor, instances: np.ndarray) -> dict[str, float]:
    """Level -> mean largest class probability over the level's model-grid voxels."""
    present = [int(v) for v in np.unique(instances) if v]
    if not present:
        return {}
    top = probs.max(dim=0).values.numpy()
    names = {v: k.split("_", 1)[1] for k, v in LABELS.items() if k.startswith("vertebra_")}
    return {names[v]: round(float(top[instances == v].mean()), 3) for v in present}


def level_confidence(named: Naming, probs: torch.Tensor) -> dict[str, dict[str, Any]]:
    """``{level: {"naming": x, "segmentation": y}}`` for every level the model named."""
    naming_c = naming_confidence(named)
    seg_c = segmentation_confidence(probs, named.instances)
    return {lvl: {"naming": naming_c.get(lvl, 0.0), "segmentation": seg_c.get(lvl)} for lvl in seg_c}
