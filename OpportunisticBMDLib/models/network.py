"""The segmentation + keypoint network: a MONAI 3D residual U-Net with one extra heatmap channel.

Output channels: ``N_CLASSES`` softmax logits (see :mod:`.classes`) followed by one logit whose
sigmoid is the vertebral-body-centre heatmap (the keypoint head).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet

from .classes import N_CLASSES

DEFAULT_CONFIG: dict[str, Any] = {
    "architecture": "monai.UNet",
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
    "n_classes": N_CLASSES,
}


def build_network(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """The residual U-Net described by ``config`` (defaults: :data:`DEFAULT_CONFIG`)."""
    cfg = {**DEFAULT_CONFIG, **(config or {})}
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=int(cfg["n_classes"]) + 1,
        channels=tuple(cfg["channels"]),
        strides=tuple(cfg["strides"]),
        num_res_units=int(cfg["num_res_units"]),
        norm=cfg["norm"],
    )


def split_output(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits, heatmap logit) from the network output (B, C+1, ...)."""
    return logits[:, :-1], logits[:, -1:]
