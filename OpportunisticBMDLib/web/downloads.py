"""Saved reports handed to the user's browser: ``GET /obmd-report/<token>/report.pdf`` (the PDF) and
``/obmd-report/<token>/report.zip`` (the whole report folder).

Only folders this app saved are offered, each under a random token that reaches the page through its
WebSocket (itself origin-checked, :mod:`.origin`); a request whose ``Host`` is not an address the app is
served on (DNS rebinding) is refused, and the file names are fixed (no path from the request is opened).
Another site's page can neither guess a token nor read a response (no CORS headers are sent).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import zipfile
from pathlib import Path
from typing import Any

from .origin import host_allowed

PREFIX = "/obmd-report"
PDF_NAME = "report.pdf"  # report.REPORT_NAME inside the folder
ZIP_NAME = "report.zip"

log = logging.getLogger(__name__)


def zip_folder(folder: Path) -> bytes:
    """The folder's files under ``<folder name>/`` (compressed NIfTI masks are stored, not compressed again)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            packed = zipfile.ZIP_STORED if path.name.endswith((".gz", ".png")) else zipfile.ZIP_DEFLATED
            archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}", compress_type=packed)
    return buffer.getvalue()


class ReportDownloads:
    """The report folders offered for download, by token."""

    def __init__(self) -> None:
        self._folders: dict[str, Path] = {}
        self._bound_host = "127.0.0.1"

    def offer(self, folder: str | Path) -> dict[str, str]:
        """URLs (relative to the page) of ``folder``'s PDF and zip."""
        token = secrets.token_urlsafe(18)
        self._folders[token] = Path(folder)
        return {"pdf": f"{PREFIX}/{token}/{PDF_NAME}", "zip": f"{PREFIX}/{token}/{ZIP_NAME}",
                "name": Path(folder).name}

    def install(self, wslink_server: Any) -> None:
        """trame's ``on_server_bind`` hook: add the route before the server starts (it then comes before the
        static files)."""
        app = getattr(wslink_server, "app", None)
        if app is None:
            raise RuntimeError("obmd web needs wslink's aiohttp backend to serve report downloads")
        self._bound_host = str(getattr(wslink_server, "host", "127.0.0.1"))
        app.router.add_get(PREFIX + "/{token}/{name}", self.handle)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if not host_allowed(request.headers.get("Host"), self._bound_host, request.scheme):
            log.warning("obmd web: report download refused: Host %r", request.headers.get("Host"))
            raise web.HTTPForbidden(text="obmd web: not served under this host name\n")
        folder = self._folders.get(request.match_info["token"])
        name = request.match_info["name"]
        if folder is None or name not in (PDF_NAME, ZIP_NAME) or not folder.is_dir():
            raise web.HTTPNotFound(text="no such report (saved by another run of the app, or deleted)\n")
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", folder.name)  # a safe header value whatever the case's name
        if name == PDF_NAME:
            pdf = folder / PDF_NAME
            if not pdf.is_file():
                raise web.HTTPNotFound(text="this report has no PDF\n")
            body, content_type, filename = pdf.read_bytes(), "application/pdf", f"{stem}.pdf"
        else:
            body = await asyncio.get_running_loop().run_in_executor(None, zip_folder, folder)
            content_type, filename = "application/zip", f"{stem}.zip"
        return web.Response(body=body, content_type=content_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})
