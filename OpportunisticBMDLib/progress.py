"""Progress reporting shared by the CLI (terminal bar), the Slicer module and the web app.

A parent process running ``obmd`` (the Slicer module's background job, :mod:`.mrml.background_job`) sets
``OBMD_PROGRESS=jsonl``: the child's :class:`TerminalProgress` then writes one JSON object per report
(:func:`progress_json_line`) and the parent reads them back with :func:`parse_progress_line`, instead of
parsing a bar meant for people.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Protocol

PROGRESS_FORMAT_ENV = "OBMD_PROGRESS"  # "jsonl": machine-readable progress lines (see the module's doc)
PROGRESS_JSONL = "jsonl"
_KEY = "obmd_progress"  # the key that marks a progress line among a child's other output


class Progress(Protocol):
    def __call__(self, fraction: float, message: str) -> None: ...


def no_progress(fraction: float, message: str) -> None:
    """A :class:`Progress` that reports nothing."""


class TerminalProgress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.last_message = ""
        self.jsonl = os.environ.get(PROGRESS_FORMAT_ENV) == PROGRESS_JSONL

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.start
        if self.jsonl:  # every report: the parent's bar follows the fraction, not only new messages
            self.stream.write(progress_json_line(fraction, message, elapsed) + "\n")
        elif self.stream.isatty():
            filled = int(round(self.width * fraction))
            bar = "#" * filled + "-" * (self.width - filled)
            end = "\n" if fraction >= 1.0 else ""
            self.stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {elapsed:6.1f}s {message[:60]:<60}{end}")
        elif message != self.last_message:
            self.stream.write(f"[{fraction * 100:5.1f}% {elapsed:6.1f}s] {message}\n")
        self.last_message = message
        self.stream.flush()


def scaled(progress: Progress, start: float, stop: float) -> Progress:
    """A progress callback mapping a sub-task's 0..1 onto ``start..stop`` of the parent."""

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * fraction, message)

    return report


def progress_json_line(fraction: float, message: str, elapsed_s: float | None = None) -> str:
    """One progress report as a JSON line: ``{"obmd_progress": 0.42, "message": "...", "elapsed_s": 1.2}``."""
    entry: dict[str, float | str] = {_KEY: round(float(fraction), 4), "message": str(message)}
    if elapsed_s is not None:
        entry["elapsed_s"] = round(float(elapsed_s), 2)
    return json.dumps(entry)


def parse_progress_line(line: str) -> tuple[float | None, str]:
    """``(fraction 0-1, message)`` of a :func:`progress_json_line`; ``(None, line)`` for any other output
    line (warnings, the final summary, a traceback)."""
    text = line.strip()
    if text.startswith("{") and _KEY in text:
        try:
            entry = json.loads(text)
            return float(entry[_KEY]), str(entry.get("message", ""))
        except (ValueError, KeyError, TypeError):
            pass
    return None, line
