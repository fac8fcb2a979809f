"""Who may open the app's WebSocket: pages the app served itself, nothing else.

A browser lets any page open a WebSocket to any host, 127.0.0.1 included, and tells the server only the
page's ``Origin``. Without a check, a page the user visits could drive the app (load, analyze, read the
patient's images back). The upgrade is refused (403) unless the Origin is the app's own address
(scheme-independent host and port of the ``Host`` the browser connected to; localhost, 127.0.0.1 and ::1
count as one host) and that address is one the app is served on (a loopback name, or the bound host): a
foreign name made to resolve to 127.0.0.1 (DNS rebinding) has Origin == Host, so the Host is checked too.
Bound to every interface (0.0.0.0, ::) any Host is accepted: the app then has no protection anyway
(``obmd web`` says so loudly at start).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1), brackets allowed."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_port(netloc_url: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit(netloc_url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port
        return None
    return (host.lower(), port or default_port) if host else None


def origin_allowed(origin: str | None, host_header: str | None, bound_host: str, scheme: str = "http") -> bool:
    """Whether a WebSocket upgrade with this ``Origin`` and ``Host`` header may connect to an app bound to
    ``bound_host`` (see the module's docstring). No Origin (not a browser page) is refused too."""
    if not origin or not host_header or origin == "null":
        return False
    origin_scheme = urlsplit(origin).scheme.lower()
    if origin_scheme not in ("http", "https"):
        return False
    from_page = _host_port(origin, DEFAULT_PORTS[origin_scheme])
    served = _host_port(f"//{host_header}", DEFAULT_PORTS.get(scheme, 80))
    if from_page is None or served is None or from_page[1] != served[1]:
        return False
    same_host = from_page[0] == served[0] or (is_loopback(from_page[0]) and is_loopback(served[0]))
    return same_host and host_allowed(host_header, bound_host, scheme)


def host_allowed(host_header: str | None, bound_host: str, scheme: str = "http") -> bool:
    """Whether a request's ``Host`` is an address the app is served on (a loopback name, or the bound host):
    a foreign name made to resolve to 127.0.0.1 (DNS rebinding) is refused. Any Host when bound to every
    interface."""
    served = _host_port(f"//{host_header}", DEFAULT_PORTS.get(scheme, 80)) if host_header else None
    if served is None:
        return False
    bound = bound_host.strip().strip("[]").lower()
    return is_loopback(served[0]) or bound in WILDCARD_HOSTS or served[0] == bound


def origin_middleware(bound_host: str) -> Any:
    """An aiohttp middleware refusing WebSocket upgrades from other origins (:func:`origin_allowed`)."""
    from aiohttp import web

    @web.middleware
    async def check_origin(request: web.Request, handler: Any) -> Any:
        if request.headers.get("Upgrade", "").lower() == "websocket" and not origin_allowed(
                request.headers.get("Origin"), request.headers.get("Host"), bound_host, request.scheme):
            log.warning("obmd web: WebSocket refused: Origin %r, Host %r", request.headers.get("Origin"),
                        request.headers.get("Host"))
            raise web.HTTPForbidden(text="obmd web: this page's origin may not connect to the app\n")
        return await handler(request)

    return check_origin


def install_origin_check(wslink_server: Any) -> None:
    """trame's ``on_server_bind`` hook: add the check to wslink's aiohttp application before it starts."""
    app = getattr(wslink_server, "app", None)
    if app is None:  # not the aiohttp backend: no way to check, so no way to serve safely
        raise RuntimeError("obmd web needs wslink's aiohttp backend to check WebSocket origins")
    app.middlewares.append(origin_middleware(str(getattr(wslink_server, "host", "127.0.0.1"))))
