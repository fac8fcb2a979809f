"""Progress reporting shared by the CLI (terminal bar), the Slicer module and the web app."""

from __future__ import annotations

import sys
import time
from typing import Protocol


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

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.perf_counter() - self.start
        if self.stream.isatty():
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
