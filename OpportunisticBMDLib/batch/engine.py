"""Cases spread over Dask workers: an embedded ``LocalCluster`` or an existing scheduler (:class:`Engine`,
which also reads a DICOM tree's headers on the workers: ``Engine.map``).

Local default: one single-threaded worker process per core (``processes=True``, ``threads_per_worker=1``),
so one case's crash or time-out ends one process, never the run. Every worker (local or remote, and a
worker restarted after a time-out) gets :class:`CaseWorkerSetup` first: torch, SimpleITK and BLAS are
set to one thread per task thread (workers = cores: no oversubscription) and, when any case needs the
segmentation models, the model is loaded once into that process (models.inference's per-process cache)
rather than by its first case.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError
from .case import STATUS_FAILED, CaseSettings, run_case
from .inputs import CaseInput

# Dask settings for the local cluster's workers (an existing cluster keeps its own). Design choices, measured
# with `obmd bench batch` (CPU seconds per case of the model path on a digital patient, same process):
# the nanny's default MALLOC_TRIM_THRESHOLD_=65536 makes glibc hand freed memory back to the system at once,
# which for an analysis that allocates and frees many large arrays cost +1.2 s CPU per case (7.6 -> 8.9 s);
# the worker's statistical profiler (a 10 ms sampling thread) is off: nobody reads it in a batch.
LOCAL_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
    "distributed.worker.profile.enabled": False,
}
MISSING_DASK = ("obmd batch needs Dask distributed: pip install 'dask[distributed]' pyarrow "
                "(or the project's 'batch' extra; `make setup` installs them)")


@dataclass(frozen=True)
class EngineInfo:
    """Where the cases ran (printed, and kept in DIR/batch.json)."""

    scheduler: str
    dashboard: str | None
    workers: int
    threads_per_worker: int
    ready_s: float  # from the start until the workers were up (and had loaded the model)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise InputError(MISSING_DASK) from exc
    return distributed


def _dashboard(client) -> str | None:
    try:
        services = client.scheduler_info().get("services", {})
    except OSError:
        return None
    return client.dashboard_link if "dashboard" in services else None


def _failed_task_record(case: CaseInput, exc: BaseException) -> dict[str, Any]:
    """A case whose task never returned: its worker died each time it ran it (out of memory, a crash)."""
    name = type(exc).__name__
    reason = (f"the worker process died while running this case ({name}: out of memory or a crash)"
              if name == "KilledWorker" else f"{name}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return {"case_id": case.case_id, "status": STATUS_FAILED, "reason": reason, "error": name, "seconds": None,
            "ct": case.ct, "seg": case.seg, "series": case.series_description(), "input_hash": None, "folder": None,
            "resumed": False}


class Engine:
    """A Dask client on a LocalCluster it starts (``scheduler`` None) or on an existing scheduler; closed
    (and the local cluster shut down) on leaving the ``with`` block."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None) -> None:
        self.workers = workers
        self.scheduler = scheduler
        self.start = time.perf_counter()
        self._distributed = _import_distributed()
        self._cluster = None
        self._client = None

    def __enter__(self) -> Engine:
        import dask

        distributed = self._distributed
        logging.getLogger("distributed").setLevel(logging.ERROR)
        if self.scheduler:
            try:
                self._client = distributed.Client(self.scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"--scheduler {self.scheduler}: no Dask scheduler answers there ({exc})") from exc
            self._client.wait_for_workers(1, timeout=120)
        else:
            n = max(1, self.workers or os.cpu_count() or 1)
            with dask.config.set(LOCAL_WORKER_CONFIG):  # read by the nannies as they start their workers
                self._cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                         dashboard_address=":0", silence_logs=logging.ERROR,
                                                         config=LOCAL_WORKER_CONFIG)
            self._client = distributed.Client(self._cluster)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def map(self, function: Callable, items: list) -> list:
        """``[function(item) for item in items]`` on the workers (an inputs.Mapper: DICOM headers)."""
        if not items:
            return []
        return self._client.gather(self._client.map(function, items, pure=False))

    def run_cases(self, cases: list[CaseInput], settings: CaseSettings, show_progress: bool = True,
                  on_ready: Callable[[EngineInfo], None] | None = None) -> tuple[list[dict[str, Any]], EngineInfo]:
        """Records of every case (in ``cases`` order) and where they ran."""
        from .worker_setup import CaseWorkerSetup

        client = self._client
        settings = replace(settings, exit_on_timeout=True)
        needs_model = any(not c.seg and not c.problem for c in cases)
        client.register_plugin(CaseWorkerSetup(settings.options.device if needs_model else None))
        nthreads = client.nthreads()
        info = EngineInfo(scheduler=client.scheduler.address, dashboard=_dashboard(client), workers=len(nthreads),
                          threads_per_worker=max(nthreads.values(), default=1),
                          ready_s=time.perf_counter() - self.start)
        if on_ready is not None:
            on_ready(info)
        futures = client.map(run_case, cases, settings=settings, key=[f"obmd-case-{c.case_id}" for c in cases],
                             pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        records: list[dict[str, Any] | None] = [None] * len(cases)
        bar = _progress_bar(len(cases), show_progress)
        for future in self._distributed.as_completed(futures):
            i = index[future.key]
            try:
                records[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - a task lost with its worker: recorded, the run goes on
                records[i] = _failed_task_record(cases[i], exc)
            bar.set_postfix_str(f"{records[i]['case_id']}: {records[i]['status']}", refresh=False)
            bar.update(1)
        bar.close()
        return [r for r in records if r is not None], info


def _progress_bar(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="case", desc="cases", disable=not show, file=sys.stderr, dynamic_ncols=True)
