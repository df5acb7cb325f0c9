"""One WebSocket connection: it moves bytes, and nothing else.

Like python-websockets' asyncio adapter around its Sans-I/O protocol, a :class:`Session`
owns the socket-side concerns only: the read loop, the bounded send queue and its writer
(backpressure: a reader that cannot keep up is closed with 4008, never buffered without
bound; the bound is in frames and in bytes), the auth timer and the rate limit.

Closing is prompt and gives memory back (issue 13): once the hub decides to close, the
peer's frames that will never be handled are read and dropped (unread, they would pause
the socket, so the peer's close frame would stay unread until websockets' close
timeout); a slow consumer's queue is dropped at once and its socket aborted if the close
frame cannot get through within ``close_timeout_s``; every closing session is aborted at
the latest ``2 * close_timeout_s`` after the decision; and nothing keeps a finished
session (its queue, its tasks) alive in a reference cycle until a garbage collection.

What a frame means is decided elsewhere:

* :class:`protocol.session.SessionMachine` says whether a frame is legal now and decides
  every transition and every protocol close (logout, too big, malformed, auth timeout);
* the use case in ``router.GUEST_ROUTES`` / ``router.ROUTES`` handles it and returns a
  reply, or an outcome (``Challenged``, ``SignedIn``) that the session reports to the
  machine.

Everything that turns an exception into an error frame or a close code happens here, in
one place (:meth:`Session._read_loop`): a refused request (``RemoteError``) becomes an
``error`` frame with its code; bytes that are not a frame (invalid UTF-8, nesting too
deep, not JSON) are a typed ``malformed`` error from the codec, never an exception;
anything unexpected closes with 1011 and the reason ``internal error``, the details
going to the log only. The session is the use cases'
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
from protocol.limits import RATE_PAUSE_MAX_S
from protocol.session import Close, SessionMachine
from storage import is_outage

from .context import Caller, Challenged, Guest, SignedIn
from .hub import Hub
from .logs import log_event
from .ratelimit import TokenBucket
from .router import GUEST_ROUTES, ROUTES

__all__ = ["Session"]


class Session:
    """One connection, and the use cases' :class:`~chat_server.context.Peer` for it.

    ``push`` never blocks: a queue over its frame or byte budget closes the session (4008).
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
        # Unbounded as a Queue: the frame and byte budgets are checked in push_raw, so
        # the close marker (None) always fits.
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        #: Bytes of the frames in ``_queue`` (the byte budget, ``send_queue_bytes``).
        self._queued_bytes = 0
        self._bucket = TokenBucket(hub.config.rate_per_s, hub.config.rate_burst)
        self._closing = False
        self._close_code: tuple[int, str] = (CloseCode.NORMAL, "")
        # True while the writer task is inside ws.send (it took a frame off the queue).
        self._writing = False
        # True while a _flush of frames written by the fast path is scheduled.
        self._flush_scheduled = False
        self._watchdog: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Aborts the socket if a decided close has not finished in time.
        self._deadline: asyncio.TimerHandle | None = None
        #: Closed as a slow consumer: megabytes were freed (see memory.Trimmer).
        self._abandoned = False

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
        config = self.hub.config
        if (
            self._queue.qsize() >= config.send_queue_frames
            or self._queued_bytes + len(data) > config.send_queue_bytes
        ):
            # A reader that cannot keep up must not make us buffer without bound. Its
            # messages are safe in the database; it reconnects and syncs (4008 is resumable).
            log_event(
                "session.slow_consumer",
                logging.WARNING,
                session=self.session_id,
                queued_frames=self._queue.qsize(),
                queued_bytes=self._queued_bytes,
            )
            self._abandon(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and sync")
            return
        self._queued_bytes += len(data)
        self._queue.put_nowait(data)

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
        if not self._begin_close(code, reason):
            return
        self._queue.put_nowait(None)

    def _abandon(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued: the peer does not read it anyway."""
        if not self._begin_close(code, reason):
            return
        self._release_queue()
        self._abandoned = True
        if self._writer_task is not None:
            self._writer_task.cancel()  # it may be waiting for a drain that never comes
        self._closer = asyncio.get_running_loop().create_task(
            self._close_socket(), name=f"close-{self.session_id}"
        )

    def _begin_close(self, code: int, reason: str) -> bool:
        if self._closing:
            return False
        self._closing = True
        self.hub.metrics.closed(code)
        self._machine.close()
        self._close_code = (code, reason)
        # Whatever happens to the close handshake, the socket is gone by this deadline.
        self._deadline = asyncio.get_running_loop().call_later(
            2 * self.hub.config.close_timeout_s, self.ws.transport.abort
        )
        return True

    def _release_queue(self) -> None:
        """Drop the queued frames now (their memory), keeping a close marker if any."""
        marker = False
        while not self._queue.empty():
            marker = self._queue.get_nowait() is None or marker
        self._queued_bytes = 0
        if marker:
            self._queue.put_nowait(None)

    async def _close_socket(self) -> None:
        """Send the close frame; abort the socket if the handshake cannot finish in time
        (websockets' close waits for a drain without a deadline when the peer does not
        read; ``close_timeout`` bounds only the wait for the peer's close frame)."""
        code, reason = self._close_code
        try:
            await asyncio.wait_for(self.ws.close(code, reason), self.hub.config.close_timeout_s)
        except TimeoutError:
            self.ws.transport.abort()

    async def _writer(self) -> None:
        while True:
            data = await self._queue.get()
            if data is None:
                await self._close_socket()
                return
            self._queued_bytes -= len(data)
            self._writing = True
            try:
                await self.ws.send(data, text=True)
            finally:
                self._writing = False

    # -- inbound ---------------------------------------------------------------

    async def run(self) -> None:
        self._writer_task = writer = asyncio.create_task(
            self._writer(), name=f"writer-{self.session_id}"
        )
        self._watchdog = asyncio.create_task(self._auth_watchdog(), name=f"auth-{self.session_id}")
        log_event("session.open", session=self.session_id)
        try:
            try:
                await self._read_loop()
            except ConnectionClosed:
                raise
            except Exception:
                # Not a refused frame and not a use case's fault (those are handled in
                # the loop): a fault of ours. Type and place to the log, nothing to the peer.
                log_event(
                    "session.internal_error", logging.ERROR, exc=True, session=self.session_id
                )
                self.close(CloseCode.INTERNAL, "internal error")
            await self._discard_unread()
        except ConnectionClosed:
            pass
        finally:
            await self._finish(writer)

    async def _discard_unread(self) -> None:
        """Read and drop what the peer still sends until the connection has closed.

        Frames nobody reads would fill websockets' receive queue (``max_queue``), which
        then pauses reading from the socket, and the peer's close frame behind them would
        wait for the close timeout: a close that should take a round trip took 10 s.
        """
        while True:
            await self.ws.recv(decode=False)

    async def _finish(self, writer: asyncio.Task[None]) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await self.hub.registry.detach(self)
        self._closing = True
        self._machine.close()
        self._release_queue()
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(writer, timeout=self.hub.config.close_timeout_s)
        except (TimeoutError, ConnectionClosed, asyncio.CancelledError):
            writer.cancel()
        except Exception:
            writer.cancel()
        if self._closer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._closer
        if self._deadline is not None:
            self._deadline.cancel()
        # Nothing of a finished session may wait for a garbage collection: the tasks
        # refer to the session (their coroutines' frames), and the session to them.
        self._writer_task = self._closer = self._deadline = None
        self._caller = None  # the Caller refers back to this session (its peer)
        if self._abandoned:
            self.hub.trimmer.freed()
        self._release_queue()
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
        """Handle frames until the session decides to close (or the peer closes)."""
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
                # Read nothing more until a token is back: what the peer sends meanwhile
                # waits in its socket (TCP backpressure), so a flood costs the hub one
                # refusal per token interval instead of one per frame (limits.py).
                await asyncio.sleep(min(self._bucket.wait_s(), RATE_PAUSE_MAX_S))
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
            except Exception as exc:
                if is_outage(exc):
                    # The database could not do it (rolled back, nothing stored): a typed,
                    # retryable answer, and the session stays (storage/outage.py).
                    log_event(
                        "session.storage_unavailable",
                        logging.WARNING,
                        session=self.session_id,
                        frame=type(frame).__name__,
                        error=type(exc).__name__,
                    )
                    self.push(
                        ErrorFrame(
                            code=ErrorCode.UNAVAILABLE,
                            message="database unavailable; retry",
                            id=frame.id,
                        )
                    )
                    continue
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
