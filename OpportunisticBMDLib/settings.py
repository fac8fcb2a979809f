"""The settings of one analysis, typed, validated once (on construction) and passed down.

:class:`AnalysisOptions` holds what a user chooses (method, cortex margin, patient facts, device...)
and its :class:`CalibrationSettings` what the calibration methods read. The ``obmd analyze`` flags are
defined here beside the types, both ways: :func:`add_arguments` / :meth:`AnalysisOptions.from_args`
read them, :meth:`AnalysisOptions.to_argv` writes them (the Slicer background job runs ``obmd analyze``
with them; model: SlicerNNUnet's ``Parameter.asArgList``). :meth:`AnalysisOptions.with_header_defaults`
resolves the patient's age and sex and the scan's kVp from the CT's header once per analysis; the spine,
the hip and every calibration read the resolved values.

A leaf module: it imports only the standard library, :mod:`.errors` and :mod:`.header`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import InputError
from .header import AGE_RANGE_Y, header_age_years, kvp_from, plausible_age, sex_code

# Cortex removal. The reference study (Radiologic Practice 2024, doi:10.13609/j.cnki.1000-0313.2024.02.019)
# erodes the vertebral body with a sphere of radius 4 voxels; at its ~0.8 mm voxels that is ~3.2 mm, about
# the thickness of the vertebral shell plus the partial-volume band around it (the lumbar cortical shell is
# 0.2-0.5 mm thick: Silva et al., Bone 15:409 (1994); ~3 mm more removes the blur of a ~1 mm kernel).
DEFAULT_EROSION_RADIUS_MM = 3.2
# Compositions a user may give (the patient's own, e.g. from a water-fat MRI), as fractions: every front end
# (CLI, Slicer module, web app) accepts these ranges (design choice: wide enough for any adult psoas --
# Sollmann 2020 saw 4.5 +- 1.5 % and 6.9 +- 2.9 % -- and any marrow, Griffith 2012: 0.3 at 30 y, ~0.6 at 80 y).
PSOAS_FAT_FRACTION_RANGE = (0.0, 0.5)
MARROW_FAT_FRACTION_RANGE = (0.05, 0.95)
BACKENDS = ("obmd", "totalsegmentator")  # segmentation without labels (models/inference.py)
ENERGY_MODELS = ("spectrum", "mono")  # internal-multi's beam families (calibration/internal_multi.py)
SEXES = ("F", "M")
DEFAULT_CALIBRATION = "auto"


@dataclass(frozen=True)
class CalibrationSettings:
    """What the calibration methods read besides the CT; None: not given (the method's default)."""

    file: str | None = None  # phantom: calib.json from ``obmd calibrate-phantom``
    slope: float | None = None  # phantom: mg/cm3 per HU
    intercept: float | None = None  # phantom: mg/cm3
    pad_densities: tuple[float, ...] | None = None  # inscan/auto: the pad rods' HA densities (mg/cm3)
    psoas_fat_fraction: float | None = None  # muscle-fat (and the hip's pad anchor): the patient's own
    marrow_fat_fraction: float | None = None  # the HA scale's marrow base: the patient's own
    kvp: float | None = None  # tube potential; None: from the CT's header (AnalysisOptions.with_header_defaults)
    energy_model: str | None = None  # internal-multi: "spectrum" (None) or "mono"
    robust: bool | None = None  # internal-multi: drop the tissue least consistent with the others (None: yes)
    use_cortical: bool | None = None  # internal-multi: the femoral cortex as a reference tissue (None: no)

    def __post_init__(self) -> None:
        if self.pad_densities is not None:
            try:
                object.__setattr__(self, "pad_densities", tuple(float(v) for v in self.pad_densities))
            except (TypeError, ValueError) as exc:
                raise InputError(f"pad densities {self.pad_densities!r}: numbers in mg/cm3 HA") from exc
        for flag, value, (low, high), example in (
                ("--psoas-fat", self.psoas_fat_fraction, PSOAS_FAT_FRACTION_RANGE, "0.07 for 7 %"),
                ("--marrow-fat", self.marrow_fat_fraction, MARROW_FAT_FRACTION_RANGE, "0.55 for 55 %")):
            if value is not None and not low <= value <= high:
                raise InputError(f"{flag} {value}: a fraction between {low:g} and {high:g} (e.g. {example})")
        if self.energy_model is not None and self.energy_model not in ENERGY_MODELS:
            raise InputError(f"energy model {self.energy_model!r}: one of {', '.join(ENERGY_MODELS)}")

    @property
    def phantom_line_given(self) -> bool:
        return bool(self.file) or self.slope is not None or self.intercept is not None

    def as_dict(self) -> dict[str, Any]:
        """The values given (results.json ``options.calibration_params``)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> CalibrationSettings:
        params = dict(params or {})
        unknown = sorted(set(params) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown calibration setting(s) {', '.join(unknown)}")
        return cls(**params)


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything a user chooses for one analysis (the CT and its labels aside)."""

    calibration: str = DEFAULT_CALIBRATION  # a method of calibration.CALIBRATIONS
    erosion_radius_mm: float = DEFAULT_EROSION_RADIUS_MM  # cortex removal, see the comment above
    muscle_density_mg_cm3: float | None = None  # muscle-fat; None: from materials at the scan kVp
    fat_density_mg_cm3: float | None = None  # muscle-fat; None: from materials at the scan kVp
    calibration_settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    patient_age: float | None = None  # years; None: from the header (with_header_defaults)
    patient_sex: str | None = None  # "F" | "M"; None: from the header
    z_reference: str | None = None  # hip Z-score reference table (JSON, hip/tscores.py); None: built-in rows
    device: str = "cpu"  # for the segmentation models
    segmentation_backend: str = BACKENDS[0]  # without labels: "obmd" (shipped model) | "totalsegmentator"
    # extra cortex margin (mm) on top of erosion_radius_mm for labels whose boundary is uncertain;
    # None: pipeline.MODEL_LABEL_MARGIN_MM for the built-in model's labels, 0 for labels a user or another tool gave
    label_margin_mm: float | None = None

    def __post_init__(self) -> None:
        if self.erosion_radius_mm < 0:
            raise InputError(f"--erosion-mm {self.erosion_radius_mm}: must be >= 0")
        if self.label_margin_mm is not None and self.label_margin_mm < 0:
            raise InputError(f"--label-margin-mm {self.label_margin_mm}: must be >= 0")
        if self.patient_age is not None:
            try:
                age = float(self.patient_age)
            except (TypeError, ValueError):
                age = float("nan")
            if isinstance(self.patient_age, bool) or not plausible_age(age):
                raise InputError(f"--age {self.patient_age}: patient age in years, more than {AGE_RANGE_Y[0]:g} "
                                 f"and at most {AGE_RANGE_Y[1]:g}")
        if self.patient_sex is not None and self.patient_sex not in SEXES:
            raise InputError(f"patient sex {self.patient_sex!r}: F or M")
        if self.segmentation_backend not in BACKENDS:
            raise InputError(f"segmentation backend {self.segmentation_backend!r}: one of {', '.join(BACKENDS)}")

    def with_calibration(self, **changes: Any) -> AnalysisOptions:
        """A copy with ``changes`` to the calibration settings."""
        return replace(self, calibration_settings=replace(self.calibration_settings, **changes))

    def with_header_defaults(self, header: Mapping[str, Any]) -> AnalysisOptions:
        """A copy with the patient's age and sex and the scan's kVp from the CT's header (DICOM, a JSON
        sidecar, or an MRML node's attributes) where the user gave none: the calibration's age-typical
        marrow and psoas fat, its beam and the hip's beam and Z-score then come from the same header.
        The user's values win; a header age outside header.AGE_RANGE_Y is ignored (the age is then unknown)."""
        age = self.patient_age if self.patient_age is not None else header_age_years(header.get("patient_age"))
        sex = sex_code(self.patient_sex) or sex_code(header.get("patient_sex"))
        kvp = self.calibration_settings.kvp if self.calibration_settings.kvp is not None else kvp_from(header)
        if (age, sex, kvp) == (self.patient_age, self.patient_sex, self.calibration_settings.kvp):
            return self
        return replace(self, patient_age=age, patient_sex=sex,
                       calibration_settings=replace(self.calibration_settings, kvp=kvp))

    def as_dict(self) -> dict[str, Any]:
        """results.json ``options`` (the calibration settings as ``calibration_params``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "calibration_settings":
                out["calibration_params"] = self.calibration_settings.as_dict()
            else:
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AnalysisOptions:
        """From :meth:`as_dict`'s mapping (a front end's panel, results.json ``options``)."""
        values = dict(values or {})
        settings = values.pop("calibration_params", None)
        if isinstance(settings, CalibrationSettings):
            values["calibration_settings"] = settings
        elif settings is not None:
            values["calibration_settings"] = CalibrationSettings.from_dict(settings)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown analysis option(s) {', '.join(unknown)}")
        return cls(**values)

    def to_argv(self) -> list[str]:
        """``obmd analyze`` flags giving these options (:meth:`from_args` reads them back)."""
        argv = ["--calibration", self.calibration]
        default = AnalysisOptions()
        for name, flag in _FLAGS.items():
            value = getattr(self, name)
            if value is not None and value != getattr(default, name):
                argv += [flag, str(value)]
        cal = self.calibration_settings
        for name, flag in _CALIBRATION_FLAGS.items():
            value = getattr(cal, name)
            if value is None:
                continue
            if isinstance(value, bool):
                if value != _CALIBRATION_BOOL_DEFAULTS[name]:
                    argv.append(flag)
            elif isinstance(value, tuple):
                argv += [flag, *(str(v) for v in value)]
            else:
                argv += [flag, str(value)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnalysisOptions:
        """From the flags :func:`add_arguments` defines (validated on construction)."""
        settings = CalibrationSettings(
            file=args.calibration_file, slope=args.slope, intercept=args.intercept,
            pad_densities=tuple(args.pad_densities) if args.pad_densities else None,
            psoas_fat_fraction=args.psoas_fat, marrow_fat_fraction=args.marrow_fat, kvp=args.kvp,
            energy_model=args.energy_model, robust=False if args.no_robust else None,
            use_cortical=True if args.use_cortical else None)
        method = args.calibration
        if settings.phantom_line_given and method in ("auto", "muscle-fat"):  # a line given without naming it
            method = "phantom"
        return cls(calibration=method,
                   erosion_radius_mm=DEFAULT_EROSION_RADIUS_MM if args.erosion_mm is None else args.erosion_mm,
                   muscle_density_mg_cm3=args.muscle_density, fat_density_mg_cm3=args.fat_density,
                   calibration_settings=settings, patient_age=args.age,  # None: from the CT's header
                   patient_sex=sex_code(args.sex), z_reference=args.z_reference, device=args.device,
                   segmentation_backend=args.backend, label_margin_mm=args.label_margin_mm)


# option field -> flag (to_argv writes a value that differs from the default)
_FLAGS = {"erosion_radius_mm": "--erosion-mm", "muscle_density_mg_cm3": "--muscle-density",
          "fat_density_mg_cm3": "--fat-density", "patient_age": "--age", "patient_sex": "--sex",
          "z_reference": "--z-reference", "device": "--device", "segmentation_backend": "--backend",
          "label_margin_mm": "--label-margin-mm"}
_CALIBRATION_FLAGS = {"file": "--calibration-file", "slope": "--slope", "intercept": "--intercept",
                      "pad_densities": "--pad-densities", "psoas_fat_fraction": "--psoas-fat",
                      "marrow_fat_fraction": "--marrow-fat", "kvp": "--kvp", "energy_model": "--energy-model",
                      "robust": "--no-robust", "use_cortical": "--use-cortical"}
_CALIBRATION_BOOL_DEFAULTS = {"robust": True, "use_cortical": False}  # a flag is written for the other value


def add_arguments(parser: argparse.ArgumentParser, calibration_methods: Sequence[str], calibration_help: str) -> None:
    """The ``obmd analyze`` flags of :class:`AnalysisOptions` (the methods and their help come from the
    calibration registry: this module imports no method)."""
    parser.add_argument("--calibration", default=DEFAULT_CALIBRATION, choices=tuple(calibration_methods),
                        metavar="METHOD", help=calibration_help)
    parser.add_argument("--pad-densities", type=float, nargs="+", metavar="MG_CM3",
                        help="inscan/auto: the calibration pad rods' HA densities (mg/cm3; the base is 0), "
                        "default 50 100 150 200 (the digital patient's pad)")
    parser.add_argument("--slope", type=float, help="phantom calibration slope (mg/cm3 per HU)")
    parser.add_argument("--intercept", type=float, help="phantom calibration intercept (mg/cm3)")
    parser.add_argument("--calibration-file", metavar="JSON", help="calib.json from 'obmd calibrate-phantom'")
    parser.add_argument("--muscle-density", type=float, metavar="MG_CM3",
                        help="equivalent density of muscle for muscle-fat (default: computed at the scan kVp)")
    parser.add_argument("--fat-density", type=float, metavar="MG_CM3", help="equivalent density of fat for muscle-fat")
    parser.add_argument("--psoas-fat", type=float, metavar="FRACTION",
                        help="psoas fat (adipose) fraction 0-0.5 for muscle-fat, e.g. from MRI PDFF (default: typical "
                        "for age, 0.045 below 38 y, else 0.069; Sollmann 2020); under an in-scan pad it sets the "
                        "hip's iliopsoas anchor")
    parser.add_argument("--marrow-fat", type=float, metavar="FRACTION",
                        help="vertebral marrow fat (volume) fraction 0.05-0.95, e.g. from MR spectroscopy or PDFF: "
                        "the marrow base of the HA scale for muscle-fat, internal-multi and inscan (default: "
                        "typical for age, Griffith 2012; 0.5 when the age is unknown)")
    parser.add_argument("--kvp", type=float, metavar="KV",
                        help="tube potential of the scan (default: from the DICOM header; 120 when it has none)")
    parser.add_argument("--energy-model", choices=ENERGY_MODELS,
                        help="internal-multi: polychromatic tube spectra (spectrum, default) or single energies "
                        "(mono, as Michalski 2020)")
    parser.add_argument("--no-robust", action="store_true",
                        help="internal-multi: keep every reference tissue (no outlier dropped)")
    parser.add_argument("--use-cortical", action="store_true",
                        help="internal-multi: add the femoral cortex as a reference tissue")
    parser.add_argument("--erosion-mm", type=float, metavar="R",
                        help=f"cortex removal radius in mm (default {DEFAULT_EROSION_RADIUS_MM:g})")
    parser.add_argument("--label-margin-mm", type=float, metavar="MM",
                        help="extra cortex margin for labels with an uncertain boundary (default: the shipped "
                        "model's margin for its labels, pipeline.MODEL_LABEL_MARGIN_MM; 0 for labels given)")
    parser.add_argument("--age", type=float, help=f"patient age in years, more than {AGE_RANGE_Y[0]:g} and at most "
                        f"{AGE_RANGE_Y[1]:g} (default: from the DICOM header, ignored there when outside that range)")
    parser.add_argument("--sex", choices=SEXES, help="patient sex (default: from the DICOM header)")
    parser.add_argument("--z-reference", metavar="JSON",
                        help="hip Z-score reference table by age and sex (format: OpportunisticBMDLib/hip/tscores.py "
                        "load_age_reference); default: the built-in NHANES III rows")
    parser.add_argument("--device", default="cpu", help="device for the segmentation models: cpu | cuda")
    parser.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                        help="segmentation without --seg: obmd (the shipped model, default) or totalsegmentator "
                        "(needs the TotalSegmentator package and its weights installed)")
