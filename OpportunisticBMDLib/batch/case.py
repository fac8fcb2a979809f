"""One case of a batch: what ``obmd analyze CT [--seg LABELS] --out DIR/cases/<id>`` does, as a function
that never raises: it returns a record (a plain dict) with the case's status and why.

Statuses: ``complete`` / ``partial`` / ``not_measurable`` come from results.json (validity.py);
``failed`` (an input, segmentation or model error, or a crash; ``reason`` says which) and ``timed_out``.

The time limit: Python cannot stop a running computation in a thread, so inside a Dask worker process
(``exit_on_timeout``) a watchdog thread writes the case's time-out record and ends the worker process
(``os._exit``); the worker's nanny starts a fresh one, Dask hands the task to a worker again, and the
rerun finds the record and returns ``timed_out`` at once. Outside a worker (a direct call) no limit applies.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import OBMDError
from ..output_folder import LOCK_SUFFIX, TEMP_INFIX, staged_output
from ..settings import AnalysisOptions
from . import DEFAULT_TIME_LIMIT_S
from .inputs import CaseInput
from .resume import CASE_RECORD, completed_record, input_hash

CASES_FOLDER = "cases"  # DIR/cases/<id>: one `obmd analyze` output folder per case
TIMEOUTS_FOLDER = "timeouts"  # in this run's scratch folder: <id>.json per case over its time limit
STATUS_FAILED = "failed"
STATUS_TIMED_OUT = "timed_out"
TIMEOUT_EXIT_CODE = 75  # the worker process's exit status after a time-out (EX_TEMPFAIL)


@dataclass(frozen=True)
class CaseSettings:
    """What every case of a run shares."""

    options: AnalysisOptions  # as `obmd analyze` builds them; a manifest's age/sex override per case
    out_dir: str  # the batch output folder
    run_dir: str  # this run's scratch folder (time-out records)
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    resume: bool = False
    exit_on_timeout: bool = False  # True in a Dask worker process (see the module docstring)

    def hashed_settings(self) -> dict[str, Any]:
        """The settings that change a case's results (part of its resume hash)."""
        return self.options.as_dict()


def case_folder(out_dir: str | Path, case_id: str) -> Path:
    return Path(out_dir) / CASES_FOLDER / case_id


def _timeout_record_path(settings: CaseSettings, case_id: str) -> Path:
    return Path(settings.run_dir) / TIMEOUTS_FOLDER / f"{case_id}.json"


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024.0 if sys.platform != "darwin" else usage / 1024.0 / 1024.0


def _record(case: CaseInput, status: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"case_id": case.case_id, "status": status, "reason": None, "error": None, "seconds": round(seconds, 3),
            "cpu_s": None,
            "ct": case.ct, "seg": case.seg, "series": case.series_description(), "input_hash": None,
            "folder": None, "resumed": False, "pid": os.getpid(), "worker_peak_rss_mb": _peak_rss_mb(), **extra}


def _arm_watchdog(case: CaseInput, settings: CaseSettings, digest: str) -> threading.Timer | None:
    if not settings.exit_on_timeout:
        return None
    target = case_folder(settings.out_dir, case.case_id)

    def expire() -> None:
        path = _timeout_record_path(settings, case.case_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"case_id": case.case_id, "time_limit_s": settings.time_limit_s,
                                    "input_hash": digest}) + "\n")
        # what staged_output would have removed on an error: this process's temporary folder and lock
        shutil.rmtree(target.parent / f"{target.name}{TEMP_INFIX}{os.getpid()}", ignore_errors=True)
        (target.parent / f"{target.name}{LOCK_SUFFIX}").unlink(missing_ok=True)
        os._exit(TIMEOUT_EXIT_CODE)

    timer = threading.Timer(settings.time_limit_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def _analyze_into(case: CaseInput, options: AnalysisOptions, staging: Path) -> dict[str, Any]:
    from ..io import read_ct, read_ct_series, read_labels
    from ..pipeline import analyze
    from ..report_folder import write_report_folder

    ct = read_ct_series(case.dicom_files, case.series_choice) if case.dicom_files else read_ct(case.ct)
    labels = read_labels(case.seg, like=ct) if case.seg else None
    result = analyze(ct, labels, options)
    # the folder `obmd analyze` writes (results, masks, report.pdf; dicom/ for a DICOM series)
    write_report_folder(result, ct, staging, source_files=case.dicom_files or ())
    return result.results


def case_options(case: CaseInput, options: AnalysisOptions) -> AnalysisOptions:
    """The run's options with the manifest's age and sex where it gives them."""
    return replace(options, patient_age=case.age if case.age is not None else options.patient_age,
                   patient_sex=case.sex or options.patient_sex)


def run_case(case: CaseInput, settings: CaseSettings) -> dict[str, Any]:
    """Analyse one case into ``DIR/cases/<id>`` and return its record; never raises (but KeyboardInterrupt)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    if case.problem:
        return _record(case, STATUS_FAILED, 0.0, reason=case.problem, error="InputError")
    try:
        digest = input_hash(case, settings.hashed_settings())
    except OSError as exc:
        return _record(case, STATUS_FAILED, time.perf_counter() - start, error="InputError",
                       reason=f"{exc.filename or case.ct}: {exc.strerror or exc}")
    target = case_folder(settings.out_dir, case.case_id)
    if settings.resume:
        stored = completed_record(target, digest)
        if stored is not None:
            return {**_record(case, stored["status"], stored["seconds"]), **stored, "resumed": True,
                    "pid": os.getpid(), "worker_peak_rss_mb": _peak_rss_mb()}
    if _timeout_record_path(settings, case.case_id).is_file():  # this task's first run went past the limit
        return _record(case, STATUS_TIMED_OUT, settings.time_limit_s, input_hash=digest,
                       reason=f"stopped after the {settings.time_limit_s:g} s time limit", error="TimeLimit")
    timer = _arm_watchdog(case, settings, digest)
    try:
        with staged_output(target, [case.ct, case.seg]) as staging:
            results = _analyze_into(case, case_options(case, settings.options), staging)
            seconds = time.perf_counter() - start
            stored = {"case_id": case.case_id, "status": results.get("status"), "seconds": round(seconds, 3),
                      "input_hash": digest, "ct": case.ct, "seg": case.seg, "series": case.series_description(),
                      "series_choice": results.get("input", {}).get("series_choice") or case.series_choice,
                      "folder": f"{CASES_FOLDER}/{case.case_id}"}
            (staging / CASE_RECORD).write_text(json.dumps(stored, indent=1, default=str) + "\n")
        return {**_record(case, stored["status"], seconds), **stored,
                "cpu_s": round(time.process_time() - cpu_start, 3)}  # this process's CPU time (benchmarks)
    except OBMDError as exc:
        return _record(case, STATUS_FAILED, time.perf_counter() - start, input_hash=digest,
                       error=type(exc).__name__, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one case's crash must not stop the cohort: recorded with its cause
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _record(case, STATUS_FAILED, time.perf_counter() - start, input_hash=digest, error=type(exc).__name__,
                       reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                              f"(at {Path(where.filename).name}:{where.lineno})")
    finally:
        if timer is not None:
            timer.cancel()
