"""Safety of ``obmd web``: what the page may claim, what it must ask, who may connect (issue #13 item 4).

Browser tests share one server (a digital patient: its header carries kVp, age and sex) and one headless
Debian chromium page, driven in order as a user would: Cancel an Analyze, Analyze, Recompute unchanged,
switch calibration methods, delete a ROI (asked first), Recompute, Undo. The WebSocket's Origin check is
tested with a raw client; the warning for a non-loopback ``--host`` on the command's output.
Screenshots land in Testing/artifacts/safety/ (gitignored).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web_harness import ARTIFACTS, REPO, browser_page, chromium_or_skip, free_port, obmd_web, read_table

from OpportunisticBMDLib.commands.web import exposure_warning
from OpportunisticBMDLib.web.origin import is_loopback, origin_allowed
from OpportunisticBMDLib.web.results_view import results_view

SHOTS = ARTIFACTS / "safety"
ANALYZE_TIMEOUT_MS = 240_000


# ----------------------------------------------------------------------------- no browser
@pytest.mark.parametrize(("origin", "host", "bound", "allowed"), [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", True),
    ("http://localhost:8080", "127.0.0.1:8080", "127.0.0.1", True),  # loopback names are one host
    ("http://[::1]:8080", "localhost:8080", "127.0.0.1", True),
    ("https://evil.example", "127.0.0.1:8080", "127.0.0.1", False),  # a page the user visits
    ("http://evil.example:8080", "evil.example:8080", "127.0.0.1", False),  # DNS rebinding: Origin == Host
    ("http://127.0.0.1:9999", "127.0.0.1:8080", "127.0.0.1", False),  # another local app's page
    (None, "127.0.0.1:8080", "127.0.0.1", False),
    ("null", "127.0.0.1:8080", "127.0.0.1", False),  # sandboxed frame / file:// page
    ("http://10.0.0.5:8080", "10.0.0.5:8080", "0.0.0.0", True),  # served to the network (warned at start)
    ("http://evil.example:8080", "10.0.0.5:8080", "0.0.0.0", False),
    ("http://10.0.0.5:8080", "10.0.0.5:8080", "10.0.0.5", True),
])
def test_origin_allowed(origin, host, bound, allowed) -> None:
    assert origin_allowed(origin, host, bound) is allowed


def test_exposure_warning_only_beyond_loopback() -> None:
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert exposure_warning("::1") is None and is_loopback("127.0.0.2")
    for host in ("0.0.0.0", "::", "192.168.1.20", "myhost.example"):
        text = exposure_warning(host)
        assert "NO AUTHENTICATION" in text and host in text and "patient's images" in text


def test_obmd_web_on_all_interfaces_warns_first(tmp_path: Path) -> None:
    """The warning comes before anything is loaded or served (the process is stopped once it is seen)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "OpportunisticBMDLib.cli", "web", "--host", "0.0.0.0", "--port", str(free_port()),
         "--no-analyze", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(lines) < 6:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.kill()
        proc.wait(timeout=15)
    text = "".join(lines)
    assert "WARNING: obmd web is listening on 0.0.0.0" in text and "NO AUTHENTICATION" in text, text


def test_uploaded_dicom_header_is_read(shared_data: Path) -> None:
    """A DICOM file trame-slicer loads an upload from: its tags give the header (kVp 120) as for the CLI."""
    from OpportunisticBMDLib.web.cases import header_of_file

    first = sorted((shared_data / "dicom_upper_abdomen" / "series").iterdir())[0]
    header = header_of_file(first)
    assert header["kvp"] == "120" and header["modality"] == "CT"
    assert header_of_file(shared_data / "ct.nii.gz") == {}  # no sidecar beside it


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory):
    """One server (digital patient seed 3 at 3 mm, not analysed yet) and one page for the module."""
    chromium = chromium_or_skip()
    out = tmp_path_factory.mktemp("web-safety")
    SHOTS.mkdir(parents=True, exist_ok=True)
    args = ["--phantom-seed", "3", "--phantom-spacing", "3", "--no-analyze", "--out", str(out / "reports"),
            "--dataset", str(out / "dataset")]
    with obmd_web(args, SHOTS / "server.log") as url, browser_page(chromium) as page:
        yield {"url": url, "page": page, "out": out}


