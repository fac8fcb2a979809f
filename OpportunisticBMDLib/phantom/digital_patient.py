"""One digital patient as the apps show it: generated in memory from its seed with ``obmd phantom``'s
default options, its CT carrying the header a scan of that patient would (what ``obmd phantom`` writes as
``ct.json``: kVp, age, sex). Used by the Slicer module (Sample Data, "Load digital patient"), its
self-test and the browser app, so that none of them goes through the command line."""

from __future__ import annotations

from pathlib import Path

from .generator import generate_phantom, header_of, write_phantom
from .options import Phantom, PhantomOptions


def digital_patient(
    seed: int, region: str = "torso", spacing_mm: float | None = None, write_to: str | Path | None = None
) -> Phantom:
    """Digital patient ``seed`` (CT, true labels of our schema, true density, truth).

    ``region``: "torso" (spine and hips), "spine" (smaller, faster), "hip" or "esp"; ``spacing_mm``:
    isotropic voxel size (default: the generator's, as ``obmd phantom``); ``write_to``: also write the
    files ``obmd phantom --out`` writes there."""
    from ..io import header_metadata

    options = PhantomOptions(region=region)
    if spacing_mm:
        options.spacing_mm = (float(spacing_mm),) * 3
    phantom = generate_phantom(int(seed), options)
    if write_to is not None:
        write_phantom(phantom, write_to)
    phantom.ct.metadata.update(header_metadata(header_of(phantom.truth)))
    return phantom
