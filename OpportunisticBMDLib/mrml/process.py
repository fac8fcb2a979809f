"""A child process run in the background for a GUI, as SlicerMONAIAuto3DSeg runs its inference: a reader
thread pumps its output lines into a queue, the GUI's timer reads them with :meth:`BackgroundProcess.poll`
(progress lines parsed into fractions, :func:`..progress.parse_progress_line`), and Cancel kills the
whole process tree (the child and whatever it started: worker processes of a data loader, a
TotalSegmentator run), not only the child. No slicer or Qt import."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import psutil

from ..progress import PROGRESS_FORMAT_ENV, PROGRESS_JSONL, parse_progress_line


class ChildProcess(Protocol):
    """What a job needs of its child (:class:`BackgroundProcess`; a test may hand in another)."""

    proc: Any  # subprocess.Popen
    lines: list[str]
    cancelled: bool

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> list[tuple[float | None, str]]: ...

    def wait(self, timeout_s: float | None = None) -> int: ...

    def cancel(self) -> None: ...


def kill_process_tree(pid: int, timeout_s: float = 10.0) -> list[int]:
    """Kill process ``pid`` and all its descendants; returns the pids of those still alive after
    ``timeout_s`` (none, normally). The tree is listed before killing: a killed parent's children are
    re-parented and could no longer be found from it."""
    try:
        parent = psutil.Process(pid)
        tree = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for process in tree:
        try:
            process.suspend()  # no new children while the tree is being killed
        except psutil.Error:
            pass
    tree += [child for p in tree if p.is_running() for child in _children(p) if child not in tree]
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    # Our own children are left to their subprocess.Popen to reap: psutil would collect their exit status
    # first, and Popen's wait would then read "no such child" as exit status 0 (a cancel looking like success).
    others = [p for p in tree if not _is_own_child(p)]
    _gone, alive = psutil.wait_procs(others, timeout=timeout_s)
    return [p.pid for p in alive]


def _is_own_child(process: psutil.Process) -> bool:
    try:
        return process.ppid() == os.getpid()
    except psutil.Error:
        return False


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


class BackgroundProcess:
    """``argv`` in a child process, its stdout and stderr merged into one line stream.

    ``env`` entries are added to this process' environment; ``OBMD_PROGRESS=jsonl`` is always set so that
    an ``obmd`` child reports progress as JSON lines."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.cancelled = False
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        child_env = {**os.environ, **(env or {}), PROGRESS_FORMAT_ENV: PROGRESS_JSONL, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
            env=child_env,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip())
        self.proc.wait()

    @property
    def returncode(self) -> int | None:
        """None while the child runs or its output is still being read."""
        if self._thread.is_alive():
            return None
        return self.proc.returncode

    def poll(self) -> list[tuple[float | None, str]]:
        """New output lines as (progress fraction or None, message or the line's text)."""
        out = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return out
            self.lines.append(line)
            out.append(parse_progress_line(line))

    def wait(self, timeout_s: float | None = None) -> int:
        self.proc.wait(timeout_s)
        self._thread.join(timeout_s)
        return self.proc.returncode

    def cancel(self) -> None:
        """Kill the child and every process it started."""
        if self.proc.poll() is None:
            self.cancelled = True
            kill_process_tree(self.proc.pid)
            self.proc.wait(10)
