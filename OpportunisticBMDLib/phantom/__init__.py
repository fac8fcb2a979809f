"""Digital patients with known truth: anatomy from signed distance fields, tissue HU from X-ray physics
(:mod:`OpportunisticBMDLib.materials`), scanner effects, and ``truth.json`` mirroring results.json."""

from .digital_patient import digital_patient
from .generator import generate_phantom, write_phantom
from .options import Phantom, PhantomOptions

__all__ = ["Phantom", "PhantomOptions", "digital_patient", "generate_phantom", "write_phantom"]
