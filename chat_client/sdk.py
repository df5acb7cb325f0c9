"""The client SDK: :class:`ChatClient` holds the private keys and talks to the hub.

Runtime layout (all on one event loop):

* the **supervisor** task owns the connection: it connects, runs the session set-up
  (hello, auth with the stored token or a fresh login, resync, resend of unacked sends),
  waits for the link to end, then reconnects with jittered backoff if the close code is
  resumable, or stops the client with :class:`SessionEnded` if it is not;
* the **reader** (one per link, see connection.py) answers request futures and queues
  events, in wire order, for
* the **processor** task, the only code that moves delivery cursors: it dedupes and
  gap-fills messages (sync), fetches and verifies keys, decrypts, and feeds ``events()``.

Delivery guarantee: every message of every known case reaches ``events()`` exactly once
and in seq order (own messages included, from their ack), across reconnects. ``send``
keeps its frame (same client_msg_id, nonce and ciphertext) until the server acks it, so
a retry after a reconnect is answered with the original seq (``duplicate=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import msgspec

from protocol import crypto, escrow
from protocol import errors as pe
from protocol import frames as f
from protocol.chain import GENESIS
from protocol.limits import MAX_MESSAGE_CHARS, MAX_SYNC_BATCH

from . import accounts
from .casekeys import link_matches, open_record
from .connection import Backoff, CloseInfo, Link, LinkClosed, expect, is_resumable
from .cursors import Cursor, CursorTracker, Verdict
from .errors import (
    ClientClosed,
    ConnectFailed,
    RequestInterrupted,
    SessionEnded,
)
from .keymanager import KeyManager
from .keystore import StoredToken
from .models import (
    CaseAssignedEvent,
    CaseClosedEvent,
    ConnectionEvent,
    DisputeEvent,
    Event,
    Message,
    MessageEvent,
    ReceiptEvent,
    Sent,
    TypingEvent,
)

__all__ = ["DEFAULT_MEMLIMIT", "DEFAULT_OPSLIMIT", "ChatClient"]

log = logging.getLogger("chat_client")

#: Argon2id defaults for new accounts (seconds on a laptop would be too slow for chat).
DEFAULT_OPSLIMIT = 3
DEFAULT_MEMLIMIT = 64 * 1024 * 1024
#: How long each set-up step (hello, auth, login) may take before we drop the link.
SETUP_TIMEOUT_S = 15.0
#: Cursors are written at most this often (and on close).
PERSIST_DELAY_S = 1.0
#: Consecutive failures of the very first connection before open() gives up.
FIRST_CONNECT_ATTEMPTS = 3


@dataclasses.dataclass(eq=False)
class _Outgoing:
    """One unacked msg.send. Its bytes never change, so a resend is idempotent."""

    case_id: str
    epoch: int
    client_msg_id: str
    nonce: bytes
    ciphertext: bytes
    body: str
    ts: int
    future: asyncio.Future[Sent]
    generation: int = 0  # the link generation it was last transmitted on (0: never)


@dataclasses.dataclass(eq=False)
class _Resync:
    cases: list[str]
    done: asyncio.Future[None]


@dataclasses.dataclass(eq=False)
class _OwnAck:
    out: _Outgoing
    ack: f.MsgAck


_Work = f.ServerFrame | _Resync | _OwnAck
_END = object()  # sentinel closing the events() stream


def _now_ms() -> int:
    return int(time.time() * 1000)


class ChatClient:
    """A connected, authenticated client. Build it with :meth:`register`, :meth:`login`
    or :meth:`open`; call :meth:`close` (or use ``async with``) when done.

    Methods raise the typed :mod:`protocol.errors` exceptions for server errors
    (``Forbidden``, ``AuthFailed``...), :class:`SessionEnded` after a non-resumable close,
    and :class:`ClientClosed` after :meth:`close`. Transient disconnects are invisible to
    callers apart from :class:`ConnectionEvent` events and latency.
    """

    def __init__(
        self, url: str, credentials: accounts.Credentials, *, org_fingerprint: str | None = None
    ) -> None:
        """Not connected yet: use :meth:`register`, :meth:`login` or :meth:`open`.

        ``org_fingerprint`` pins the organisation key that must have signed the hub's
        escrow policy (default: $CHAT_ORG_FINGERPRINT). Without a pin, or under a policy
        that does not verify against it, the client refuses to escrow case keys, so it
        cannot chat on a hub that requires escrow (docs/DISPUTES.md)."""
        record = credentials.store.record
        self._url = url
        self._store = credentials.store
        self._identity = credentials.identity
        self._login_keys = credentials.login_keys  # auth_key renews an expired token
        self._token = credentials.token
        self._account_id = record.account_id
        self._handle = record.handle
        self._role = record.role
        self._link: Link | None = None
        self._generation = 0
        self._authed = asyncio.Event()  # hello + auth done on the current link
        self._ready = asyncio.Event()  # ... and resync + resend done
        self._stop_error: BaseException | None = None
        self._events: asyncio.Queue[Event | object] = asyncio.Queue()
        self._inbox: asyncio.Queue[_Work] = asyncio.Queue()
        self._cases: dict[str, f.CaseInfo] = {}
        self._keys = KeyManager(
            self._identity, self._account_id, self._request, self._cases, self._case_info
        )
        self._outbox: dict[str, _Outgoing] = {}
        self._cursors = CursorTracker(record.cursors)  # what the processor has queued
        self._delivered: dict[str, Cursor] = dict(record.cursors)  # what the app consumed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._processor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._persist_handle: asyncio.TimerHandle | None = None
        self._logging_out = False
        self._org_fingerprint = org_fingerprint or os.environ.get("CHAT_ORG_FINGERPRINT")
        self._keys.make_capsule = self._escrow_capsule
        self._keys.on_foreign_key = self._on_foreign_key

    # -- construction -----------------------------------------------------------------

    @classmethod
    async def register(
        cls,
        url: str,
        handle: str,
        passphrase: str,
        *,
        home: Path,
        invite: str | None = None,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
        org_fingerprint: str | None = None,
    ) -> ChatClient:
        """Create an account (role "counselor" with a valid ``invite``), store its keys in
        ``home`` and return a connected client. Raises KdfTooWeak if the Argon2id limits
        are below the server's minimum, ``Conflict`` if the handle is taken,
        ``AuthFailed`` for a bad invite, KeyStoreError if ``home`` holds an account."""
        creds = await accounts.register(
            url,
            handle,
            passphrase,
            home=Path(home),
            invite=invite,
            opslimit=opslimit,
            memlimit=memlimit,
        )
        return await cls(url, creds, org_fingerprint=org_fingerprint)._start()

    @classmethod
    async def login(
        cls,
        url: str,
        handle: str,
        passphrase: str,
        *,
        home: Path,
        org_fingerprint: str | None = None,
    ) -> ChatClient:
        """Log in from any device: prelogin, derive, login, unwrap; store keys in ``home``.
        A wrong handle or passphrase raises ``AuthFailed``."""
        creds = await accounts.login(url, handle, passphrase, home=Path(home))
        return await cls(url, creds, org_fingerprint=org_fingerprint)._start()

    @classmethod
    async def open(
        cls, url: str | None, home: Path, passphrase: str, *, org_fingerprint: str | None = None
    ) -> ChatClient:
        """Unlock the key store in ``home`` and connect (to ``url``, or the stored server
        if None). Uses the stored token; logs in again only if it expired or is refused.
        A wrong passphrase raises ``CryptoError("wrong passphrase")`` before any I/O."""
        creds = await accounts.unlock(Path(home), passphrase)
        return await cls(
            url or creds.store.record.server, creds, org_fingerprint=org_fingerprint
        )._start()

    async def _start(self) -> ChatClient:
        self._first = asyncio.get_running_loop().create_future()
        self._processor = asyncio.create_task(self._process(), name="chat-client-processor")
        self._supervisor = asyncio.create_task(self._supervise(), name="chat-client-supervisor")
        try:
            await asyncio.shield(self._first)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- identity ------------------------------------------------------------------------

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def handle(self) -> str:
        return self._handle

    @property
    def role(self) -> str:
        return self._role

    @property
    def fingerprint(self) -> str:
        """Fingerprint of this account's signing key, for comparison out of band."""
        return crypto.fingerprint(self._identity.sign_pk)

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._stop_error is None

    # -- public API --------------------------------------------------------------------

    async def open_case(self, topic: str, language: str) -> f.CaseInfo:
        """Ask for counseling; the case is "assigned" at once if a counselor is online."""
        opened = expect(
            await self._request(f.CaseOpen, retry=False, topic=topic, language=language),
            f.CaseOpened,
        )
        self._remember_case(opened.case)
        return opened.case

    async def cases(self) -> list[f.CaseInfo]:
        """The cases this account participates in (refreshed from the server)."""
        result = expect(await self._request(f.CaseList), f.CaseListResult)
        for case in result.cases:
            self._remember_case(case)
        return list(result.cases)

    async def send(self, case_id: str, text: str) -> Sent:
        """Encrypt, sign and send ``text``; return once the server has stored it.

        Survives reconnects (the same frame is resent until acked). Fails only on a
        non-retryable server error, a non-resumable close, or :meth:`close`.
        """
        self._check_running()
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters")
        epoch, key = await self._keys.send_epoch(case_id)
        cmid = secrets.token_urlsafe(16)
        ts = _now_ms()
        envelope = crypto.Envelope(body=text, ts=ts, client_msg_id=cmid)
        nonce, ciphertext = crypto.encrypt_message(
            key,
            self._identity,
            case_id=case_id,
            epoch=epoch,
            sender_id=self._account_id,
            envelope=envelope,
        )
        out = _Outgoing(
            case_id=case_id,
            epoch=epoch,
            client_msg_id=cmid,
            nonce=nonce,
            ciphertext=ciphertext,
            body=text,
            ts=ts,
            future=asyncio.get_running_loop().create_future(),
        )
        self._check_running()
        self._outbox[cmid] = out
        if self._ready.is_set() and self._link is not None:
            self._transmit(out, self._link, self._generation)
        # Shielded: a caller that gives up waiting does not unsend the message.
        return await asyncio.shield(out.future)

    async def history(self, case_id: str) -> list[Message]:
        """The whole case, synced from seq 0, decrypted and verified (chain included).
        Independent of ``events()``: it moves no cursor."""
        records: list[f.MessageRecord] = []
        after = 0
        while True:
            result = expect(
                await self._request(f.Sync, case_id=case_id, after_seq=after, limit=MAX_SYNC_BATCH),
                f.SyncResult,
            )
            records.extend(result.messages)
            if not result.has_more or not result.messages:
                break
            after = result.messages[-1].seq
        case = await self._case_info(case_id)
        messages: list[Message] = []
        prev = GENESIS
        for expected_seq, record in enumerate(records, start=1):
            message = await self._open(record, case, prev)
            if record.seq != expected_seq and message.verified:
                message = dataclasses.replace(
                    message, body=None, verified=False, error=f"seq {expected_seq} is missing"
                )
            messages.append(message)
            prev = record.chain_hash
        return messages

    async def receipt(
        self, case_id: str, kind: Literal["delivered", "read"], up_to_seq: int
    ) -> None:
        """Tell the other participant what was delivered / read (stored as a maximum)."""
        expect(
            await self._request(f.Receipt, case_id=case_id, kind=kind, up_to_seq=up_to_seq),
            f.Ok,
        )

    async def typing(self, case_id: str, active: bool) -> None:
        """Ephemeral typing notice; never stored."""
        expect(await self._request(f.Typing, case_id=case_id, active=active), f.Ok)

    async def close_case(self, case_id: str) -> None:
        """Close the case for both participants; history stays readable."""
        expect(await self._request(f.CaseClose, retry=False, case_id=case_id), f.Ok)
        case = self._cases.get(case_id)
        if case is not None:
            self._cases[case_id] = msgspec.structs.replace(case, state="closed")

    async def directory(self, account_ids: Iterable[str]) -> list[f.DirectoryEntry]:
        """Public keys and handles of accounts sharing a case with us (cached)."""
        ids = list(dict.fromkeys(account_ids))
        entries = await self._keys.entries(ids)
        return [entries[a] for a in ids]

    async def events(self) -> AsyncIterator[Event]:
        """Events in arrival order; messages per case in seq order, exactly once.

        Meant for a single consumer. Ends after :meth:`close`; raises
        :class:`SessionEnded` (after the events queued before it) if the server ends the
        session for good. Consuming a MessageEvent advances the stored cursor, so a later
        :meth:`open` resumes after the last message the application saw.
        """
        while True:
            item = await self._events.get()
            if item is _END:
                self._events.put_nowait(_END)  # let a later iterator end too
                if self._stop_error is not None and not isinstance(self._stop_error, ClientClosed):
                    raise self._stop_error
                return
            if isinstance(item, MessageEvent):
                self._mark_delivered(item.message)
            yield cast(Event, item)

    # -- escrow, consent and disputes (docs/DISPUTES.md) ---------------------------------

    async def escrow_policy(self) -> tuple[f.SignedEscrowPolicy, int, bool] | None:
        """The hub's escrow policy, verified against the pinned organisation key, with
        its terms version and whether we accepted both; None if the hub has no escrow.
        Raises escrow.PolicyError if the policy does not verify (or nothing is pinned)."""
        result = expect(await self._request(f.PolicyGet), f.PolicyResult)
        if result.policy is None:
            return None
        if self._org_fingerprint is None:
            raise escrow.PolicyError(
                "the hub escrows case keys but no organisation fingerprint is pinned "
                "(--org-fingerprint / CHAT_ORG_FINGERPRINT)"
            )
        escrow.verify_policy(result.policy, self._org_fingerprint, _now_ms())
        return result.policy, result.terms_version, result.consented

    async def terms(self) -> tuple[int, str, str] | None:
        """(terms version, terms text, policy fingerprint) to show before consenting."""
        from protocol.terms import render_terms

        got = await self.escrow_policy()
        if got is None:
            return None
        signed, version, _ = got
        return (
            version,
            render_terms(version, signed.policy),
            escrow.policy_fingerprint(signed.policy),
        )

    async def consent(self) -> bool:
        """Sign and send acceptance of the current terms and policy (after showing
        :meth:`terms`). Returns False if the hub has no escrow (nothing to accept)."""
        got = await self.escrow_policy()
        if got is None:
            return False
        signed, version, _ = got
        fp = escrow.policy_fingerprint(signed.policy)
        sig = escrow.sign_consent(self._identity, self._account_id, version, fp)
        expect(
            await self._request(
                f.ConsentAccept, terms_version=version, policy_fingerprint=fp, sig=sig
            ),
            f.Ok,
        )
        return True

    async def file_dispute(self, case_id: str, reason: str) -> f.DisputeInfo:
        """Ask the escrow officers to review the whole case. The reason is sealed to
        each officer; the request is signed with our key."""
        got = await self.escrow_policy()
        if got is None:
            raise pe.NotFound("this hub has no escrow policy; disputes are not available")
        policy = got[0].policy
        fp = escrow.policy_fingerprint(policy)
        reason_ct = escrow.seal_reasons(policy, reason)
        ts = _now_ms()
        sig = escrow.sign_dispute(self._identity, case_id, "all", ts, fp, reason_ct)
        created = expect(
            await self._request(
                f.DisputeRequest,
                retry=False,
                case_id=case_id,
                timestamp=ts,
                policy_fingerprint=fp,
                reason_ct=reason_ct,
                sig=sig,
            ),
            f.DisputeCreated,
        )
        return created.dispute

    async def disputes(self) -> list[f.DisputeInfo]:
        """Our dispute requests and their states."""
        return list(expect(await self._request(f.DisputeList), f.DisputeListResult).disputes)

    async def _escrow_capsule(self, case: f.CaseInfo, epoch: int, key: bytes) -> f.Capsule | None:
        got = await self.escrow_policy()
        if got is None:
            return None
        return escrow.make_capsule(got[0].policy, case.case_id, epoch, key)

    def _on_foreign_key(self, case: f.CaseInfo, epoch: int, key: bytes) -> None:
        # Each participant vouches for K on its own: deposit our capsule of a key the
        # other side made (after open_epoch_key checked it against the commitment).
        self._spawn(self._deposit_capsule(case, epoch, key))

    async def _deposit_capsule(self, case: f.CaseInfo, epoch: int, key: bytes) -> None:
        try:
            capsule = await self._escrow_capsule(case, epoch, key)
            if capsule is None:
                return
            expect(
                await self._request(
                    f.CaseCapsule, case_id=case.case_id, epoch=epoch, capsule=capsule
                ),
                f.Ok,
            )
        except pe.Conflict:
            return  # deposited before (an earlier session)
        except (pe.ProtocolError, LinkClosed, RequestInterrupted) as exc:
            log.warning("escrow capsule not deposited: %s", exc)

    async def logout(self) -> None:
        """Revoke the session token on the server, forget it locally, and close."""
        self._logging_out = True  # the server's close 1000 that follows is expected
        with contextlib.suppress(LinkClosed, RequestInterrupted, pe.ProtocolError):
            self._check_running()
            await self._request(f.Logout, retry=False)
        self._store.record.token_box = None
        self._store.save()
        await self.close()

    async def close(self) -> None:
        """Stop all tasks, close the connection and write the cursors. Idempotent."""
        self._stop(ClientClosed("client closed"))
        link = self._link
        if link is not None and not link.closed:
            with contextlib.suppress(Exception):
                await link.close()
        tasks = [t for t in (self._supervisor, self._processor, *self._tasks) if t is not None]
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not current), return_exceptions=True)
        self._persist()

    # -- the supervisor: connection lifecycle --------------------------------------------

    async def _supervise(self) -> None:
        assert self._first is not None
        backoff = Backoff()
        first_failures = 0
        while self._stop_error is None:
            try:
                link = await Link.open(
                    self._url, on_event=self._inbox.put_nowait, on_close=self._on_link_closed
                )
            except ConnectFailed as exc:
                if not self._first.done():
                    first_failures += 1
                    if first_failures >= FIRST_CONNECT_ATTEMPTS:
                        self._stop(exc)
                        return
                await self._pause(backoff, str(exc))
                continue
            self._generation += 1
            self._link = link
            reader = asyncio.create_task(link.run(), name="chat-client-reader")
            setup = asyncio.create_task(self._setup(link, self._generation))
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
                if isinstance(failure, TimeoutError | pe.RateLimited):
                    await link.abort(f"session set-up failed: {type(failure).__name__}")
                elif not isinstance(failure, LinkClosed):
                    assert failure is not None
                    self._stop(failure)
                    await link.close()
                    await reader
                    return
            info = await reader
            if self._stop_error is not None:
                return
            if self._logging_out:
                self._stop(ClientClosed("logged out"))
                return
            if not is_resumable(info):
                self._stop(SessionEnded(info.code, info.reason))
                return
            log.info("connection lost (%s); reconnecting", info)
            self._emit(ConnectionEvent("disconnected", str(info)))
            if not self._first.done():
                first_failures += 1
                if first_failures >= FIRST_CONNECT_ATTEMPTS:
                    self._stop(ConnectFailed(f"connection to {self._url} keeps failing: {info}"))
                    return
            await self._pause(backoff, str(info))

    async def _pause(self, backoff: Backoff, why: str) -> None:
        delay = backoff.next_delay()
        self._emit(ConnectionEvent("reconnecting", f"in {delay:.1f}s after {why}"))
        await asyncio.sleep(delay)

    def _on_link_closed(self, info: CloseInfo) -> None:
        # Runs inside the reader before pending requests fail, so a retrying request
        # waits for the next link instead of spinning on the dead one.
        if self._stop_error is None:
            self._authed.clear()
            self._ready.clear()

    async def _setup(self, link: Link, generation: int) -> None:
        """hello -> auth (fresh login if the token is refused) -> resync -> resend."""
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
        self._authed.set()
        for case in welcome.cases:
            self._remember_case(case)
        self._emit(ConnectionEvent("connected", f"session {welcome.session_id}"))
        # Sync every case that may have moved, through the processor (it owns cursors).
        wanted = [
            c.case_id
            for c in welcome.cases
            if c.state != "closed" or c.last_seq > self._cursors.last(c.case_id)
        ]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Resync(wanted, done))
        await done
        for out in list(self._outbox.values()):
            self._transmit(out, link, generation)
        self._ready.set()

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

    def _stop(self, exc: BaseException) -> None:
        """Enter the terminal state: wake every waiter, fail every pending send."""
        if self._stop_error is not None:
            return
        self._stop_error = exc
        if not isinstance(exc, ClientClosed):
            log.warning("client stopped: %s", exc)
        self._authed.set()
        self._ready.set()
        for out in self._outbox.values():
            if not out.future.done():
                out.future.set_exception(exc)
                out.future.exception()  # mark retrieved: the caller may be gone
        self._outbox.clear()
        if self._first is not None and not self._first.done():
            self._first.set_exception(exc)
        self._events.put_nowait(_END)

    def _check_running(self) -> None:
        if self._stop_error is not None:
            raise self._stop_error

    # -- requests -------------------------------------------------------------------------

    async def _request(
        self, cls: type[msgspec.Struct], /, *, retry: bool = True, **fields: Any
    ) -> f.ServerFrame:
        """Send a request on the current authenticated link; across a reconnect, repeat it
        if ``retry`` (idempotent requests), else raise RequestInterrupted."""
        while True:
            self._check_running()
            await self._authed.wait()
            self._check_running()
            link = self._link
            if link is None or link.closed:
                await asyncio.sleep(0.05)
                continue
            try:
                return await link.request(cls, **fields)
            except LinkClosed:
                if not retry:
                    self._check_running()
                    raise RequestInterrupted(
                        "connection lost before the server answered; check and retry"
                    ) from None
            except pe.Unavailable:
                if not retry:
                    raise
                await asyncio.sleep(0.2 + random.random() / 5)  # the server is going away

    def _transmit(self, out: _Outgoing, link: Link, generation: int) -> None:
        if out.generation == generation:
            return  # already on this link
        out.generation = generation
        self._spawn(self._deliver(out, link, generation))

    async def _deliver(self, out: _Outgoing, link: Link, generation: int) -> None:
        try:
            ack = expect(
                await link.request(
                    f.MsgSend,
                    case_id=out.case_id,
                    epoch=out.epoch,
                    client_msg_id=out.client_msg_id,
                    nonce=out.nonce,
                    ciphertext=out.ciphertext,
                ),
                f.MsgAck,
            )
        except LinkClosed:
            return  # stays in the outbox: resent after the next reconnect
        except (pe.RateLimited, pe.Unavailable):
            # Not stored: try again shortly on this link, or after the reconnect that a
            # shutting-down server is about to force.
            await asyncio.sleep(0.5 + random.random())
            if self._generation == generation and not link.closed:
                out.generation = 0
                self._transmit(out, link, generation)
            return
        except pe.ProtocolError as exc:
            self._outbox.pop(out.client_msg_id, None)
            if not out.future.done():
                out.future.set_exception(exc)
            return
        if ack.client_msg_id != out.client_msg_id or ack.case_id != out.case_id:
            self._outbox.pop(out.client_msg_id, None)
            if not out.future.done():
                out.future.set_exception(pe.InvalidFrame("ack names another message"))
            return
        self._outbox.pop(out.client_msg_id, None)
        if out.future.done():
            return  # a second ack for a resent frame
        out.future.set_result(
            Sent(
                case_id=ack.case_id,
                client_msg_id=ack.client_msg_id,
                seq=ack.seq,
                chain_hash=ack.chain_hash,
                duplicate=ack.duplicate,
            )
        )
        self._inbox.put_nowait(_OwnAck(out, ack))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if self._stop_error is None:
                log.warning("background task failed: %s: %s", type(exc).__name__, exc)

    # -- the processor: cursors, decryption, events -------------------------------------

    async def _process(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                await self._process_item(item)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if isinstance(item, _Resync) and not item.done.done():
                    item.done.set_result(None)
                if self._stop_error is not None:
                    return
                log.exception("failed to handle %s: %s", type(item).__name__, type(exc).__name__)

    async def _process_item(self, item: _Work) -> None:
        if isinstance(item, f.MsgNew):
            await self._on_record(item.message)
        elif isinstance(item, _OwnAck):
            await self._on_own_ack(item.out, item.ack)
        elif isinstance(item, _Resync):
            try:
                for case_id in item.cases:
                    try:
                        await self._sync_case(case_id)
                    except pe.RemoteError as exc:
                        log.warning("sync of a case failed: %s", exc.code.value)
            finally:
                if not item.done.done():
                    item.done.set_result(None)
        elif isinstance(item, f.CaseAssigned):
            self._remember_case(item.case)
            self._emit(CaseAssignedEvent(item.case))
        elif isinstance(item, f.CaseKeyNew):
            case = self._cases.get(item.case_id)
            if case is not None and item.epoch > case.epoch:
                self._cases[item.case_id] = msgspec.structs.replace(case, epoch=item.epoch)
        elif isinstance(item, f.CaseClosed):
            case = self._cases.get(item.case_id)
            if case is not None:
                self._cases[item.case_id] = msgspec.structs.replace(case, state="closed")
            self._emit(CaseClosedEvent(item.case_id))
        elif isinstance(item, f.TypingNew):
            self._emit(TypingEvent(item.case_id, item.account_id, item.active))
        elif isinstance(item, f.ReceiptNew):
            self._emit(ReceiptEvent(item.case_id, item.account_id, item.kind, item.up_to_seq))
        elif isinstance(item, f.DisputeUpdated):
            d = item.dispute
            self._emit(DisputeEvent(d.request_id, d.case_id, d.state))
        else:
            log.debug("ignoring unexpected event %s", type(item).__name__)

    async def _on_record(self, record: f.MessageRecord) -> None:
        verdict = self._cursors.classify(record.case_id, record.seq)
        if verdict is Verdict.NEXT:
            await self._deliver_record(record)
        elif verdict is Verdict.GAP:
            await self._sync_case(record.case_id)  # brings this record too, in order

    async def _on_own_ack(self, out: _Outgoing, ack: f.MsgAck) -> None:
        verdict = self._cursors.classify(ack.case_id, ack.seq)
        if verdict is Verdict.GAP:
            await self._sync_case(ack.case_id)
            return
        if verdict is Verdict.DUPLICATE:
            return
        record = f.MessageRecord(
            case_id=out.case_id,
            seq=ack.seq,
            epoch=out.epoch,
            sender_id=self._account_id,
            client_msg_id=out.client_msg_id,
            nonce=out.nonce,
            ciphertext=out.ciphertext,
            chain_hash=ack.chain_hash,
            server_ts=0,
        )
        prev = self._cursors.get(ack.case_id).chain_hash
        intact = prev is None or link_matches(prev, record)
        message = Message(
            case_id=out.case_id,
            seq=ack.seq,
            epoch=out.epoch,
            sender_id=self._account_id,
            client_msg_id=out.client_msg_id,
            body=out.body if intact else None,
            ts=out.ts,
            verified=intact,
            error=None if intact else "hash chain mismatch (a stored message was altered)",
            chain_hash=ack.chain_hash,
        )
        self._cursors.advance(ack.case_id, ack.seq, ack.chain_hash)
        self._emit(MessageEvent(message))

    async def _sync_case(self, case_id: str) -> None:
        """Deliver everything after the cursor, looping while the server has more."""
        while True:
            result = expect(
                await self._request(
                    f.Sync,
                    case_id=case_id,
                    after_seq=self._cursors.last(case_id),
                    limit=MAX_SYNC_BATCH,
                ),
                f.SyncResult,
            )
            for record in result.messages:
                if self._cursors.classify(case_id, record.seq) is not Verdict.DUPLICATE:
                    await self._deliver_record(record)
            if not result.has_more or not result.messages:
                return

    async def _deliver_record(self, record: f.MessageRecord) -> None:
        cursor = self._cursors.get(record.case_id)
        # The chain can only be checked against the record right before this one.
        prev = cursor.chain_hash if cursor.seq == record.seq - 1 else None
        if prev is None and cursor.seq != record.seq - 1:
            log.warning("server skipped seqs %d..%d", cursor.seq + 1, record.seq - 1)
        case = await self._case_info(record.case_id)
        message = await self._open(record, case, prev)
        self._cursors.raise_to(record.case_id, record.seq, record.chain_hash)
        self._emit(MessageEvent(message))

    async def _open(
        self, record: f.MessageRecord, case: f.CaseInfo | None, prev: bytes | None
    ) -> Message:
        key = sender = None
        if case is not None:
            key = await self._keys.key_for(case, record.epoch)
            sender = await self._keys.entry(record.sender_id)
        return open_record(record, case=case, key=key, sender=sender, prev_hash=prev)

    def _emit(self, event: Event) -> None:
        if self._stop_error is None:
            self._events.put_nowait(event)

    def _mark_delivered(self, message: Message) -> None:
        current = self._delivered.get(message.case_id, Cursor())
        if message.seq > current.seq:
            self._delivered[message.case_id] = Cursor(message.seq, message.chain_hash or None)
            if self._persist_handle is None:
                loop = asyncio.get_running_loop()
                self._persist_handle = loop.call_later(PERSIST_DELAY_S, self._persist)

    def _persist(self) -> None:
        if self._persist_handle is not None:
            self._persist_handle.cancel()
            self._persist_handle = None
        if self._delivered == self._store.record.cursors:
            return
        self._store.set_cursors(self._delivered)
        try:
            self._store.save()
        except OSError as exc:
            log.warning("cannot write cursors: %s", exc)

    # -- cases, keys and directory ----------------------------------------------------

    def _remember_case(self, case: f.CaseInfo) -> None:
        old = self._cases.get(case.case_id)
        if old is not None and old.epoch > case.epoch:
            case = msgspec.structs.replace(case, epoch=old.epoch)
        self._cases[case.case_id] = case
        # The client makes epoch 1 as soon as a counselor is there, so either side can
        # write first without waiting for the other.
        if (
            case.state == "assigned"
            and case.epoch == 0
            and case.client_id == self._account_id
            and self._keys.keyring.latest(case.case_id) == 0
        ):
            self._spawn(self._keys.send_epoch(case.case_id))

    async def _case_info(self, case_id: str) -> f.CaseInfo | None:
        case = self._cases.get(case_id)
        if case is None or case.state == "waiting":
            with contextlib.suppress(pe.RemoteError):
                await self.cases()
            case = self._cases.get(case_id)
        return case
