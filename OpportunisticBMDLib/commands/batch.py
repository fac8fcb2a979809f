"""``obmd batch INPUT... --out DIR [--workers N] [--scheduler ADDRESS] [--resume]``: a cohort on Dask.

Each case is analysed as ``obmd analyze`` would, into ``DIR/cases/<id>/``; then ``DIR/cohort.csv``,
``cohort.parquet``, ``screening.csv``, ``cohort.png``/``cohort.pdf`` and ``batch.json`` (the run: engine,
counts, each case's record) are written. A failing case is recorded with its reason and never stops the
others. Cases, series choice, resume and time limits: docs/batch.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports only inside run (obmd --help stays fast)
    from ..batch.engine import Engine, EngineInfo
    from ..batch.inputs import CaseInput
    from ..settings import AnalysisOptions

BATCH_MARKER = ".obmd-batch"  # in DIR: this folder is an obmd batch output (resumable, ours to write into)


def register(subparsers: argparse._SubParsersAction) -> None:
    from .. import calibration, settings
    from ..batch import DEFAULT_TIME_LIMIT_S

    parser = subparsers.add_parser("batch", help="analyse many CTs (folders, DICOM trees, a CSV manifest) on Dask",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image file, folder (NIfTI/NRRD/MHA files or a DICOM tree) or CSV manifest "
                        "(columns ct, optional seg, age, sex, id); a manifest's age/sex override --age/--sex, which "
                        "override the CT's header")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty or an earlier batch)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local worker processes (default: one per CPU core); ignored with --scheduler")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="an existing Dask scheduler, e.g. tcp://HOST:8786 (workers must see the inputs and DIR)")
    parser.add_argument("--resume", action="store_true",
                        help="skip cases whose complete output for the same input content and settings exists in DIR")
    parser.add_argument("--time-limit-s", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                        help=f"per-case time limit (default {DEFAULT_TIME_LIMIT_S:g} s); a case over it is "
                        "recorded as timed_out")
    # every `obmd analyze` analysis flag, for all cases (a manifest's age/sex columns override --age/--sex)
    settings.add_arguments(parser, list(calibration.CALIBRATIONS), calibration.cli_help())
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def check_batch_folder(out: Path, inputs: list[str]) -> Path:
    """DIR resolved; refused when it holds an input, lies inside an input folder, or is a non-empty folder
    that no batch wrote."""
    from ..errors import InputError

    resolved = out.expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    for given in inputs:
        source = Path(given).expanduser().resolve()
        folder = source if source.is_dir() else source.parent
        inside_input = source.is_dir() and resolved.is_relative_to(source)
        if folder == resolved or folder.is_relative_to(resolved) or inside_input:
            raise InputError(f"--out {out}: holds or lies inside the input {given}; choose a folder outside the inputs")
    if resolved.is_dir() and any(resolved.iterdir()) and not (resolved / BATCH_MARKER).is_file():
        raise InputError(f"--out {out} is not an obmd batch folder (no {BATCH_MARKER}): choose an empty or new folder")
    return resolved


def _options(args: argparse.Namespace) -> AnalysisOptions:
    from ..calibration import check_options
    from ..settings import AnalysisOptions

    options = AnalysisOptions.from_args(args)
    check_options(options)
    return options


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..batch.cohort import write_cohort
    from ..batch.engine import Engine
    from ..errors import InputError
    from ..output_folder import acquire_lock

    start = time.perf_counter()
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: at least 1")
    if args.time_limit_s <= 0:
        raise InputError(f"--time-limit-s {args.time_limit_s:g}: must be > 0")
    out = Path(args.out)
    resolved = check_batch_folder(out, args.inputs)
    options = _options(args)
    run_dir = resolved / f".run-{os.getpid()}"
    lock: Path | None = None
    try:
        with Engine(workers=args.workers, scheduler=args.scheduler) as engine:
            cases = _find_cases(engine, args)  # usage errors (missing input, bad manifest, no cases) end here
            # DIR is created, locked and marked only now: a usage error leaves nothing behind
            resolved.mkdir(parents=True, exist_ok=True)
            lock = acquire_lock(resolved, out)
            marker = {"software": "OpportunisticBMD", "version": __version__}
            (resolved / BATCH_MARKER).write_text(json.dumps(marker) + "\n")
            records, info, cases_s = _run(engine, args, options, cases, resolved, run_dir)
        written = write_cohort(records, resolved)
        seconds = time.perf_counter() - start
        counts: dict[str, int] = {}
        for r in records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        resumed = sum(1 for r in records if r.get("resumed"))
        run_info = {"software": {"name": "OpportunisticBMD", "version": __version__},
                    "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "inputs": [str(i) for i in args.inputs], "options": options.as_dict(),
                    "engine": vars(info), "seconds": round(seconds, 2),
                    "cases_s": round(cases_s, 2), "counts": counts, "resumed": resumed,
                    "cases": records}
        (resolved / "batch.json").write_text(json.dumps(run_info, indent=1, default=str) + "\n")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if lock is not None:
            lock.unlink(missing_ok=True)
    print(f"{len(records)} cases in {seconds:.1f} s: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f" ({resumed} resumed)" if resumed else ""))
    for r in records:
        if r["status"] in ("failed", "timed_out"):
            print(f"  {r['status']}: {r['case_id']}: {r.get('reason')}")
    print("wrote " + ", ".join(str(resolved / name) for name in written))
    return 0


def _find_cases(engine: Engine, args: argparse.Namespace) -> list[CaseInput]:
    """The cases of the inputs (DICOM headers read on the workers); InputError when there are none."""
    from ..batch.inputs import find_cases
    from ..errors import InputError

    cases = find_cases(args.inputs, mapper=engine.map)
    if not cases:
        raise InputError("no cases found in " + ", ".join(args.inputs))
    return cases


def _run(engine: Engine, args: argparse.Namespace, options: AnalysisOptions, cases: list[CaseInput], resolved: Path,
         run_dir: Path) -> tuple[list[dict], EngineInfo, float]:
    """Run the cases: (records, engine info, seconds of the cases alone, from the workers ready to the last
    record)."""
    from ..batch.case import CaseSettings

    settings = CaseSettings(options=options, out_dir=str(resolved), run_dir=str(run_dir),
                            time_limit_s=args.time_limit_s, resume=args.resume)
    print(f"{len(cases)} cases from {len(args.inputs)} input(s)" + (" (resuming)" if args.resume else ""), flush=True)
    ready_at: list[float] = []

    def ready(info: EngineInfo) -> None:
        ready_at.append(time.perf_counter())
        print(f"Dask scheduler {info.scheduler}: {info.workers} worker(s) x {info.threads_per_worker} thread(s), "
              f"ready in {info.ready_s:.1f} s; dashboard: {info.dashboard or 'not available (pip install bokeh)'}",
              flush=True)

    records, info = engine.run_cases(cases, settings, show_progress=not args.quiet, on_ready=ready)
    return records, info, time.perf_counter() - ready_at[0]
