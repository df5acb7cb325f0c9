"""One WebSocket connection: it moves bytes, and nothing else.

Like python-websockets' asyncio adapter around its Sans-I/O protocol, a :class:`Session`
owns the socket-side concerns only: the read loop, the bounded send queue and its writer
(backpressure: a reader that cannot keep up is closed with 4008, never buffered without
bound), the auth timer and the rate limit. What a frame means is decided elsewhere:

* :class:`protocol.session.SessionMachine` says whether a frame is legal now and decides
  every transition and every protocol close (logout, too big, malformed, auth timeout);
* the use case in ``router.GUEST_ROUTES`` / ``router.ROUTES`` handles it and returns a
  reply, or an outcome (``Challenged``, ``SignedIn``) that the session reports to the
  machine.

Everything that turns an exception into an error frame or a close code happens here, in
one place (:meth:`Session._read_loop`): a refused request (``RemoteError``) becomes an
``error`` frame with its code; anything unexpected closes with 1011 and a generic
reason, the details going to the log only. The session is the use cases'
:class:`~chat_server.context.Peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from protocol import codec
from protocol.clock import now_ms
from protocol.errors import (
    RESUMABLE_CLOSE_CODES,
    CloseCode,
    ErrorCode,
    FrameTooBig,
    RemoteError,
    Unavailable,
)
from protocol.frames import ErrorFrame
from protocol.session import Close, SessionMachine

from .context import Caller, Challenged, Guest, SignedIn
from .hub import Hub
from .logs import log_event
from .ratelimit import TokenBucket
from .router import GUEST_ROUTES, ROUTES

__all__ = ["Session"]


class Session:
    """One connection, and the use cases' :class:`~chat_server.context.Peer` for it.

    ``push`` never blocks: a full queue closes the session (4008).
    """

    def __init__(self, hub: Hub, ws: ServerConnection, ip: str = "") -> None:
        self.hub = hub
        self.ws = ws
        #: The client's address as the per-address limits count it (``guard.py``).
        self.ip = ip
        self.session_id = "s_" + secrets.token_hex(8)
        self._machine = SessionMachine()
        #: Who the connection speaks for, once ``auth`` succeeded.
        self._caller: Caller | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(hub.config.send_queue_frames)
        self._bucket = TokenBucket(hub.config.rate_per_s, hub.config.rate_burst)
        self._closing = False
        # True while the writer task is inside ws.send (it took a frame off the queue).
        self._writing = False
        # True while a _flush of frames written by the fast path is scheduled.
        self._flush_scheduled = False
        self._watchdog: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def authenticated(self) -> bool:
        return self._caller is not None

    # -- outbound --------------------------------------------------------------

    def push(self, frame: msgspec.Struct) -> None:
        if self._closing:
            return
        metrics = self.hub.metrics
        metrics.frame_out(str(frame.__struct_config__.tag))
        if type(frame) is ErrorFrame:
            metrics.error(frame.code)
        self.push_raw(codec.encode(frame))

    def push_raw(self, data: bytes) -> None:
        if self._closing:
            return
        ws = self.ws
        if (
            not self._writing
            and self._queue.empty()
            and not ws.paused
            and ws.protocol.state is State.OPEN
        ):
            # Fast path: nothing is queued or being written and the socket's buffer is
            # below its high-water mark, so the frame can go to the transport now, in
            # order, without waking the writer task (what ws.send would do, minus the
            # drain, which has nothing to wait for when not paused). Once the transport
            # pauses, frames go through the bounded queue and the writer drains it, so
            # a reader that does not read still ends in a full queue and 4008.
            # The transport write itself is deferred to the end of this loop iteration,
            # so frames pushed together (a commit's acks and fan-out, several per session
            # at load) leave in one write, one syscall, instead of one each.
            try:
                ws.protocol.send_text(data)
            except Exception as exc:  # the socket failed: end it the way ws.send would
                ws.set_connection_exc(exc)
                ws.transport.abort()
                return
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            # A reader that cannot keep up must not make us buffer without bound. Its
            # messages are safe in the database; it reconnects and syncs (4008 is resumable).
            log_event("session.slow_consumer", logging.WARNING, session=self.session_id)
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and sync")

    def _flush(self) -> None:
        """Write what the fast path left in the protocol's buffer, joined into one write."""
        self._flush_scheduled = False
        ws = self.ws
        chunks = ws.protocol.data_to_send()
        if not chunks:
            return  # someone (ws.send, a pong, a close) already sent it, in order
        try:
            if b"" in chunks:  # an end-of-stream marker: let websockets handle it as usual
                for chunk in chunks:
                    if chunk:
                        ws.transport.write(chunk)
                    elif ws.transport.can_write_eof():
                        ws.transport.write_eof()
                    else:
                        ws.transport.close()
            else:
                ws.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except Exception as exc:  # the socket failed: end it the way ws.send would
            ws.set_connection_exc(exc)
            ws.transport.abort()

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued so far has been written (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self.hub.metrics.closed(code)
        self._machine.close()
        self._close_code = (code, reason)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        if self._queue.full():  # no room for the marker: close right away
            asyncio.get_running_loop().create_task(self.ws.close(code, reason))

    async def _writer(self) -> None:
        while True:
            data = await self._queue.get()
            if data is None:
                code, reason = self._close_code
                await self.ws.close(code, reason)
                return
            self._writing = True
            try:
                await self.ws.send(data, text=True)
            finally:
                self._writing = False

    # -- inbound ---------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer(), name=f"writer-{self.session_id}")
        self._watchdog = asyncio.create_task(self._auth_watchdog(), name=f"auth-{self.session_id}")
        log_event("session.open", session=self.session_id)
        try:
            await self._read_loop()
        except ConnectionClosed:
            pass
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            if self._expiry is not None:
                self._expiry.cancel()
            await self.hub.registry.detach(self)
            self._closing = True
            self._machine.close()
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            try:
                await asyncio.wait_for(writer, timeout=5)
            except (TimeoutError, ConnectionClosed, asyncio.CancelledError):
                writer.cancel()
            except Exception:
                writer.cancel()
            code = self.ws.close_code
            log_event(
                "session.closed",
                session=self.session_id,
                code=code,
                resumable=code in RESUMABLE_CLOSE_CODES,
            )

    async def _auth_watchdog(self) -> None:
        await asyncio.sleep(self.hub.config.auth_timeout_s)
        decision = self._machine.auth_deadline()
        if decision is not None:
            log_event("session.auth_timeout", session=self.session_id)
            self._carry_out(decision)

    def _carry_out(self, decision: Close) -> None:
        self.close(decision.code, decision.reason)

    async def _read_loop(self) -> None:
        machine = self._machine
        hub = self.hub
        while not self._closing:
            raw = await self.ws.recv(decode=False)
            if self._closing:
                return
            if not self._bucket.take():
                if self._caller is None:
                    await hub.guard.tarpit()  # a stranger flooding frames: read slower
                self.push(
                    ErrorFrame(
                        code=ErrorCode.RATE_LIMITED,
                        message="slow down",
                        id=codec.request_id_of(raw),
                    )
                )
                continue
            if self._caller is not None:
                # One budget for all of the account's sessions on this node, too.
                account = hub.account_requests.take_now(self._caller.account_id)
                if not account.allowed:
                    self.push(
                        ErrorFrame(
                            code=ErrorCode.RATE_LIMITED,
                            message="too many requests from this account; slow down",
                            id=codec.request_id_of(raw),
                            retry_after_ms=account.retry_after_ms,
                        )
                    )
                    continue
            try:
                frame = codec.decode_client(raw)
            except RemoteError as exc:
                hub.metrics.frame_in("unknown")
                decision = machine.undecodable(exc)
                if not isinstance(exc, FrameTooBig):  # too big is answered by the close
                    self.push(
                        ErrorFrame(code=exc.code, message=exc.message, id=codec.request_id_of(raw))
                    )
                if decision is not None:
                    self._carry_out(decision)
                    return
                continue
            hub.metrics.frame_in(str(frame.__struct_config__.tag))
            caller = self._caller
            try:
                machine.check(frame)
                if hub.stopping:
                    raise Unavailable("server is shutting down; reconnect shortly")
                if caller is not None:
                    reply = await ROUTES[type(frame)](hub, caller, frame)
                else:
                    outcome = await GUEST_ROUTES[type(frame)](
                        hub, Guest(self, machine.challenge, self.ip), frame
                    )
                    reply = self._apply(outcome)
            except RemoteError as exc:
                # Refused: answered with the error, and the state stays as it was.
                self.push(
                    ErrorFrame(
                        code=exc.code,
                        message=exc.message,
                        id=frame.id,
                        retry_after_ms=exc.retry_after_ms,
                    )
                )
                continue
            except ConnectionClosed:
                raise
            except Exception:
                # Details go to the log (type and place only), never to the peer.
                log_event(
                    "session.internal_error",
                    logging.ERROR,
                    exc=True,
                    session=self.session_id,
                    frame=type(frame).__name__,
                )
                self.close(CloseCode.INTERNAL, "internal error")
                return
            if reply is not None:
                self.push(reply)
            if (decision := machine.handled(frame)) is not None:
                self._carry_out(decision)
            if self._watchdog is not None and not machine.authenticating:
                # Authenticated (or closing): the timer has nothing left to check, and
                # 20 s of one pending timer per connection add up under reconnect storms.
                self._watchdog.cancel()
                self._watchdog = None

    def _apply(self, outcome: msgspec.Struct | Challenged | SignedIn) -> msgspec.Struct | None:
        """Report an outcome of a use case before auth to the state machine; the reply."""
        if isinstance(outcome, Challenged):
            self._machine.challenge_issued(outcome.reply.nonce)
            return outcome.reply
        if isinstance(outcome, SignedIn):
            self._machine.authenticated()
            self._caller = outcome.caller
            self.hub.guard.guests.leave(self.ip)  # no longer counted as a stranger
            if (expires := outcome.caller.token_expires) is not None:
                # The session lives as long as its token (docs/PROTOCOL.md 10: 4002).
                delay = max(0.0, (expires - now_ms()) / 1000)
                self._expiry = asyncio.get_running_loop().call_later(
                    delay, self.close, CloseCode.SESSION_EXPIRED, "session expired: log in again"
                )
            return None  # welcome was sent by the use case, before its matching
        return outcome
