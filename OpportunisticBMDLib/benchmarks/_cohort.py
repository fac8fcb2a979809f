"""Digital-patient cohorts for the accuracy and precision benchmarks (shared helpers, not a benchmark).

Patients come from the phantom generator (the code behind ``obmd phantom``), built in memory and analysed
with ``pipeline.analyze`` on the phantom's labels.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..calibration import calibrate
from ..pipeline import analyze
from ..settings import AnalysisOptions

# The clinically used pair of levels (ACR QCT practice parameter): per-patient vBMD = mean of L1 and L2,
# else of the two measured levels closest to them.
PREFERRED_LEVELS = ("L1", "L2", "T12", "L3", "T11", "L4")
# Pseudo-method: truth's exact calibration applied to the measured trabecular HU. Not a user method: it
# shows the floor left by the ROI measurement itself (noise, blur, cupping/offset fields, partial volume).
ORACLE = "oracle-exact"


@dataclass
class PhantomScan:
    ct: object  # Volume
    labels: object  # Volume
    truth: dict
    directory: Path | None


def generate(seed: int, keep_dir: Path | None = None, **options) -> PhantomScan:
    """Digital patient ``seed`` built in-process with :func:`phantom.generator.generate_phantom`
    (``options`` are :class:`phantom.options.PhantomOptions` fields; region "spine" unless given).
    With ``keep_dir`` the scan is also written there as ``obmd phantom`` would."""
    from ..phantom.generator import generate_phantom, write_phantom
    from ..phantom.options import PhantomOptions

    options.setdefault("region", "spine")
    phantom = generate_phantom(int(seed), PhantomOptions(**options))
    if keep_dir is not None:
        write_phantom(phantom, keep_dir)
    kvp = scanner_kvp(phantom.truth)
    if kvp is not None:  # the tube voltage where a DICOM series has it (tag KVP, io.read_ct's metadata["kvp"])
        phantom.ct.metadata["kvp"] = kvp
    return PhantomScan(phantom.ct, phantom.labels, phantom.truth, Path(keep_dir) if keep_dir else None)


def without_header(ct):
    """``ct`` as from a file without acquisition header (no kVp): what ``--blind`` analyses."""
    return ct.like(ct.array, **{k: v for k, v in ct.metadata.items() if k not in ("kvp", "KVP", "0018|0060")})


def scanner_kvp(truth: dict) -> float | None:
    """Tube potential recorded in truth.json (what a DICOM header's KVP tag would say)."""
    for key in ("scanner", "scan", "acquisition"):
        block = truth.get(key)
        if isinstance(block, dict):
            for k in ("kvp", "kVp", "KVP"):
                if block.get(k) is not None:
                    return float(block[k])
    return float(truth["kvp"]) if truth.get("kvp") is not None else None


def patient_age(truth: dict) -> float | None:
    for key in ("patient", "subject"):
        block = truth.get(key)
        if isinstance(block, dict) and block.get("age") is not None:
            return float(block["age"])
    return float(truth["age"]) if truth.get("age") is not None else None


def true_levels(truth: dict) -> dict[str, float]:
    levels = truth.get("spine", {}).get("levels", {})
    return {lvl: float(v["vbmd_mg_cm3"]) for lvl, v in levels.items() if v.get("vbmd_mg_cm3") is not None}


def measured_levels(results: dict) -> dict[str, float]:
    levels = results.get("spine", {}).get("levels", {})
    out = {}
    for lvl, v in levels.items():
        value = v.get("vbmd_mg_cm3") if isinstance(v, dict) else None
        if value is not None and np.isfinite(value):
            out[lvl] = float(value)
    return out


def paired_patient_value(measured: dict[str, float], truth: dict[str, float]) -> tuple[float, float, list[str]] | None:
    """(measured, true, levels): mean over the two preferred levels present in both (L1-L2 first)."""
    common = [lvl for lvl in PREFERRED_LEVELS if lvl in measured and lvl in truth][:2]
    if not common:
        return None
    return (float(np.mean([measured[lvl] for lvl in common])), float(np.mean([truth[lvl] for lvl in common])),
            common)


def analysis_options(method: str, truth: dict, header_known: bool = True) -> AnalysisOptions:
    """Options as a user's ``obmd analyze --calibration METHOD`` would get them; with ``header_known``
    the patient's age is passed as a DICOM header would provide it (the kVp travels in the CT's
    metadata, set by :func:`generate`, for every method alike)."""
    return AnalysisOptions(calibration=method, patient_age=patient_age(truth) if header_known else None)


def measure_methods(scan: PhantomScan, methods: list[str], header_known: bool = True,
                    extra_params: dict[str, dict] | None = None) -> dict[str, dict[str, float] | str]:
    """Per-level vBMD for each method. One full ``pipeline.analyze`` (method "hu": ROIs and trabecular
    HU), then each method calibrates those ROIs: vBMD = calibration(trabecular HU mean), as
    ``pipeline.measure`` computes it. A method that fails maps to its error message."""
    ct = scan.ct if header_known else without_header(scan.ct)
    try:
        base = analyze(ct, scan.labels, analysis_options("hu", scan.truth, header_known))
    except Exception as exc:
        return {m: f"analysis: {type(exc).__name__}: {exc}" for m in methods}
    levels = base.results.get("spine", {}).get("levels", {})
    out: dict[str, dict[str, float] | str] = {}
    for method in methods:
        if method == ORACLE:  # the patient's exact HU -> mg/cm3 line (truth.json): only the ROI errors remain
            exact = scan.truth["exact_calibration"]
            out[method] = {lvl: exact["intercept_mg_cm3"] + exact["slope_mg_cm3_per_hu"] * v["trabecular_hu_mean"]
                           for lvl, v in levels.items()
                           if isinstance(v, dict) and v.get("trabecular_hu_mean") is not None}
            continue
        options = analysis_options(method, scan.truth, header_known)
        if extra_params and method in extra_params:
            options = options.with_calibration(**extra_params[method])
        try:
            calibration = calibrate(ct, base.rois, base.labels, options)
        except Exception as exc:  # reported per method, the cohort goes on
            out[method] = f"{type(exc).__name__}: {exc}"
            continue
        out[method] = {lvl: float(calibration.to_mg_cm3(v["trabecular_hu_mean"])) for lvl, v in levels.items()
                       if isinstance(v, dict) and v.get("trabecular_hu_mean") is not None
                       and calibration.calibrated}
    return out


def temp_dir(keep: str | None = None):
    """A scratch directory (kept under ``keep`` if given)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(keep)
    return tempfile.TemporaryDirectory(prefix="obmd-bench-")
