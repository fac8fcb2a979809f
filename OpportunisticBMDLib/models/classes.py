"""The network's own class table and its mapping to and from the library schema.

The network predicts side-agnostic classes ("vertebra", "femur", ...): left/right is decided from
the spine's midline and vertebra levels are named from anatomy anchors (sacrum, lowest ribs) in
:mod:`.naming`. Fewer, larger classes train faster on a CPU and make naming checkable.
"""

from __future__ import annotations

import numpy as np

from ..labels import LABELS, VERTEBRA_LEVELS

# Network class id -> name. Index = output channel (softmax); one more channel is the keypoint heatmap.
NET_CLASSES: tuple[str, ...] = (
    "background",  # outside the body
    "body",  # other tissue inside the body outline (organs, vessels, visceral fat, other muscle)
    "subcutaneous_fat",
    "vertebra",
    "intervertebral_disc",
    "sacrum",
    "rib",
    "femur",
    "hip",
    "psoas",
    "paraspinal",
)
NET_INDEX: dict[str, int] = {name: idx for idx, name in enumerate(NET_CLASSES)}
N_CLASSES = len(NET_CLASSES)
SIDED = ("femur", "hip", "psoas", "paraspinal")

# Library schema name -> network class (names not listed map to "body" when inside the body).
_OURS_TO_NET: dict[str, str] = {
    **{f"vertebra_{lvl}": "vertebra" for lvl in VERTEBRA_LEVELS},
    "sacrum": "sacrum",
    "rib_left_11": "rib",
    "rib_right_11": "rib",
    "rib_left_12": "rib",
    "rib_right_12": "rib",
    "ribs_other": "rib",
    "intervertebral_disc": "intervertebral_disc",
    "femur_left": "femur",
    "femur_right": "femur",
    "hip_left": "hip",
    "hip_right": "hip",
    "psoas_left": "psoas",
    "psoas_right": "psoas",
    "paraspinal_left": "paraspinal",
    "paraspinal_right": "paraspinal",
    "subcutaneous_fat": "subcutaneous_fat",
    "table": "background",
    "background": "background",
}


def ours_to_net_lut(max_id: int = 255) -> np.ndarray:
    """Lookup table: library label id -> network class id (unknown non-zero ids -> "body")."""
    lut = np.full(max_id + 1, NET_INDEX["body"], dtype=np.int64)
    for name, our_id in LABELS.items():
        lut[our_id] = NET_INDEX[_OURS_TO_NET.get(name, "body")]
    return lut


def ours_to_net(labels: np.ndarray) -> np.ndarray:
    """Map a library label array to network classes."""
    lut = ours_to_net_lut(max(int(labels.max()), max(LABELS.values())))
    return lut[np.clip(labels, 0, None).astype(np.int64)]
