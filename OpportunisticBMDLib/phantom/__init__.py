"""Digital patients with known truth: anatomy from signed distance fields, tissue HU from X-ray physics
(:mod:`OpportunisticBMDLib.materials`), scanner effects, and ``truth.json`` mirroring results.json."""

from .generator import generate_phantom, write_phantom
from .options import Phantom, PhantomOptions

__all__ = ["Phantom", "PhantomOptions", "generate_phantom", "write_phantom"]
