"""Adapter for the phantom generator's hip truth hook (``phantom/truth.py: add_hip_abmd_truth``)."""

from __future__ import annotations

from ..volume import Volume
from .truth import hip_truth


def hip_abmd_truth(density: Volume, labels: Volume, truth: dict) -> dict:
    """``{side: {region: {abmd_g_cm2, ...}, ...}}`` from the phantom's density map and truth geometry."""
    return hip_truth(density, labels, truth.get("hip", {}))