def _enabled(page, testid: str) -> None:
    page.wait_for_function("(id) => { const b = document.querySelector(`[data-testid=${id}]`);"
                           " return b && !b.disabled; }", arg=testid, timeout=ANALYZE_TIMEOUT_MS)


def _save_report(page) -> dict:
    previous = page.evaluate("() => document.querySelector('[data-testid=last-report]')?.innerText || ''")
    page.wait_for_timeout(1100)  # report folders are named to the second
    page.locator('[data-testid="save-report"]').click()
    page.wait_for_function("(before) => { const e = document.querySelector('[data-testid=last-report]');"
                           " return e && e.innerText !== before; }", arg=previous, timeout=60_000)
    report_dir = Path(page.locator('[data-testid="last-report"]').inner_text().split(":", 1)[1].strip())
    with open(report_dir / "results.csv") as handle:
        row = next(csv.DictReader(handle))
    return {"json": json.loads((report_dir / "results.json").read_text()), "csv": row}


def _pick_method(page, method: str) -> None:
    page.locator('[data-testid="calibration-method"]').click()
    page.locator(f'.v-overlay .v-list-item:has-text("{method} (")').first.click()
    page.wait_for_function(f"() => document.querySelector('[data-testid=calibration-table] tr[data-key=method]')"
                           f"?.dataset.value === '{method}'", timeout=120_000)
    _enabled(page, "recompute")


def _watch_busy(page) -> None:
    """Record in the page whether a Recompute showed its busy state with the buttons off."""
    page.evaluate("""() => {
        window.__obmdBusy = {seen: false, buttonsOff: false};
        const check = () => {
            const bar = document.querySelector('[data-testid=progress][data-task=recompute]');
            if (!bar) return;
            window.__obmdBusy.seen = true;
            const off = id => document.querySelector(`[data-testid=${id}]`)?.disabled === true;
            if (off('recompute') && off('analyze') && off('save-report') && off('export'))
                window.__obmdBusy.buttonsOff = true;
        };
        new MutationObserver(check).observe(document.body, {subtree: true, childList: true, attributes: true});
    }""")


def _ws_handshake(url: str, origin: str | None) -> int:
    """HTTP status of a raw WebSocket upgrade request to the app's /ws with this Origin (101: accepted)."""
    import base64
    import os
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = (f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
               + (f"Origin: {origin}\r\n" if origin else "") + "\r\n")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


@pytest.mark.browser
@pytest.mark.slow
def test_websocket_refuses_foreign_origins(web) -> None:
    url = web["url"]
    assert _ws_handshake(url, "https://evil.example") == 403
    assert _ws_handshake(url, None) == 403
    assert _ws_handshake(url, url.replace("127.0.0.1", "localhost").rstrip("/")) == 101
    assert _ws_handshake(url, url.rstrip("/")) == 101
    page = web["page"]  # the app's own page still connects
    page.goto(url)
    page.locator('[data-testid="analyze"]').wait_for(state="visible")
    _enabled(page, "analyze")


