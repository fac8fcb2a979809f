"""The true hip aBMD of a digital patient (``phantom/generator.py`` adds it to truth.json): the hip method on
the phantom's own density map and true axes (:func:`.truth.hip_truth`)."""

from __future__ import annotations

from ..volume import Volume
from .truth import hip_truth


def hip_abmd_truth(density: Volume, labels: Volume, truth: dict) -> dict:
    """``{side: {region: {abmd_g_cm2, ...}, ...}}`` from the phantom's density map and truth geometry."""
    return hip_truth(density, labels, truth.get("hip", {}))
