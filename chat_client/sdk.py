"""The client SDK: :class:`ChatClient` holds the private keys and talks to the hub.

``ChatClient`` is a thin facade over the client's rooms, each a module named like its
counterpart in the browser client (web_client/src/; the table is in docs/WEB.md):
sdk.py ~ workspace.js (this facade), supervisor.py ~ supervisor.js (link lifecycle,
reconnect, session set-up), connection.py ~ connection.js (one WebSocket), outbox.py ~
outbox.js (unacked sends), processor.py ~ processor.js (cases, cursors, decryption,
events), keymanager.py ~ keys.js (directory and case keys), escrow.py ~ escrow.js
(escrow policy, capsules, consent, disputes). Protocol version 2 adds policy.py (KDF
floor, passphrase rule), contacts.py and trust.py (pins, box key signatures, counselor
certificates) and ordering.py (the order messages and receipts sign).

Nothing the hub says is trusted where it matters (docs/PROTOCOL.md section 16): a KDF
below the floor or unlike the remembered one, an unsigned or changed contact key and an
uncertified counselor (with an organisation key pinned) raise a
:class:`~chat_client.errors.SecurityRefusal` before anything depends on them; a history
that contradicts what participants signed or what this client saw comes out as
:class:`~chat_client.models.WarningEvent` naming the seq.

Runtime layout (all on one event loop): the **supervisor** task connects and sets each
session up; the link's **reader** answers request futures and queues events, in wire
order, for the **processor** task, the only code that moves delivery cursors.

Delivery guarantee: every message of every known case reaches ``events()`` exactly once
and in seq order (own messages included, from their ack), across reconnects. ``send``
keeps its frame (same client_msg_id, nonce and ciphertext) until the server acks it, so
a retry after a reconnect is answered with the original seq (``duplicate=True``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec

from protocol import crypto
from protocol import errors as pe
from protocol import frames as f
from protocol.transcript import OrderProblem

from . import accounts
from .connection import Link, LinkClosed, expect
from .contacts import Contacts
from .cursors import Cursor
from .errors import RequestInterrupted, SecurityRefusal
from .escrow import Escrow, PolicyView, Terms
from .escrowpins import EscrowPins
from .keymanager import KeyManager
from .models import Event, Message, MessageEvent, QueueEvent, Safety, Sent, WarningEvent
from .outbox import Outbox
from .processor import CaseMap, Processor
from .receipts import ReceiptSender
from .supervisor import Supervisor

__all__ = ["DEFAULT_MEMLIMIT", "DEFAULT_OPSLIMIT", "ChatClient"]

log = logging.getLogger("chat_client")

#: Argon2id of a hub's ``standard`` KDF profile. New accounts take the cost the hub
#: announces in ``challenge`` (one cost for all its accounts); these are for reference.
DEFAULT_OPSLIMIT = 3
DEFAULT_MEMLIMIT = 64 * 1024 * 1024


class ChatClient:
    """A connected, authenticated client. Build it with :meth:`register`, :meth:`login`
    or :meth:`open`; call :meth:`close` (or use ``async with``) when done.

    Methods raise the typed :mod:`protocol.errors` exceptions for server errors
    (``Forbidden``, ``AuthFailed``...), :class:`SessionEnded` after a non-resumable close,
    and :class:`ClientClosed` after :meth:`close`. Transient disconnects are invisible to
    callers apart from :class:`ConnectionEvent` events and latency.
    """

    def __init__(
        self,
        url: str,
        credentials: accounts.Credentials,
        *,
        org_fingerprint: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Not connected yet: use :meth:`register`, :meth:`login` or :meth:`open`.

        ``tls`` verifies a ``wss://`` server (default: the system's trusted CAs;
        ``connection.tls_context(ca_file)`` trusts a private CA instead).

        ``org_fingerprint`` pins the organisation key that must have signed the hub's
        escrow policy (default: $CHAT_ORG_FINGERPRINT). Without a pin, or under a policy
        that does not verify against it, the client refuses to escrow case keys, so it
        cannot chat on a hub that requires escrow (docs/DISPUTES.md)."""
        record = credentials.store.record
        self._store = credentials.store
        self._identity = credentials.identity
        self._account_id = record.account_id
        self._handle = record.handle
        self._role = record.role
        self._session = Supervisor(
            url,
            credentials,
            on_frame=lambda frame: self._processor.put(frame),
            on_session=self._on_session,
            on_connection=lambda event: self._processor.emit(event),
            on_stop=self._on_stop,
            tls=tls,
        )
        request = self._session.request
        self._cases = CaseMap(request, on_remember=self._on_case)
        # The organisation pin: given, else the environment, else pinned in this home at
        # consent (trust on first use); a given one must agree with the home's pin.
        escrow_pins = EscrowPins(credentials.store.home)
        org_fingerprint = escrow_pins.resolve(
            org_fingerprint or os.environ.get("CHAT_ORG_FINGERPRINT") or None
        )
        self._contacts = Contacts.load(self._store.home)
        self._keys = KeyManager(
            self._identity,
            self._account_id,
            request,
            self._cases.by_id,
            self._cases.lookup,
            contacts=self._contacts,
            org_fingerprint=org_fingerprint,
            warn=lambda case_id, text: self._processor.emit(WarningEvent(case_id, "no_org", text)),
        )
        self._escrow = Escrow(
            self._session,
            self._identity,
            self._account_id,
            org_fingerprint,
            escrow_pins,
        )
        self._keys.make_capsule = self._escrow.capsule
        self._keys.escrow_binding = self._escrow.binding
        self._keys.on_foreign_key = self._escrow.on_foreign_key
        self._keys.capsule_refused = self._escrow.forget_policy
        self._processor = Processor(
            self._account_id,
            request,
            self._keys,
            self._cases,
            cursors=record.cursors,
            save_cursors=self._save_cursors,
        )
        self._receipts = ReceiptSender(self.receipt)
        self._queues: dict[str, f.QueueInfo] = {}
        self._outbox = Outbox(
            self._session,
            self._keys,
            self._identity,
            self._account_id,
            on_stored=self._processor.own_ack,
            next_order=self._next_order,
        )

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
        opslimit: int | None = None,
        memlimit: int | None = None,
        org_fingerprint: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> ChatClient:
        """Create an account (role "counselor" with a valid ``invite``), store its keys in
        ``home`` and return a connected client. The Argon2id limits are the ones the
        server announces (one cost for all its accounts); given ones that differ raise
        KdfTooWeak. ``Conflict`` if the handle is taken, ``AuthFailed`` for a bad invite,
        KeyStoreError if ``home`` holds an account."""
        creds = await accounts.register(
            url,
            handle,
            passphrase,
            home=Path(home),
            invite=invite,
            opslimit=opslimit,
            memlimit=memlimit,
            tls=tls,
        )
        return await cls(url, creds, org_fingerprint=org_fingerprint, tls=tls)._start()

    @classmethod
    async def login(
        cls,
        url: str,
        handle: str,
        passphrase: str,
        *,
        home: Path,
        org_fingerprint: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> ChatClient:
        """Log in from any device: prelogin, derive, login, unwrap; store keys in ``home``.
        A wrong handle or passphrase raises ``AuthFailed``."""
        creds = await accounts.login(url, handle, passphrase, home=Path(home), tls=tls)
        client = await cls(url, creds, org_fingerprint=org_fingerprint, tls=tls)._start()
        if creds.needs_attest:
            # A version-1 account: sign our box key now so peers can trust it.
            try:
                expect(
                    await client._request(
                        f.AccountAttest, box_sig=crypto.sign_box_key(creds.identity)
                    ),
                    f.Ok,
                )
            except BaseException:
                await client.close()
                raise
        return client

    @classmethod
    async def open(
        cls,
        url: str | None,
        home: Path,
        passphrase: str,
        *,
        org_fingerprint: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> ChatClient:
        """Unlock the key store in ``home`` and connect (to ``url``, or the stored server
        if None). Uses the stored token; logs in again only if it expired or is refused.
        A wrong passphrase raises ``CryptoError("wrong passphrase")`` before any I/O."""
        creds = await accounts.unlock(Path(home), passphrase)
        return await cls(
            url or creds.store.record.server, creds, org_fingerprint=org_fingerprint, tls=tls
        )._start()

    async def _start(self) -> ChatClient:
        self._session.spawn(self._processor.run(), name="chat-client-processor")
        try:
            await self._session.start()
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
        """Fingerprint of this account over both its keys (crypto.fingerprint_v2), for
        comparison out of band."""
        return crypto.fingerprint_v2(self._identity.sign_pk, self._identity.box_pk)

    async def safety(self, handle: str) -> Safety:
        """The contact's current keys (box key signature checked), the safety number we
        share with them, and the pinned fingerprint if the keys changed since pinning
        (then nothing is sealed to them until :meth:`trust_reset`). An unpinned contact
        is pinned now. NotFound if no case of ours involves ``handle``."""
        entry = await self._contact(handle)
        pin = self._contacts.get(entry.account_id)
        if pin is None:
            self._contacts.check(entry.account_id, entry.handle, entry.sign_pk, entry.box_pk)
        changed = pin is not None and (pin.sign_pk, pin.box_pk) != (entry.sign_pk, entry.box_pk)
        number = crypto.safety_number(
            (self._identity.sign_pk, self._identity.box_pk), (entry.sign_pk, entry.box_pk)
        )
        return Safety(entry, number, pin.fingerprint if changed and pin is not None else None)

    async def trust_reset(self, handle: str) -> Safety:
        """Forget the pin of ``handle`` and pin the keys the hub presents now (after the
        user compared the safety number out of band); their box key signature must
        still verify. Returns :meth:`safety` of the new keys."""
        entry = await self._contact(handle)
        self._contacts.forget(handle)
        self._keys.forget_entries()
        self._contacts.check(entry.account_id, entry.handle, entry.sign_pk, entry.box_pk)
        return await self.safety(handle)

    async def _contact(self, handle: str) -> f.DirectoryEntry:
        cases = await self.cases()
        others = {
            a
            for c in cases
            for a in (c.client_id, c.counselor_id)
            if a is not None and a != self._account_id
        }
        others.update(pin.account_id for pin in self._contacts.by_handle(handle))
        entry = await self._keys.lookup_handle(sorted(others), handle)
        if entry is None:
            raise pe.NotFound(f"no case of yours involves {handle}")
        return entry

    @property
    def connected(self) -> bool:
        return self._session.connected

    # -- public API --------------------------------------------------------------------

    async def open_case(self, topic: str, language: str) -> f.CaseInfo:
        """Ask for counseling; the case is "assigned" at once if a counselor is online."""
        opened = expect(
            await self._request(f.CaseOpen, retry=False, topic=topic, language=language),
            f.CaseOpened,
        )
        self._cases.remember(opened.case)
        if opened.queue is not None:
            self._queues[opened.case.case_id] = opened.queue
        return opened.case

    def queue(self, case_id: str) -> f.QueueInfo | None:
        """Where our waiting case stood when last heard (from ``open_case`` or a
        :class:`QueueEvent`), or None if nothing was said."""
        return self._queues.get(case_id)

    async def cases(self) -> list[f.CaseInfo]:
        """The cases this account participates in (refreshed from the server)."""
        return await self._cases.refresh()

    async def send(self, case_id: str, text: str) -> Sent:
        """Encrypt, sign and send ``text``; return once the server has stored it.

        Survives reconnects (the same frame is resent until acked). Fails only on a
        non-retryable server error, a non-resumable close, or :meth:`close`.
        """
        return await self._outbox.send(case_id, text)

    async def history(self, case_id: str) -> list[Message]:
        """The whole case, synced from seq 0, decrypted and verified (chain included).
        Independent of ``events()``: it moves no cursor."""
        return (await self._processor.history(case_id))[0]

    async def history_report(self, case_id: str) -> tuple[list[Message], list[OrderProblem]]:
        """:meth:`history` and every contradiction between the history the hub presents
        and the order the participants signed or this client saw (dropped, reordered,
        replayed, rewritten; each names its seq). Problems are also WarningEvents."""
        return await self._processor.history(case_id)

    async def receipt(
        self, case_id: str, kind: Literal["delivered", "read"], up_to_seq: int
    ) -> None:
        """Tell the other participant what was delivered / read (stored as a maximum).
        The receipt is signed over the chain hash this client saw at ``up_to_seq``, so it
        pins the history up to there; ValueError if this client has not seen that seq."""
        await self._processor.prepare(case_id)
        chain_hash = self._processor.ordering.chain_hash_at(case_id, up_to_seq)
        if chain_hash is None:
            raise ValueError(f"seq {up_to_seq} of the case has not been received here yet")
        sig = crypto.sign_receipt(self._identity, case_id, kind, up_to_seq, chain_hash)
        expect(
            await self._request(
                f.Receipt,
                case_id=case_id,
                kind=kind,
                up_to_seq=up_to_seq,
                chain_hash=chain_hash,
                sig=sig,
            ),
            f.Ok,
        )

    async def typing(self, case_id: str, active: bool) -> None:
        """Ephemeral typing notice; never stored."""
        expect(await self._request(f.Typing, case_id=case_id, active=active), f.Ok)

    async def close_case(self, case_id: str) -> None:
        """Close the case for both participants; history stays readable."""
        expect(await self._request(f.CaseClose, retry=False, case_id=case_id), f.Ok)
        self._cases.mark_closed(case_id)

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
        async for event in self._processor.events():
            if isinstance(event, MessageEvent):
                message = event.message
                if message.sender_id != self._account_id and message.verified:
                    self._receipts.delivered(message.case_id, message.seq)
            elif isinstance(event, QueueEvent):
                self._queues[event.case_id] = f.QueueInfo(
                    position=event.position,
                    counselors_online=event.counselors_online,
                    specialists_online=event.specialists_online,
                )
            yield event

    async def mark_read(self, case_id: str, up_to_seq: int) -> None:
        """Tell the other participant the messages up to ``up_to_seq`` were shown (only
        if that is further than said before; never raises for a receipt not sent).
        Messages received through :meth:`events` are marked "delivered" by themselves."""
        await self._receipts.read(case_id, up_to_seq)

    # -- escrow, consent and disputes (docs/DISPUTES.md; escrow.py) ----------------------

    async def escrow_policy(self) -> PolicyView | None:
        """The hub's escrow policy, verified against the pinned organisation key, with
        its terms version and whether we accepted both; None if the hub has no escrow.
        Raises escrow.PolicyError if the policy does not verify (or nothing is pinned)."""
        return await self._escrow.policy(fresh=True)

    async def terms(self) -> Terms | None:
        """The terms to show before consenting (version, text, policy fingerprint, the
        signed policy, its organisation and whether that is pinned yet)."""
        return await self._escrow.terms()

    async def consent(self, shown: Terms | None = None) -> bool:
        """Sign and send acceptance of ``shown`` (what :meth:`terms` returned and the
        person read), exactly that policy and version; without it, of the hub's current
        terms. Returns False if the hub has no escrow (nothing to accept)."""
        return await self._escrow.consent(shown)

    async def file_dispute(self, case_id: str, reason: str) -> f.DisputeInfo:
        """Ask the escrow officers to review the whole case. The reason is sealed to
        each officer; the request is signed with our key."""
        return await self._escrow.file_dispute(case_id, reason)

    async def disputes(self) -> list[f.DisputeInfo]:
        """Our dispute requests and their states."""
        return await self._escrow.disputes()

    # -- ending ----------------------------------------------------------------------------

    async def logout(self, *, everywhere: bool = False) -> None:
        """Revoke the session token on the server, forget it locally, and close.
        ``everywhere``: revoke every token of the account and end all its sessions on
        every device (they stop with SessionEnded, close code 4004)."""
        self._session.logging_out = True  # the server's close 1000 that follows is expected
        with contextlib.suppress(LinkClosed, RequestInterrupted, pe.ProtocolError):
            self._session.check_running()
            await self._request(f.Logout, all=everywhere, retry=False)
        self._session.forget_token()
        await self.close()

    async def close(self) -> None:
        """Stop all tasks, close the connection and write the cursors. Idempotent."""
        await self._receipts.flush()
        await self._session.close()
        self._processor.persist()

    # -- wiring ------------------------------------------------------------------------------

    @property
    def _link(self) -> Link | None:
        """The current link (tests cut it to simulate a network failure)."""
        return self._session.link

    async def _request(
        self, cls: type[msgspec.Struct], /, *, retry: bool = True, **fields: Any
    ) -> f.ServerFrame:
        return await self._session.request(cls, retry=retry, **fields)

    async def _on_session(self, link: Link, generation: int, welcome: f.Welcome) -> None:
        """A new authenticated link: learn the cases, sync what moved (through the
        processor, which owns cursors), then resend what is still unacked."""
        for case in welcome.cases:
            self._cases.remember(case)
        await self._processor.resync(welcome)
        # Keys made while a case waited go to its counselor now (awaited, so that even a
        # one-shot command shares them before it ends).
        for case in welcome.cases:
            if self._keys.share_due(case):
                await self._share_keys(case.case_id)
        self._outbox.resend(link, generation)

    async def _next_order(self, case_id: str) -> tuple[int, bytes, int]:
        await self._processor.prepare(case_id)
        return self._processor.ordering.next_order(case_id)

    def _on_stop(self, exc: BaseException) -> None:
        self._outbox.fail_all(exc)
        self._processor.end(exc)

    def _on_case(self, case: f.CaseInfo) -> None:
        if self._keys.first_epoch_due(case):
            self._session.spawn(self._keys.send_epoch(case.case_id))
        if self._keys.share_due(case):
            self._session.spawn(self._share_keys(case.case_id))

    async def _share_keys(self, case_id: str) -> None:
        """Share the keys we made while the case waited with its counselor, once they are
        verified (keymanager.share_keys); a refusal is said plainly and shares nothing."""
        try:
            shared = await self._keys.share_keys(case_id)
        except SecurityRefusal as exc:
            text = f"the case key was not shared with the counselor: {exc}"
            log.warning("case %s: %s", case_id, text)
            self._processor.emit(WarningEvent(case_id, "key_not_shared", text))
            return
        except (pe.RemoteError, pe.CryptoError) as exc:
            # Tried again on the next connection (nothing was marked shared).
            log.warning("case %s: keys not shared yet: %s", case_id, type(exc).__name__)
            return
        if shared:
            log.info("case %s: shared %d key(s) with the counselor", case_id, shared)

    def _save_cursors(self, cursors: dict[str, Cursor]) -> None:
        self._store.set_cursors(cursors)
        try:
            self._store.save()
        except OSError as exc:
            log.warning("cannot write cursors: %s", exc)
