"""Wiring: database, hub, and the websockets server with its small HTTP surface.

``HubServer`` is what the CLI runs and what tests start on an ephemeral port. Its HTTP
surface besides the WebSocket (``/ws``) and the web chat's files:

* ``GET /healthz``: 200 while this node can serve, 503 while it drains (after SIGTERM)
  or cannot reach its database, so a load balancer sends new connections elsewhere.
  The body says ``db ok|down``, ``redis ok|down|off``. A Redis outage alone keeps 200:
  the node still stores, acks and delivers locally, and catches its sessions up when
  Redis is back, while every node answering 503 at once (Redis is shared) would turn
  a degradation into an outage (docs/DECISIONS.md 34).
* ``GET /metrics``: this node's Prometheus metrics (docs/METRICS.md). Scraped from each
  node directly; the HAProxy template refuses it from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import signal
import time
from pathlib import Path

import nacl.pwhash
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from protocol.errors import CloseCode
from storage.engine import Database, open_database

from .config import Config
from .guard import client_address
from .hub import Hub
from .logs import log_event
from .origins import OriginPolicy, normalize_origin
from .session import Session

__all__ = ["HubServer", "ListenFailed", "run_forever"]

WS_PATH = "/ws"
#: A health check answers within HAProxy's check interval (1 s): the database probe
#: gets this long, and its answer is reused for this long by checks close together.
_DB_PROBE_TIMEOUT_S = 0.8
_DB_PROBE_TTL_S = 0.5


class ListenFailed(Exception):
    """The hub could not listen on ``host:port`` (in use, not allowed, no such address);
    everything it had opened is closed again."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host, self.port, self.errno = host, port, error.errno
        super().__init__(f"cannot listen on {host}:{port}: {error.strerror or error}")


