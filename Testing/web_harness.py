"""Helpers for the browser tests: run ``obmd web`` on a free 127.0.0.1 port and drive Debian chromium.

No browser is downloaded: playwright launches the system ``chromium`` (``apt-get install chromium``;
``.ci/system-deps.sh`` installs it). Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "Testing" / "artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_or_skip() -> str:
    """Path of the Debian chromium; installs it with .ci/system-deps.sh when missing and possible.

    In CI (``CI`` set) a missing browser fails the test; elsewhere it skips with the reason."""
    path = shutil.which("chromium")
    if path is None and (os.geteuid() == 0 or shutil.which("sudo")):
        subprocess.run(["bash", str(REPO / ".ci" / "system-deps.sh")], check=False, timeout=600)
        path = shutil.which("chromium")
    if path is None:
        message = "Debian chromium is not installed and could not be installed (run: bash .ci/system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def obmd_web(args: list[str], log_path: Path, startup_timeout_s: float = 120.0, entry: list[str] | None = None):
    """Start ``obmd web ARGS --port P`` (127.0.0.1); yield its URL; stop it afterwards.

    ``entry``: the command before ``web`` (default: this Python running the ``obmd`` CLI)."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed in finally
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*(entry or [sys.executable, "-m", "OpportunisticBMDLib.cli"]), "web", *args,
         "--port", str(port), "--host", "127.0.0.1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"obmd web exited with {proc.returncode}; log:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"obmd web not serving after {startup_timeout_s} s; log:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Terminate a server a test started; kill it when it does not end in ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


@contextmanager
def browser_page(chromium: str, width: int = 1600, height: int = 950):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def read_table(page) -> dict:
    """The numbers the results panel shows (from the rows' data attributes, full precision)."""
    levels = {}
    for row in page.locator('[data-testid="level-row"]').all():
        levels[row.get_attribute("data-level")] = {
            "vbmd": _float(row.get_attribute("data-vbmd")),
            "hu": _float(row.get_attribute("data-hu")),
            "text": row.inner_text(),
        }
    calibration = {}
    for row in page.locator('[data-testid="calibration-table"] tr').all():
        calibration[row.get_attribute("data-key")] = row.get_attribute("data-value")
    summary = page.locator('[data-testid="summary-vbmd"]')
    return {
        "levels": levels,
        "calibration": calibration,
        "summary_vbmd": _float(summary.get_attribute("data-value")),
        "summary_text": summary.inner_text(),
        "category": page.locator('[data-testid="category"]').inner_text(),
    }


def _float(value: str | None) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
