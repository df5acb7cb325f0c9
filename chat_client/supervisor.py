"""The connection supervisor: one authenticated link to the hub at a time, for good.

:class:`Supervisor` owns the link lifecycle of a :class:`chat_client.sdk.ChatClient`
(web counterpart: web_client/src/supervisor.js). It holds no case, key or message state;
the rooms that do (processor, outbox, escrow) reach the hub through it.

Contract:

* :meth:`start` runs the **supervisor task**: connect, set the session up (``hello``,
  ``auth`` with the stored token, a fresh ``login`` with the kept auth_key if the token
  is missing, expired or refused, or the hub ended the session at the token's expiry
  with 4002), then hand the new link to ``on_session`` (resync,
  resend) before the session counts as *ready*. When the link ends it reconnects with
  jittered backoff if the close is resumable (:func:`connection.is_resumable`), else it
  stops with :class:`SessionEnded`. :meth:`start` returns once the first session is
  ready, or raises why it never became ready.
* Every link gets a new :attr:`generation` (1, 2, ...): state tied to one session (a
  frame transmitted on it, a cached escrow policy) records the generation it belongs to.
* :meth:`request` sends on the current authenticated link; across a reconnect it is
  repeated (``retry=True``, idempotent requests) or fails with RequestInterrupted.
* :meth:`stop` enters the terminal state once: waiters wake, ``on_stop`` runs (the
  outbox fails its sends, the event stream ends), later calls raise the stop error.
* :meth:`spawn` runs background work of the client; :meth:`close` cancels all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from protocol import crypto
from protocol import errors as pe
from protocol import frames as f

from . import accounts
from .connection import Backoff, CloseInfo, Link, LinkClosed, expect, is_resumable
from .errors import ClientClosed, ConnectFailed, RequestInterrupted, SessionEnded
from .keystore import StoredToken
from .models import ConnectionEvent

__all__ = ["FIRST_CONNECT_ATTEMPTS", "SETUP_TIMEOUT_S", "SessionHook", "Supervisor"]

log = logging.getLogger("chat_client")

#: How long each set-up step (hello, auth, login) may take before we drop the link.
SETUP_TIMEOUT_S = 15.0
#: Consecutive failures of the very first connection before start() gives up.
FIRST_CONNECT_ATTEMPTS = 3

#: ``await on_session(link, generation, welcome)``: bring the client up to date on a
#: freshly authenticated link (resync, resend) before it counts as ready.
SessionHook = Callable[[Link, int, f.Welcome], Awaitable[None]]


class Supervisor:
    """See the module docstring."""

    def __init__(
        self,
        url: str,
        credentials: accounts.Credentials,
        *,
        on_frame: Callable[[f.ServerFrame], None],
        on_session: SessionHook,
        on_connection: Callable[[ConnectionEvent], None],
        on_stop: Callable[[BaseException], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        record = credentials.store.record
        self.url = url
        self._tls = tls
        self._store = credentials.store
        self._identity = credentials.identity
        self._login_keys = credentials.login_keys  # auth_key renews an expired token
        self._token = credentials.token
        self._account_id = record.account_id
        self._handle = record.handle
        self._on_frame = on_frame
        self._on_session = on_session
        self._on_connection = on_connection
        self._on_stop = on_stop
        self.link: Link | None = None
        self.generation = 0
        self.authed = asyncio.Event()  # hello + auth done on the current link
        self.ready = asyncio.Event()  # ... and on_session done
        self.stop_error: BaseException | None = None
        self.logging_out = False  # the server's close 1000 that follows is expected
        self._first: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def connected(self) -> bool:
        return self.ready.is_set() and self.stop_error is None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Run the supervisor task; return once the first session is ready."""
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(), name="chat-client-supervisor")
        await asyncio.shield(self._first)

    async def close(self) -> None:
        """Stop with ClientClosed, close the link, cancel every task. Idempotent."""
        self.stop(ClientClosed("client closed"))
        link = self.link
        if link is not None and not link.closed:
            with contextlib.suppress(Exception):
                await link.close()
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not current), return_exceptions=True)

    def stop(self, exc: BaseException) -> None:
        """Enter the terminal state (once): wake every waiter and run ``on_stop``."""
        if self.stop_error is not None:
            return
        self.stop_error = exc
        if not isinstance(exc, ClientClosed):
            log.info("client stopped: %s", exc)  # the caller reports it
        self.authed.set()
        self.ready.set()
        self._on_stop(exc)
        if self._first is not None and not self._first.done():
            self._first.set_exception(exc)
            self._first.exception()  # mark retrieved: start() may have been cancelled

    def check_running(self) -> None:
        if self.stop_error is not None:
            raise self.stop_error

    def forget_token(self) -> None:
        """Drop the stored session token (after ``logout`` revoked it)."""
        self._token = None
        self._store.record.token_box = None
        self._store.save()

    # -- requests and background work -----------------------------------------------------

    async def request(
        self, cls: type[msgspec.Struct], /, *, retry: bool = True, **fields: Any
    ) -> f.ServerFrame:
        """Send a request on the current authenticated link; across a reconnect, repeat it
        if ``retry`` (idempotent requests), else raise RequestInterrupted."""
        while True:
            self.check_running()
            await self.authed.wait()
            self.check_running()
            link = self.link
            if link is None or link.closed:
                await asyncio.sleep(0.05)
                continue
            try:
                return await link.request(cls, **fields)
            except LinkClosed:
                if not retry:
                    self.check_running()
                    raise RequestInterrupted(
                        "connection lost before the server answered; check and retry"
                    ) from None
            except pe.Unavailable:
                if not retry:
                    raise
                await asyncio.sleep(0.2 + random.random() / 5)  # the server is going away

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> None:
        """Run ``coro`` in the background until it ends or :meth:`close` cancels it."""
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if self.stop_error is None:
                log.warning("background task failed: %s: %s", type(exc).__name__, exc)

    # -- the supervisor task ------------------------------------------------------------

    async def _supervise(self) -> None:
        assert self._first is not None
        backoff = Backoff()
        first_failures = 0
        while self.stop_error is None:
            try:
                link = await Link.open(
                    self.url,
                    on_event=self._on_frame,
                    on_close=self._on_link_closed,
                    tls=self._tls,
                )
            except ConnectFailed as exc:
                if not self._first.done():
                    first_failures += 1
                    if first_failures >= FIRST_CONNECT_ATTEMPTS:
                        self.stop(exc)
                        return
                await self._pause(backoff, str(exc))
                continue
            self.generation += 1
            self.link = link
            reader = asyncio.create_task(link.run(), name="chat-client-reader")
            setup = asyncio.create_task(self._setup(link, self.generation))
            await asyncio.wait({reader, setup}, return_when=asyncio.FIRST_COMPLETED)
            if not setup.done():
                setup.cancel()  # the link died first; set-up resumes on the next one
                with contextlib.suppress(BaseException):
                    await setup
            elif setup.exception() is None:
                backoff.reset()
                first_failures = 0
                if not self._first.done():
                    self._first.set_result(None)
            else:
                failure = setup.exception()
                if isinstance(failure, TimeoutError | pe.RateLimited | pe.Busy):
                    await link.abort(f"session set-up failed: {type(failure).__name__}")
                elif not isinstance(failure, LinkClosed):
                    assert failure is not None
                    self.stop(failure)
                    await link.close()
                    await reader
                    return
            info = await reader
            if self.stop_error is not None:
                return
            if self.logging_out:
                self.stop(ClientClosed("logged out"))
                return
            expired = info.code == pe.CloseCode.SESSION_EXPIRED and not info.by_client
            if expired:
                # The token ran out: the next set-up logs in again with the kept auth_key.
                log.info("session expired; logging in again")
                self._token = None
            if not (expired or is_resumable(info)):
                self.stop(SessionEnded(info.code, info.reason))
                return
            log.info("connection lost (%s); reconnecting", info)
            self._on_connection(ConnectionEvent("disconnected", str(info)))
            if not self._first.done():
                first_failures += 1
                if first_failures >= FIRST_CONNECT_ATTEMPTS:
                    self.stop(ConnectFailed(f"connection to {self.url} keeps failing: {info}"))
                    return
            await self._pause(backoff, str(info))

    async def _pause(self, backoff: Backoff, why: str) -> None:
        delay = backoff.next_delay()
        self._on_connection(ConnectionEvent("reconnecting", f"in {delay:.1f}s after {why}"))
        await asyncio.sleep(delay)

    def _on_link_closed(self, info: CloseInfo) -> None:
        # Runs inside the reader before pending requests fail, so a retrying request
        # waits for the next link instead of spinning on the dead one.
        if self.stop_error is None:
            self.authed.clear()
            self.ready.clear()

    async def _setup(self, link: Link, generation: int) -> None:
        """hello -> auth (fresh login if the token is refused) -> on_session -> ready."""
        challenge = expect(
            await asyncio.wait_for(
                link.request(f.Hello, client=accounts.CLIENT_NAME), SETUP_TIMEOUT_S
            ),
            f.Challenge,
        )
        if self._token is None or self._token.expired():
            await self._relogin(link)
        try:
            welcome = await self._auth(link, challenge)
        except pe.AuthFailed:
            log.info("session token refused; logging in again")
            await self._relogin(link)
            welcome = await self._auth(link, challenge)
        self.authed.set()
        self._on_connection(ConnectionEvent("connected", f"session {welcome.session_id}"))
        await self._on_session(link, generation, welcome)
        self.ready.set()

    async def _auth(self, link: Link, challenge: f.Challenge) -> f.Welcome:
        assert self._token is not None
        sig = crypto.sign_challenge(self._identity, challenge.nonce, self._account_id)
        answer = await asyncio.wait_for(
            link.request(
                f.AuthRequest, account_id=self._account_id, token=self._token.token, sig=sig
            ),
            SETUP_TIMEOUT_S,
        )
        return expect(answer, f.Welcome)

    async def _relogin(self, link: Link) -> None:
        result = await asyncio.wait_for(
            accounts.login_request(link, self._handle, self._login_keys.auth_key), SETUP_TIMEOUT_S
        )
        if result.sign_pk != self._identity.sign_pk or result.box_pk != self._identity.box_pk:
            raise pe.CryptoError("the server returned other public keys for this account")
        self._token = StoredToken(result.token, result.token_expires)
        self._store.store_token(result.token, result.token_expires, self._login_keys.wrap_key)
