"""The Slicer module's background job machinery without Slicer: a child's JSON-lines progress stream is
parsed into fractions and messages, and Cancel kills the child's whole process tree (a grandchild holding
the output pipe included), so the job ends at once and nothing keeps running."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import psutil

from OpportunisticBMDLib.mrml.process import BackgroundProcess, kill_process_tree
from OpportunisticBMDLib.progress import (
    PROGRESS_FORMAT_ENV,
    PROGRESS_JSONL,
    TerminalProgress,
    parse_progress_line,
    progress_json_line,
)

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_terminal_progress_writes_json_lines_that_parse_back(monkeypatch):
    monkeypatch.setenv(PROGRESS_FORMAT_ENV, PROGRESS_JSONL)
    stream = io.StringIO()
    progress = TerminalProgress(stream=stream)
    progress(0.0, "Reading the CT")
    progress(0.25, "Reading the CT")  # same message, new fraction: still reported
    progress(1.5, "Done")  # clipped to 1
    parsed = [parse_progress_line(line) for line in stream.getvalue().splitlines()]
    assert parsed == [(0.0, "Reading the CT"), (0.25, "Reading the CT"), (1.0, "Done")]


def test_other_lines_are_text():
    assert parse_progress_line("UserWarning: something") == (None, "UserWarning: something")
    assert parse_progress_line('{"not": "progress"}') == (None, '{"not": "progress"}')
    assert parse_progress_line('{"obmd_progress": broken') == (None, '{"obmd_progress": broken')
    assert parse_progress_line(progress_json_line(0.4, "Segmenting {L1}", 2.0)) == (0.4, "Segmenting {L1}")


def test_child_progress_stream_is_parsed_into_fractions_and_messages():
    script = (
        "from OpportunisticBMDLib.progress import TerminalProgress\n"
        "p = TerminalProgress()\n"
        "p(0.0, 'start'); p(0.5, 'half way')\n"
        "print('a plain line', flush=True)\n"
        "p(1.0, 'done')\n"
    )
    job = BackgroundProcess([sys.executable, "-c", script], env=CHILD_ENV)
    assert job.wait(60) == 0
    reported = job.poll()
    assert [r for r in reported if r[0] is not None] == [(0.0, "start"), (0.5, "half way"), (1.0, "done")]
    assert (None, "a plain line") in reported
    assert job.returncode == 0 and not job.cancelled


GRANDCHILD_PARENT = (
    "import subprocess, sys, time\n"
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('grandchild', grandchild.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _grandchild_pid(job: BackgroundProcess) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for _fraction, text in job.poll():
            if text.startswith("grandchild "):
                return int(text.split()[1])
        time.sleep(0.05)
    raise AssertionError(f"the child never reported its grandchild: {job.lines}")


def test_cancel_kills_the_whole_process_tree():
    job = BackgroundProcess([sys.executable, "-c", GRANDCHILD_PARENT], env=CHILD_ENV)
    grandchild = _grandchild_pid(job)
    child = job.pid
    assert _alive(child) and _alive(grandchild)
    assert psutil.Process(grandchild).ppid() == child
    job.cancel()
    assert job.cancelled
    assert not _alive(child) and not _alive(grandchild)
    # the grandchild held the output pipe: only with it dead does the reader see the end and the job end
    deadline = time.monotonic() + 10
    while job.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.returncode is not None and job.returncode != 0


def test_kill_process_tree_of_a_finished_process_is_a_no_op():
    job = BackgroundProcess([sys.executable, "-c", "pass"], env=CHILD_ENV)
    assert job.wait(60) == 0
    assert kill_process_tree(job.pid) == []
    job.cancel()  # nothing to cancel
    assert not job.cancelled


def test_kill_process_tree_returns_no_survivors():
    grandchildren = 3
    script = (
        "import subprocess, sys, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
        f"kids = [subprocess.Popen(sleeper) for _ in range({grandchildren})]\n"
        "print(' '.join(str(k.pid) for k in kids), flush=True)\n"
        "time.sleep(120)\n"
    )
    job = BackgroundProcess([sys.executable, "-c", script], env=CHILD_ENV)
    deadline = time.monotonic() + 30
    pids: list[int] = []
    while not pids and time.monotonic() < deadline:
        pids = [int(p) for _f, text in job.poll() for p in text.split() if p.isdigit()]
        time.sleep(0.05)
    assert len(pids) == grandchildren
    assert kill_process_tree(job.pid) == []
    job.wait(10)
    assert not any(_alive(pid) for pid in [job.pid, *pids])


def test_analysis_job_cancel_kills_its_tree_and_cleanup_removes_its_folder(tmp_path):
    """The Slicer module's job object (no Slicer needed for a child that is not ``obmd analyze``): its child
    imports this very package, Cancel kills the child and what it started, cleanup deletes the work folder."""
    from OpportunisticBMDLib.mrml.background_job import AnalysisJob

    work_dir = tmp_path / "job"
    work_dir.mkdir()
    script = "import OpportunisticBMDLib as p\nprint('package', p.__file__, flush=True)\n" + GRANDCHILD_PARENT
    job = AnalysisJob([sys.executable, "-c", script], work_dir, None, None)
    grandchild = _grandchild_pid(job.process)
    assert any(line == f"package {REPO / 'OpportunisticBMDLib' / '__init__.py'}" for line in job.lines), job.lines
    child = job.proc.pid
    job.cancel()
    assert job.cancelled and not _alive(child) and not _alive(grandchild)
    job.cleanup()
    assert not work_dir.exists()
    assert job.returncode is not None and job.returncode != 0