@pytest.mark.browser
@pytest.mark.slow
def test_analyze_can_be_cancelled(web) -> None:
    page = web["page"]
    page.locator('[data-testid="analyze"]').click()
    page.locator('[data-testid="cancel"]').wait_for(state="visible", timeout=30_000)
    page.locator('[data-testid="cancel"]').click()
    page.locator('[data-testid="progress"]').wait_for(state="detached", timeout=10_000)  # usable at once
    assert "cancelled" in page.locator('[data-testid="message"]').inner_text()
    _enabled(page, "analyze")  # once the worker has stopped at its next step
    page.wait_for_timeout(2000)
    assert page.locator('[data-testid="level-row"]').count() == 0  # nothing of it shown, then or later
    assert page.locator('[data-testid="summary"]').count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_analyze_uses_the_header_and_recompute_changes_nothing(web) -> None:
    """Analyze reads kVp, age and sex from the CT's header as `obmd analyze` does; Recompute with no edit
    gives the very same numbers (it used to switch to the header silently: +2..+4 mg/cm³)."""
    page = web["page"]
    page.locator('[data-testid="analyze"]').click()
    page.locator('[data-testid="level-row"]').first.wait_for(state="visible", timeout=ANALYZE_TIMEOUT_MS)
    _enabled(page, "analyze")
    analyzed = read_table(page)
    assert analyzed["calibration"]["kvp"] == "120" and analyzed["calibration"]["patient"] == "62 F"
    assert "120 kV (header)" in page.locator('[data-testid="calibration-table"]').inner_text()
    _watch_busy(page)
    page.locator('[data-testid="recompute"]').click()
    page.wait_for_function("() => window.__obmdBusy.seen", timeout=30_000)
    _enabled(page, "recompute")
    assert page.evaluate("() => window.__obmdBusy.buttonsOff"), "buttons stayed on while recomputing"
    recomputed = read_table(page)
    assert recomputed["summary_vbmd"] == analyzed["summary_vbmd"]
    def vbmd(table: dict) -> dict:
        return {level: row["vbmd"] for level, row in table["levels"].items()}

    assert vbmd(recomputed) == vbmd(analyzed)
    assert recomputed["calibration"] == analyzed["calibration"]
    saved = _save_report(page)["json"]
    assert saved["options"]["patient_age"] == 62 and saved["options"]["patient_sex"] == "F"
    assert "kvp_assumed" not in {q["code"] for q in saved["qc"]}
    page.screenshot(path=SHOTS / "01-analyzed.png")


@pytest.mark.browser
@pytest.mark.slow
def test_category_chip_and_calibration_methods(web) -> None:
    """The chip shows the results' category (coloured) or "not measurable" (grey, with why); each method
    says how it is validated; the summary shows the ± the results state, or that none is stated."""
    page = web["page"]
    chip = page.locator('[data-testid="category"]')
    validation = page.locator('[data-testid="calibration-validation"]')
    sd = page.locator('[data-testid="summary-sd"]')
    saved = _save_report(page)["json"]
    category = saved["spine"]["summary"]["category"]
    assert category and chip.inner_text().strip() == category and chip.get_attribute("data-known") == "true"
    stated = saved["spine"]["summary"]["vbmd_calibration_sd_mg_cm3"]
    assert sd.inner_text().startswith(f"± {stated:.1f} mg/cm³")
    assert "phantomless, ± stated" in validation.inner_text()
    status = saved.get("status")  # the pipeline's scan status, when it gives one
    if status:
        assert page.locator('[data-testid="status"]').get_attribute("data-status") == status

    page.locator('[data-testid="calibration-method"]').click()  # every method says how it is validated
    menu = page.locator(".v-overlay .v-list").last.inner_text()
    assert "validated against the pad's rods" in menu and "no vBMD and no category" in menu
    page.keyboard.press("Escape")
    _pick_method(page, "internal-multi")
    assert "no ± stated" in sd.inner_text() and "no ± stated" in validation.inner_text()
    _pick_method(page, "hu")
    assert chip.inner_text().strip() == "not measurable" and chip.get_attribute("data-known") == "false"
    assert "green" not in (chip.get_attribute("class") or "") and "bg-" not in (chip.get_attribute("class") or "")
    # why: in the scan status the results give (HU only), shown in place of the chip's own list
    assert "HU only" in page.locator('[data-testid="status"]').inner_text()
    page.locator('[data-testid="summary"]').scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "02-hu-not-measurable.png")
    _pick_method(page, "muscle-fat")
    assert chip.inner_text().strip() == category

    # results with the scan status (the pipeline's contract): shown as the page would get them from Analyze
    contract = {"status": "not_measurable",
                "status_reasons": [{"code": "roi_too_small", "message": "T12: trabecular ROI 0.35 cm³"}],
                "spine": {"levels": {"T12": {"vbmd_mg_cm3": 160.0, "roi_volume_mm3": 350.0, "valid": False,
                                             "invalid_reasons": ["roi_too_small"]}},
                          "summary": {"vbmd_mg_cm3": None, "levels_used": [], "category": None}}}
    shown = page.evaluate("(v) => { const old = window.trame.state.get('obmd_view');"
                          " window.trame.state.set('obmd_view', v); return old; }", results_view(contract))
    status = page.locator('[data-testid="status"]')
    status.wait_for(state="visible")
    assert status.get_attribute("data-status") == "not_measurable"
    assert "not measurable" in status.inner_text() and "T12: trabecular ROI 0.35 cm³" in status.inner_text()
    assert chip.inner_text().strip() == "not measurable" and chip.get_attribute("data-known") == "false"
    assert "T12 (not in summary: roi_too_small)" in page.locator('[data-testid="level-row"]').first.inner_text()
    page.locator('[data-testid="summary"]').screenshot(path=SHOTS / "03-status-not-measurable.png")
    page.evaluate("(v) => window.trame.state.set('obmd_view', v)", shown)
    page.wait_for_function("(c) => document.querySelector('[data-testid=category]').innerText.trim() === c",
                           arg=category)