class HubServer:
    """The hub process: ``await start()``, ``url``, ``await stop()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None
        self.hub: Hub | None = None
        self._server: Server | None = None
        #: Set when a graceful stop begins: /healthz answers 503 from then on.
        self.draining = False
        self._db_probe: tuple[float, bool] = (0.0, False)
        self._origins: OriginPolicy | None = None

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
        for origin in (*(self.config.allowed_origins or ()), self.config.public_url or "http://x"):
            normalize_origin(origin)  # ValueError before anything is opened
        # Bind first (without accepting), so a busy port fails before anything is opened.
        try:
            self._server = await serve(
                self._handle,
                self.config.host,
                self.config.port,
                compression=None,  # ciphertext does not compress; compression beside secrets leaks
                max_size=self.config.max_frame_bytes,
                # Frames read ahead of the session's read loop; beyond this websockets stops
                # reading the socket (a closing session drains them: session.py).
                max_queue=16,
                close_timeout=self.config.close_timeout_s,
                write_limit=64 * 1024,
                process_request=self._http,
                server_header="counsel-chat",
                start_serving=False,
            )
        except (OSError, OverflowError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(None, str(exc))
            raise ListenFailed(self.config.host, self.config.port, error) from None
        try:
            self.db = await open_database(self.config.db_url, self.config.resolved_data_key())
            # The hub's own signing-only key (it signs chain heads; nothing is sealed to it).
            self.hub = Hub(self.config, self.db, self.config.server_key())
            await self.hub.start()
        except BaseException:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            if self.db is not None:
                await self.db.close()
            raise
        self._origins = None
        await self._server.start_serving()
        log_event("hub.listening", host=self.config.host, port=self.port)

    async def stop(self) -> None:
        """Graceful: stop accepting, finish commits (acks go out), close sessions with 1001."""
        if self._server is None or self.hub is None or self.db is None:
            return
        self.draining = True
        self._server.close(close_connections=False)
        await self.hub.shutdown()
        await self._server.wait_closed()
        await self.db.close()
        self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        assert self.hub is not None
        metrics = self.hub.metrics
        metrics.connections.inc()
        ip = client_address(
            ws.remote_address,
            ws.request.headers.get("X-Forwarded-For") if ws.request else None,
            self.config.trusted_proxies,
        )
        guests = self.hub.guard.guests
        if not guests.admit(ip):
            # Too many strangers at once (from this address, or in all): refused before
            # any state is made for it. 1013: try again later.
            log_event("session.refused", reason="unauthenticated connections")
            metrics.closed(CloseCode.TRY_AGAIN)
            await ws.close(CloseCode.TRY_AGAIN, "too many unauthenticated connections")
            return
        metrics.connections_open.inc()
        session = Session(self.hub, ws, ip)
        try:
            self.hub.registry.connect(session)
            await session.run()
        except Exception:
            # Session.run handles its own faults; this is one around it. Left to
            # websockets it would close 1011 with an empty reason and log the details.
            log_event("session.internal_error", logging.ERROR, exc=True)
            await ws.close(1011, "internal error")
        finally:
            metrics.connections_open.dec()
            if not session.authenticated:
                guests.leave(ip)

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return await self._health(connection)
        if path == "/metrics":
            assert self.hub is not None
            body, content_type = self.hub.metrics.render(request.headers.get("Accept"))
            headers = Headers({"Content-Type": content_type, "Cache-Control": "no-store"})
            headers["Content-Length"] = str(len(body))
            return Response(http.HTTPStatus.OK, "OK", headers, body)
        # Everything below is for browsers (the page, its files, the socket it opens),
        # so DNS rebinding is refused here: Host and Origin must be ours (origins.py).
        origin = request.headers.get("Origin")
        if path == WS_PATH and origin is None:
            return None  # a native client: it authenticates with keys, Origin is moot
        policy = self._origin_policy()
        if not policy.host_allowed(request.headers.get("Host")):
            log_event("http.host_refused")
            return connection.respond(http.HTTPStatus.FORBIDDEN, "host not allowed\n")
        if origin is not None and not policy.origin_allowed(origin):
            log_event("http.origin_refused")
            return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        if path == WS_PATH:
            return None
        if path == "/config.json":
            return _web_config(self.config)
        return _static(connection, path, self.config.web_root)

    def _origin_policy(self) -> OriginPolicy:
        if self._origins is None:  # built once the port is bound (it may have been 0)
            self._origins = OriginPolicy.build(
                listen_host=self.config.host,
                port=self.port,
                allowed_origins=self.config.allowed_origins,
                public_url=self.config.public_url,
            )
        return self._origins

    async def _health(self, connection: ServerConnection) -> Response:
        """200 while this node serves, 503 while it drains or its database is away."""
        db_ok = await self._database_reachable()
        redis = "off"
        if self.hub is not None and self.config.redis_url:
            redis = "ok" if self.hub.bus.connected else "down"
        body = f"db {'ok' if db_ok else 'down'}\nredis {redis}\n"
        if self.draining:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n" + body)
        status = http.HTTPStatus.OK if db_ok else http.HTTPStatus.SERVICE_UNAVAILABLE
        return connection.respond(status, ("ok\n" if db_ok else "unavailable\n") + body)

    async def _database_reachable(self) -> bool:
        checked_at, ok = self._db_probe
        now = time.monotonic()
        if now - checked_at < _DB_PROBE_TTL_S or self.db is None:
            return ok
        ok = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.db.ping(), _DB_PROBE_TIMEOUT_S)
            ok = True
        self._db_probe = (time.monotonic(), ok)
        return ok


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".ico": "image/x-icon",
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
_WEB_PUBLIC_FILES = frozenset({"index.html", "style.css", "favicon.ico"})
_WEB_PUBLIC_DIRS = ("dist/",)


def _test_kdf(config: Config) -> bool:
    """True when the hub lets accounts use an Argon2id cost below libsodium INTERACTIVE."""
    return (
        config.kdf_opslimit < nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
        or config.kdf_memlimit < nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    )


def _web_config(config: Config) -> Response:
    """Settings the counselor web chat reads at start (no secrets in here)."""
    body = json.dumps(
        {
            "idle_lock_seconds": round(config.idle_lock_minutes * 60, 3),
            # The page's escrow pin (public; docs/WEB.md explains why it is a weaker pin).
            "org_fingerprint": config.served_org_fingerprint(),
            # A hub on the test KDF profile: the page then honours ?weakkdf=1 (test suites).
            "test_kdf": _test_kdf(config),
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
