"""One WebSocket connection to the hub: request/response correlation and event hand-off.

A :class:`Link` is a thin adapter between a ``websockets`` connection and the typed
frames of :mod:`protocol.frames`. It owns no policy: it does not reconnect, retry or
authenticate. The SDK's supervisor (sdk.py) creates one Link per connection attempt.

Contract:

* :meth:`Link.request` sends one request with a fresh id and returns the matching
  result frame, raises the typed :mod:`protocol.errors` exception for an ``error`` frame,
  or raises :class:`LinkClosed` if the connection ends first.
* Frames without an id (events) go to ``on_event`` in arrival order, synchronously from
  the reader, so the consumer sees them in wire order.
* When the connection ends, ``on_close`` runs *before* any pending request is failed,
  so waiters woken by :class:`LinkClosed` already see the new state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from protocol import errors as pe
from protocol import frames as f
from protocol.codec import decode_server, encode, request_id_of
from protocol.limits import MAX_SERVER_FRAME_BYTES

from .errors import ConnectFailed, remote_error

__all__ = [
    "ABNORMAL_CLOSURE",
    "Backoff",
    "CloseInfo",
    "Link",
    "LinkClosed",
    "expect",
    "is_resumable",
    "tls_context",
]

log = logging.getLogger("chat_client.connection")

#: RFC 6455 section 7.1.5: the connection dropped without a close frame (a network
#: failure). websockets reports it; the hub never sends it, so it is not one of
#: protocol.errors.RESUMABLE_CLOSE_CODES, but it is resumed like them.
ABNORMAL_CLOSURE = 1006

OPEN_TIMEOUT_S = 10.0

_R = TypeVar("_R")


@dataclasses.dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended. ``local`` is True when we dropped it ourselves
    (a handshake timeout, a reader failure), which is always worth a reconnect."""

    code: int
    reason: str
    local: bool = False
    by_client: bool = False  # we closed it on purpose (client.close()): never reconnect

    def __str__(self) -> str:
        return f"close code {self.code}{' ' + self.reason if self.reason else ''}"


def is_resumable(info: CloseInfo) -> bool:
    """Reconnect and resume after this close? The hub's resumable codes come from
    protocol.errors (docs/PROTOCOL.md section 10), the one list both clients use."""
    if info.by_client:
        return False
    return info.local or info.code == ABNORMAL_CLOSURE or info.code in pe.RESUMABLE_CLOSE_CODES


class LinkClosed(Exception):
    """The connection ended before the request was answered."""

    def __init__(self, info: CloseInfo | None = None) -> None:
        self.info = info
        super().__init__(str(info) if info else "connection closed")


class Backoff:
    """Jittered exponential backoff: 0.2 s doubling to 10 s, each delay scaled by a
    random factor in [0.5, 1) so a fleet of clients does not reconnect in lockstep."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.first * 2.0**self.attempt)
        self.attempt += 1
        return base * random.uniform(0.5, 1.0)


def tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """The TLS context for ``wss://`` that trusts only the CA certificates in
    ``ca_file`` (a private CA, e.g. a test or in-house deployment); None (the system's
    trusted CAs) without one. Certificates and host names are always verified."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConnectFailed(f"cannot use CA file {ca_file}: {exc}") from None


