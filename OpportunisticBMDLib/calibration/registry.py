"""The calibration methods by name: each method's module registers its function with its title, help
text, what its numbers rest on and its settings check; every front end (CLI flags and help, Slicer
module, web app, benches) reads :data:`CALIBRATIONS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..settings import DEFAULT_CALIBRATION, AnalysisOptions
from ..volume import Volume
from .types import Calibration

# Where a method's line comes from; the rules that depend on it (qc, validity, the hip's anchor, the text
# report, the benches' phantomless defaults) ask the registry, never a list of names.
LINE_FROM_TISSUES = "tissues"  # the patient's own muscle and fat (phantomless)
LINE_FROM_PHANTOM = "phantom"  # a phantom scanned on the same protocol (an external line)
LINE_FROM_PAD = "pad"  # a calibration pad scanned with the patient (an external line in the scan)
LINE_FROM_CHOICE = "choice"  # chooses another method per scan (its results name the chosen one)
LINE_FROM_NONE = "none"  # no line: HU only

MeasureFunction = Callable[[Volume, dict[str, np.ndarray], Volume | None, AnalysisOptions], Calibration]
SettingsCheck = Callable[[AnalysisOptions], None]


@dataclass(frozen=True)
class CalibrationMethod:
    name: str
    title: str  # a drop-down entry
    help: str  # what it uses, for the command line's help
    validation: str  # what its numbers rest on (shown under the title)
    measure: MeasureFunction
    check: SettingsCheck | None = None  # raises InputError on settings it cannot work with, before any step
    needs_phantom_line: bool = False  # needs a scanned phantom's line: only front ends that take one offer it
    line_from: str = LINE_FROM_TISSUES  # one of the LINE_FROM_* above
    # expected vBMD bias when paraspinal muscle replaces the psoas (qc.muscle_reference_flags): (real CT, digital
    # patients' (mean, min, max)); None when the method's line does not rest on a muscle
    paraspinal_bias_mg_cm3: tuple[float, tuple[float, float, float]] | None = None

    def __call__(self, ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None,
                 options: AnalysisOptions) -> Calibration:
        return self.measure(ct, rois, labels, options)


CALIBRATIONS: dict[str, CalibrationMethod] = {}  # in registration order, the default first


def register_calibration(name: str, *, title: str, help: str, validation: str, check: SettingsCheck | None = None,
                         needs_phantom_line: bool = False, line_from: str = LINE_FROM_TISSUES,
                         paraspinal_bias_mg_cm3: tuple[float, tuple[float, float, float]] | None = None,
                         ) -> Callable[[MeasureFunction], MeasureFunction]:
    """Decorator adding a method to :data:`CALIBRATIONS` under ``name``."""

    def decorate(func: MeasureFunction) -> MeasureFunction:
        CALIBRATIONS[name] = CalibrationMethod(name, title, help, validation, func, check, needs_phantom_line,
                                               line_from, paraspinal_bias_mg_cm3)
        if DEFAULT_CALIBRATION in CALIBRATIONS:  # the default heads every list a front end shows
            ordered = sorted(CALIBRATIONS.items(), key=lambda item: item[0] != DEFAULT_CALIBRATION)
            CALIBRATIONS.clear()
            CALIBRATIONS.update(ordered)
        return func

    return decorate


def method(name: str) -> CalibrationMethod:
    found = CALIBRATIONS.get(name)
    if found is None:
        raise InputError(f"unknown calibration method {name!r}; choose from {', '.join(CALIBRATIONS)}")
    return found


def methods_with_line_from(*sources: str) -> tuple[str, ...]:
    """Names of the registered methods whose line comes from one of ``sources`` (LINE_FROM_*)."""
    return tuple(m.name for m in CALIBRATIONS.values() if m.line_from in sources)


def check_options(options: AnalysisOptions) -> None:
    """Fail early (before any segmentation) on an unknown method or settings the method cannot use."""
    chosen = method(options.calibration)
    if chosen.check is not None:
        chosen.check(options)


def calibrate(ct: Volume, rois: dict[str, np.ndarray], labels: Volume | None, options: AnalysisOptions) -> Calibration:
    """Run the method ``options.calibration``; unknown names raise :class:`InputError`."""
    return method(options.calibration)(ct, rois, labels, options)


def cli_help() -> str:
    """``--calibration`` help: each method with what it uses."""
    return ", ".join(f"{m.name} ({m.help})" for m in CALIBRATIONS.values())
