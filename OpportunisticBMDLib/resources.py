"""Where the shipped resources (model weights, manifests, sample-data manifests) live.

Source checkout / editable install: ``<repo>/Resources``. Slicer extension install:
``<qt-scripted-modules>/Resources/OpportunisticBMD`` (see Resources/CMakeLists.txt).
``OBMD_RESOURCES`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The Resources folder holding ``Models/`` and the manifests."""
    override = os.environ.get("OBMD_RESOURCES")
    candidates = [Path(override)] if override else []
    candidates += [_PACKAGE_DIR.parent / "Resources", _PACKAGE_DIR.parent / "Resources" / "OpportunisticBMD"]
    for candidate in candidates:
        if (candidate / "Models").is_dir() or (candidate / "OpportunisticBMD.png").is_file():
            return candidate
    return candidates[0]


def models_dir() -> Path:
    return resources_dir() / "Models"