class Link:
    """A connected WebSocket speaking the chat protocol. See the module docstring."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        on_event: Callable[[f.ServerFrame], None],
        on_close: Callable[[CloseInfo], None],
        id_prefix: str = "r",
    ) -> None:
        self._ws = ws
        self._on_event = on_event
        self._on_close = on_close
        self._pending: dict[str, asyncio.Future[f.ServerFrame]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = id_prefix
        self._local_abort: str | None = None
        self._by_client = False
        self.close_info: CloseInfo | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        on_event: Callable[[f.ServerFrame], None],
        on_close: Callable[[CloseInfo], None],
        id_prefix: str = "r",
        tls: ssl.SSLContext | None = None,
    ) -> Link:
        """Connect; raise ConnectFailed if the server cannot be reached. ``tls`` is the
        context for a ``wss://`` URL (default: the system's trusted CAs; see
        :func:`tls_context`) and is ignored for ``ws://``."""
        # websockets refuses ssl= for ws:// and ssl=None for wss:// (its default there
        # is the system's trust store), so pass it only when there is one to pass.
        options: dict[str, Any] = {"ssl": tls} if tls is not None and url.startswith("wss:") else {}
        try:
            ws = await connect(
                url,
                **options,
                compression=None,  # the hub runs without permessage-deflate
                max_size=MAX_SERVER_FRAME_BYTES,
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=15,
                ping_timeout=15,
                close_timeout=5,
                proxy=None,  # connect directly; an environment proxy is not expected here
                user_agent_header="chat-client/0.1",
            )
        except InvalidURI as exc:
            raise ConnectFailed(f"invalid server url {url!r}: {exc}") from None
        except InvalidStatus as exc:
            # Something answered HTTP, but not with a WebSocket: the wrong path.
            parts = urlsplit(url)
            hint = urlunsplit((parts.scheme, parts.netloc, "/ws", "", ""))
            raise ConnectFailed(
                f"no chat endpoint at {url} (HTTP {exc.response.status_code}); did you mean {hint}?"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectFailed(f"cannot connect to {url}: {exc}") from None
        return cls(ws, on_event=on_event, on_close=on_close, id_prefix=id_prefix)

    @property
    def closed(self) -> bool:
        return self.close_info is not None

    async def request(self, cls: type[msgspec.Struct], /, **fields: Any) -> f.ServerFrame:
        """Send ``cls(id=<fresh>, **fields)`` and return the answer (see module doc)."""
        if self.close_info is not None:
            raise LinkClosed(self.close_info)
        rid = f"{self._id_prefix}{next(self._ids)}"
        frame = cls(id=rid, **fields)
        data = encode(frame)
        future: asyncio.Future[f.ServerFrame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self._ws.send(data.decode("utf-8"))
            return await future
        except ConnectionClosed:
            raise LinkClosed(self.close_info) from None
        finally:
            self._pending.pop(rid, None)
            if future.done() and not future.cancelled():
                # When the hub dies while this frame is still being sent, run() fails
                # the future and the send raises too: the caller gets the send's error,
                # so the future's must count as seen, or asyncio logs "Future exception
                # was never retrieved" when it is freed.
                future.exception()

    async def run(self) -> CloseInfo:
        """Read frames until the connection ends; return how it ended. Run exactly once."""
        try:
            async for data in self._ws:
                self._dispatch(data)
        except ConnectionClosed:
            pass
        except Exception:
            # A bug in a handler must not leave a half-dead link behind.
            log.exception("connection reader failed")
            self._local_abort = self._local_abort or "reader failed"
            await self._ws.close(1011)
        code = self._ws.close_code if self._ws.close_code is not None else ABNORMAL_CLOSURE
        reason = self._ws.close_reason or ""
        if self._local_abort is not None:
            info = CloseInfo(code, self._local_abort, local=True)
        else:
            info = CloseInfo(code, reason, by_client=self._by_client)
        self.close_info = info
        self._on_close(info)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkClosed(info))
        return info

    async def abort(self, why: str) -> None:
        """Drop the connection ourselves because it misbehaves; the caller reconnects."""
        self._local_abort = why
        await self._ws.close(1000, "client reconnecting")

    async def close(self) -> None:
        """Close on purpose (the client is shutting down)."""
        self._by_client = True
        await self._ws.close(1000, "client closing")

    # -- internals -----------------------------------------------------------------

    def _dispatch(self, data: str | bytes) -> None:
        try:
            frame = decode_server(data)
        except pe.ProtocolError as exc:
            # A frame we cannot parse: fail its request if we can name it, else drop it.
            rid = request_id_of(data)
            log.warning("undecodable server frame (%s): %s", exc.code.value, exc)
            future = self._pending.get(rid) if rid else None
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        rid = getattr(frame, "id", None)
        if rid is None:
            if isinstance(frame, f.ErrorFrame):
                log.warning("server error without request id: %s %s", frame.code, frame.message)
            else:
                self._on_event(frame)
            return
        future = self._pending.get(rid)
        if future is None or future.done():
            log.debug("answer to unknown or abandoned request %s", rid)
            return
        if isinstance(frame, f.ErrorFrame):
            future.set_exception(remote_error(frame))
        else:
            future.set_result(frame)


def expect(frame: f.ServerFrame, cls: type[_R]) -> _R:
    """Narrow an answer to the frame type the request must produce."""
    if not isinstance(frame, cls):
        raise pe.InvalidFrame(
            f"server answered with {type(frame).__name__}, expected {cls.__name__}"
        )
    return frame
