"""``obmd bench robustness``: the bad inputs a user hands us, each run as the user would run it.

Each case builds its input from the shared real CT (or a digital patient) in a scratch folder, runs
``obmd analyze`` in a child process, and records: exit code, outcome (refused / not measurable / partial /
complete), whether a category was reported, whether the case's expectation held (refused, no category,
a named QC flag), tracebacks, input files changed (SHA-256 before and after), outputs mixed with an
earlier case, and seconds. Targets (issue #13): 0 categories from invalid measurements, 0 tracebacks,
0 input files changed, 0 mixed outputs, every refusal within 3 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bad_inputs import CASES, DEFAULT_SHARED, BadInputCase, Shared
from .common import add_json_option, write_json

# Input errors must be refused before any heavy work (issue #13 target).
MAX_REFUSAL_S = 3.0
EXIT_INPUT_ERROR = 2
EXIT_NOT_MEASURABLE = 3


@dataclass
class CaseResult:
    name: str
    description: str
    exit_code: int
    outcome: str
    category_reported: bool
    expectation_met: bool
    traceback: bool
    inputs_changed: list[str]
    mixed_outputs: list[str]
    seconds: float
    detail: str = ""
    flags: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hashes(paths: list[Path]) -> dict[str, str]:
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir()
                                            else []) if p.is_file()]
    return {str(p): _sha256(p) for p in files}


def _categories(results: dict[str, Any]) -> list[str]:
    spine = ((results.get("spine") or {}).get("summary") or {}).get("category")
    hips = [b.get("category") for b in (results.get("hip") or {}).values() if isinstance(b, dict)]
    return [c for c in [spine, *hips] if c]


def _outcome(code: int, results: dict[str, Any] | None) -> str:
    if code == EXIT_INPUT_ERROR:
        return "refused"
    if results is None:
        return "failed" if code else "no results"
    return str(results.get("status", "unknown"))


def run_analyze(argv: list[str], timeout_s: float) -> tuple[int, str, str, float]:
    """``obmd analyze ARGV`` in a child process: (exit code, stdout, stderr, seconds)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "OpportunisticBMDLib.cli", "analyze", *argv, "--quiet"],
                          capture_output=True, text=True, timeout=timeout_s, env=env)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def run_case(case: BadInputCase, work: Path, shared: Shared, timeout_s: float = 600.0) -> CaseResult:
    """Build ``case`` in ``work/<name>``, run it (twice for a case with a second run) and judge it."""
    folder = work / case.name
    folder.mkdir(parents=True, exist_ok=True)
    made = case.build(folder, shared)
    before = _hashes(made.inputs)
    out_dir = Path(made.argv[made.argv.index("--out") + 1])
    code, _out, err, seconds = run_analyze(made.argv, timeout_s)
    second_start = None
    if made.second_argv:  # another patient into the same folder: nothing of the first may stay
        time.sleep(1.0)  # file times have 1 s resolution on some file systems
        second_start = time.time()
        code, _out, err, seconds = run_analyze(made.second_argv, timeout_s)
    results = None
    if code in (0, EXIT_NOT_MEASURABLE) and (out_dir / "results.json").is_file():
        results = json.loads((out_dir / "results.json").read_text())
    mixed = []
    if second_start is not None and out_dir.is_dir():
        mixed = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                       if p.is_file() and p.stat().st_mtime < second_start - 0.5)
    after = _hashes(made.inputs)
    changed = sorted(p for p in before if after.get(p) != before[p])
    categories = _categories(results) if results else []
    flags = sorted({q.get("code", "") for q in (results or {}).get("qc") or []})
    error_line = err.strip().splitlines()[-1] if err.strip() else ""
    expect = case.expect
    if expect.outcome == "refused":
        met = (code == EXIT_INPUT_ERROR and re.search(expect.message, error_line) is not None
               and (seconds <= MAX_REFUSAL_S or not expect.before_model))
    elif expect.outcome == "no_category":
        met = code in (0, EXIT_NOT_MEASURABLE, EXIT_INPUT_ERROR) and not categories
    else:
        met = code == 0 and bool(categories)
    met = met and all(f in flags for f in expect.flags)
    detail = error_line if code == EXIT_INPUT_ERROR else "; ".join(
        r["code"] for r in (results or {}).get("status_reasons") or [])
    return CaseResult(
        name=case.name, description=case.description, exit_code=code, outcome=_outcome(code, results),
        category_reported=bool(categories), expectation_met=met, traceback="Traceback" in err,
        inputs_changed=changed, mixed_outputs=mixed, seconds=round(seconds, 2), detail=detail, flags=flags)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("robustness", help="bad inputs a user would try: refused or not measurable, never a "
                              "wrong category", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases")
    p.add_argument("--work", metavar="DIR", help="scratch folder (default: a temporary one)")
    p.add_argument("--shared", metavar="DIR", default=str(DEFAULT_SHARED),
                   help=f"the shared real CT's folder (default {DEFAULT_SHARED})")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError

    shared = Shared(Path(args.shared))
    if not shared.ct.is_file() or not shared.labels.is_file():
        raise InputError(f"the shared CT is needed: {shared.ct} (run from the project root, ../shared beside it)")
    names = args.case or list(CASES)
    rows: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="obmd-robust-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        for name in names:
            row = run_case(CASES[name], work, shared)
            rows.append(row)
            print(_row_text(row), flush=True)
    totals = summarize_rows(rows)
    print("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    write_json(args.json, {"cases": [r.__dict__ for r in rows], "totals": totals})
    return 0 if targets_met(totals) else 1


def summarize_rows(rows: list[CaseResult]) -> dict[str, Any]:
    """The issue's targets over all cases."""
    return {
        "cases": len(rows),
        "expectation_failures": sum(not r.expectation_met for r in rows),
        "categories_from_invalid": sum(r.category_reported and CASES[r.name].expect.outcome != "category"
                                       for r in rows),
        "tracebacks": sum(r.traceback for r in rows),
        "inputs_changed": sum(bool(r.inputs_changed) for r in rows),
        "mixed_outputs": sum(bool(r.mixed_outputs) for r in rows),
        "slowest_refusal_s": max([r.seconds for r in rows if CASES[r.name].expect.outcome == "refused"
                                  and CASES[r.name].expect.before_model], default=0.0),
    }


def targets_met(totals: dict[str, Any]) -> bool:
    return not any(totals[k] for k in ("expectation_failures", "categories_from_invalid", "tracebacks",
                                       "inputs_changed", "mixed_outputs"))


def _row_text(r: CaseResult) -> str:
    ok = "ok " if r.expectation_met and not (r.traceback or r.inputs_changed or r.mixed_outputs) else "BAD"
    category = "yes" if r.category_reported else "no"
    return (f"{ok} {r.name:<26} exit {r.exit_code}  {r.outcome:<15} category {category:<3}"
            f"  {r.seconds:6.1f} s  {r.detail[:110]}")
