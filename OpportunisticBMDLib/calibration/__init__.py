"""HU -> mg/cm3 hydroxyapatite: the calibration methods and their registry.

A method is a function ``(ct, rois, labels, options) -> Calibration`` registered in :data:`CALIBRATIONS`
with its title, help and settings check (:mod:`.registry`); ``AnalysisOptions.calibration`` names one.
One module per method: :mod:`.auto` (default), :mod:`.muscle_fat`, :mod:`.internal_multi`, :mod:`.inscan`,
:mod:`.phantom`, :mod:`.hu`; the compositions and beam facts they share are in :mod:`.composition`.
Importing this package registers every method.
"""

from . import muscle_fat, internal_multi, inscan, auto, phantom, hu  # noqa: F401,I001  (registers; this order)
from .registry import CALIBRATIONS, CalibrationMethod, calibrate, check_options, cli_help, method, register_calibration
from .types import Calibration

__all__ = ["CALIBRATIONS", "Calibration", "CalibrationMethod", "calibrate", "check_options", "cli_help", "method",
           "register_calibration"]
