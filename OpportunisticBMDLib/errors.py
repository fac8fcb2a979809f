"""Errors a user can act on: each carries one clear line for the CLI and the GUI."""


class OBMDError(Exception):
    """Base class; ``str(error)`` is the one line shown to the user."""


class InputError(OBMDError):
    """The input file or image cannot be analysed (not CT, bad geometry, unreadable)."""


class SegmentationError(OBMDError):
    """The label map does not match the CT or lacks the structures needed."""


class ModelError(OBMDError):
    """Model weights missing, corrupted (hash mismatch) or incompatible."""