@pytest.mark.browser
@pytest.mark.slow
def test_delete_asks_marks_edited_keeps_hip_qc_and_undo_clears(web) -> None:
    """The trash icon asks; a delete marks the case edited; the spine-only Recompute keeps the hip block and
    its QC together (page, results.json, results.csv); Undo back to what Analyze wrote clears "(edited)"."""
    page = web["page"]
    case = page.locator('[data-testid="case-name"]')
    hip_codes = {c for c in page.locator('[data-testid="qc"] [data-code]').evaluate_all(
        "els => els.map(e => e.dataset.code)") if c.startswith("hip_")}
    assert hip_codes, "the digital patient's hips give QC flags"
    t_scores = page.locator('[data-testid="hip-row"]').evaluate_all("els => els.map(e => e.dataset.t)")

    page.locator('[data-testid="edit-trabecular_L4"]').click()
    trash = page.locator(".v-navigation-drawer .v-list-item--active .mdi-delete-outline")
    trash.click()
    dialog = page.locator('[data-testid="confirm-delete"]')
    dialog.wait_for(state="visible")
    assert "L4" in dialog.inner_text()
    page.locator('[data-testid="delete-cancel"]').click()
    dialog.wait_for(state="detached")
    page.wait_for_timeout(800)
    assert "(edited)" not in case.inner_text() and page.locator('[data-testid="edit-trabecular_L4"]').count() == 1

    trash.click()
    page.locator('[data-testid="delete-confirm"]').click()
    page.locator('[data-testid="edit-trabecular_L4"]').wait_for(state="detached", timeout=10_000)
    page.wait_for_function("() => document.querySelector('[data-testid=case-name]').innerText.includes('(edited)')",
                           timeout=10_000)
    page.locator('[data-testid="stale"]').wait_for(state="visible", timeout=10_000)
    assert "trabecular_L4" in page.locator('[data-testid="deleted"]').inner_text()

    page.locator('[data-testid="recompute"]').click()
    page.locator('[data-testid="stale"]').wait_for(state="detached", timeout=120_000)
    _enabled(page, "recompute")
    assert "L4" not in read_table(page)["levels"]
    shown = set(page.locator('[data-testid="qc"] [data-code]').evaluate_all("els => els.map(e => e.dataset.code)"))
    assert hip_codes <= shown, "the hip's T-scores are shown without their QC"
    assert page.locator('[data-testid="hip-row"]').evaluate_all("els => els.map(e => e.dataset.t)") == t_scores
    report = _save_report(page)
    assert hip_codes <= {q["code"] for q in report["json"]["qc"]}
    assert hip_codes <= set(report["csv"]["qc_codes"].split(";"))
    assert any(k.startswith("hip_") and k.endswith("_t_score") for k in report["csv"])
    page.screenshot(path=SHOTS / "04-deleted-recomputed.png")

    page.locator("button:has(.mdi-undo)").first.click()  # the segment editor's Undo: L4 is back
    page.locator('[data-testid="edit-trabecular_L4"]').wait_for(state="visible", timeout=10_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=case-name]').innerText.includes('(edited)')",
                           timeout=10_000)
    assert page.locator('[data-testid="deleted"]').count() == 0
    page.locator('[data-testid="stale"]').wait_for(state="visible")  # measured without L4: out of date
