"""The browser app's report downloads (web/downloads.py) on a real aiohttp server: only folders the app saved,
only their PDF and zip, never under a foreign Host name (DNS rebinding). The click in a real chromium is in
test_web_browser.py."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from OpportunisticBMDLib.web.downloads import ReportDownloads


def _report(tmp_path: Path) -> Path:
    folder = tmp_path / "case-20260101-120000"
    (folder / "masks").mkdir(parents=True)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 test")
    (folder / "results.json").write_text("{}\n")
    (folder / "masks" / "fat_roi.nii.gz").write_bytes(b"\x1f\x8bmask")
    return folder


async def _requests(downloads: ReportDownloads, urls: dict[str, str]) -> dict[str, tuple[int, bytes, dict]]:
    app = web.Application()
    downloads.install(SimpleNamespace(app=app, host="127.0.0.1"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        token = urls["pdf"].split("/")[2]
        out = {}
        for key, path, headers in (
                ("pdf", urls["pdf"], {}), ("zip", urls["zip"], {}),
                ("rebinding", urls["pdf"], {"Host": f"evil.example:{client.port}"}),
                ("unknown_token", urls["pdf"].replace(token, "x" * len(token)), {}),
                ("other_file", f"/obmd-report/{token}/results.json", {}),
                ("traversal", f"/obmd-report/{token}/..%2Fresults.json", {})):
            response = await client.get(path, headers=headers)
            out[key] = (response.status, await response.read(), dict(response.headers))
        return out


def test_only_the_saved_reports_pdf_and_zip_under_our_host(tmp_path: Path) -> None:
    folder = _report(tmp_path)
    downloads = ReportDownloads()
    urls = downloads.offer(folder)
    got = asyncio.run(_requests(downloads, urls))
    status, body, headers = got["pdf"]
    assert status == 200 and body == b"%PDF-1.4 test" and headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == f'attachment; filename="{folder.name}.pdf"'
    status, body, headers = got["zip"]
    assert status == 200 and headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == [f"{folder.name}/masks/fat_roi.nii.gz", f"{folder.name}/report.pdf",
                                              f"{folder.name}/results.json"]
        assert archive.read(f"{folder.name}/report.pdf") == b"%PDF-1.4 test"
    assert got["rebinding"][0] == 403
    assert got["unknown_token"][0] == 404 and got["other_file"][0] == 404 and got["traversal"][0] == 404
