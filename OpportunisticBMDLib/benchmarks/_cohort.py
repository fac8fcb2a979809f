"""Digital-patient cohorts for the accuracy and precision benchmarks (shared helpers, not a benchmark).

Patients come from ``obmd phantom`` run in-process (same code path as a user's command line), read back
with the package's own readers and analysed with ``pipeline.analyze`` on the phantom's labels.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The clinically used pair of levels (ACR QCT practice parameter): per-patient vBMD = mean of L1 and L2,
# else of the two measured levels closest to them.
PREFERRED_LEVELS = ("L1", "L2", "T12", "L3", "T11", "L4")


@dataclass
class PhantomScan:
    ct: object  # Volume
    labels: object  # Volume
    truth: dict
    directory: Path


def generate(out_dir: Path, seed: int, extra_args: list[str] | None = None, region: str = "spine") -> PhantomScan:
    """Run ``obmd phantom --out DIR --seed N --region REGION [extra]`` quietly and read the scan back."""
    from ..cli import main
    from ..io import read_ct, read_labels

    out_dir = Path(out_dir)
    argv = ["phantom", "--out", str(out_dir), "--seed", str(seed), "--region", region, *(extra_args or [])]
    buffer = _io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"obmd {' '.join(argv)} failed ({rc}): {buffer.getvalue()[-300:]}")
    ct = read_ct(out_dir / "ct.nii.gz")
    labels_path = out_dir / "labels.nii.gz"
    labels = read_labels(labels_path, like=ct) if labels_path.exists() else None
    truth = json.loads((out_dir / "truth.json").read_text())
    return PhantomScan(ct, labels, truth, out_dir)


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


def analysis_options(method: str, truth: dict, header_known: bool = True):
    """Options as a user's ``obmd analyze --calibration METHOD`` would get them; with ``header_known``
    the scan's kVp and the patient's age are passed as a DICOM header would provide them."""
    from ..pipeline import AnalysisOptions

    options = AnalysisOptions(calibration=method)
    if header_known:
        kvp = scanner_kvp(truth)
        if kvp is not None:
            options.calibration_params = {**options.calibration_params, "kvp": kvp}
        age = patient_age(truth)
        if age is not None and hasattr(options, "patient_age"):
            options.patient_age = age
    return options


def temp_dir(keep: str | None = None):
    """A scratch directory (kept under ``keep`` if given)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(keep)
    return tempfile.TemporaryDirectory(prefix="obmd-bench-")
