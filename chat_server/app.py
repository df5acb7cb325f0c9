"""Wiring: database, hub, and the websockets server with its small HTTP surface.

``HubServer`` is what the CLI runs and what tests start on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import http
import json
import signal
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from storage.engine import Database, open_database

from .config import Config
from .hub import Hub
from .logs import log_event
from .session import Session

__all__ = ["HubServer", "run_forever"]

WS_PATH = "/ws"


class HubServer:
    """The hub process: ``await start()``, ``url``, ``await stop()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None
        self.hub: Hub | None = None
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        sockname = next(iter(self._server.sockets)).getsockname()
        return int(sockname[1])

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/"

    async def start(self) -> None:
        self.db = await open_database(self.config.db_url, self.config.resolved_data_key())
        # The hub's own signing-only key (it signs chain heads; nothing is sealed to it).
        self.hub = Hub(self.config, self.db, self.config.server_key())
        self.hub.start()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            compression=None,  # ciphertext does not compress; compression beside secrets leaks
            max_size=self.config.max_frame_bytes,
            max_queue=16,
            write_limit=64 * 1024,
            process_request=self._http,
            server_header="counsel-chat",
        )
        log_event("hub.listening", host=self.config.host, port=self.port)

    async def stop(self) -> None:
        """Graceful: stop accepting, finish commits (acks go out), close sessions with 1001."""
        if self._server is None or self.hub is None or self.db is None:
            return
        self._server.close(close_connections=False)
        await self.hub.shutdown()
        await self._server.wait_closed()
        await self.db.close()
        self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        assert self.hub is not None
        session = Session(self.hub, ws)
        self.hub.registry.connect(session)
        await session.run()

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/config.json":
            return _web_config(self.config)
        if path == WS_PATH:
            if not _origin_allowed(request.headers, self.config.allowed_origins):
                log_event("http.origin_refused")
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            return None
        return _static(connection, path, self.config.web_root)


def _origin_allowed(headers: Headers, allowed: tuple[str, ...] | None) -> bool:
    """Browsers always send Origin; a page may open our socket only from an allowed origin.

    No Origin at all means a native client (the SDK, a mobile app), which is fine: they
    authenticate with keys, and Origin only defends browser users against other sites.
    By default only the hub's own origin (same host and port as the request) is allowed.
    """
    origin = headers.get("Origin")
    if origin is None:
        return True
    if allowed is not None:
        return origin in allowed
    host = headers.get("Host")
    return host is not None and origin in (f"http://{host}", f"https://{host}")


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


#: What the page needs; the rest of the web root (web_client/: package.json, src/,
#: node_modules/) is build input and is not served.
_WEB_PUBLIC_FILES = frozenset({"index.html", "style.css"})
_WEB_PUBLIC_DIRS = ("dist/",)


def _web_config(config: Config) -> Response:
    """Settings the counselor web chat reads at start (no secrets in here)."""
    body = json.dumps(
        {
            "idle_lock_seconds": round(config.idle_lock_minutes * 60, 3),
            # The page's escrow pin (public; docs/WEB.md explains why it is a weaker pin).
            "org_fingerprint": config.org_fingerprint,
        }
    ).encode()
    headers = Headers(_SECURITY_HEADERS)
    headers["Content-Type"] = _TYPES[".json"]
    headers["Content-Length"] = str(len(body))
    return Response(http.HTTPStatus.OK, "OK", headers, body)


def _static(connection: ServerConnection, path: str, web_root: Path) -> Response:
    """Serve the counselor web chat's built files from ``web_root`` (no directory listing)."""
    name = "index.html" if path in ("/", "") else path.lstrip("/")
    root = web_root.resolve()
    target = (root / name).resolve()
    if root not in target.parents or not target.is_file() or target.suffix not in _TYPES:
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    relative = target.relative_to(root).as_posix()  # after resolving any ".."
    if relative not in _WEB_PUBLIC_FILES and not relative.startswith(_WEB_PUBLIC_DIRS):
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
    body = target.read_bytes()
    headers = Headers(_SECURITY_HEADERS)
    headers["Content-Type"] = _TYPES[target.suffix]
    headers["Content-Length"] = str(len(body))
    return Response(http.HTTPStatus.OK, "OK", headers, body)


async def run_forever(config: Config, *, announce: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = HubServer(config)
    await server.start()
    if announce:
        _announce(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log_event("hub.stopping")
    await server.stop()


def _announce(server: HubServer) -> None:
    print(f"counsel-chat hub listening on {server.url}", flush=True)
    print(f"  health check:        {server.http_url}healthz", flush=True)
    if (server.config.web_root / "index.html").exists():
        print(f"  counselor web chat:  {server.http_url}", flush=True)
    print(
        f"  connect a client:    chat-client --server {server.url} --home ~/.chat-client "
        "register --handle YOUR-PSEUDONYM",
        flush=True,
    )
    print(
        "  invite a counselor:  chat-server admin invite-counselor --name NAME "
        "--languages en --specialties anxiety",
        flush=True,
    )
    print("Stop with Ctrl-C (sessions are told to reconnect).", flush=True)
