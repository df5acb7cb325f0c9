"""The outbox: messages sent but not yet acknowledged, resent until the hub stores them.

Web counterpart: web_client/src/outbox.js.

Contract:

* :meth:`Outbox.send` encrypts and signs once, keeps the frame (client_msg_id, epoch,
  nonce, ciphertext) in the outbox, and returns the hub's :class:`Sent` once the message
  is stored. The bytes never change, so every resend is idempotent: the hub answers a
  repeat with the original seq (``duplicate=True``).
* An entry is transmitted at most once per connection generation (:meth:`due`): on the
  link it was queued for, and again on each later link until acked (:meth:`resend`,
  called by the session set-up after the resync).
* An ack is matched to its entry by client_msg_id (:meth:`settle`); an ack that names
  another message fails the send; a second ack for a resent frame is ignored.
* Rate limiting and a hub going away (``rate_limited``, ``unavailable``) retry the same
  frame; any other error from the hub fails only that send. :meth:`fail_all` fails
  every pending send when the client stops.
* Each message signs the order it was composed in (V2 section 4): ``next_order(case)``
  gives (prev_seq, prev_hash, n) from what the processor has seen (ordering.py), and
  ``n`` is sealed into the bytes once, so every resend keeps it.
* A settled send is handed to ``on_stored`` (the processor turns it into the sender's
  own MessageEvent, in seq order).

The bookkeeping (:meth:`add`, :meth:`due`, :meth:`settle`, :meth:`fail_all`) is plain
synchronous code over futures, so it is tested without a network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
from collections.abc import Awaitable, Callable

from protocol import crypto
from protocol import errors as pe
from protocol import frames as f
from protocol.clock import now_ms
from protocol.limits import MAX_MESSAGE_CHARS

from .connection import Link, LinkClosed, expect
from .keymanager import KeyManager
from .models import Sent
from .supervisor import Supervisor

__all__ = ["NextOrder", "Order", "Outbox", "Outgoing"]

#: (prev_seq, prev_hash, n) a new message signs.
Order = tuple[int, bytes, int]
#: ``await next_order(case_id)``: the order of the next message composed in the case.
NextOrder = Callable[[str], Awaitable[Order]]


@dataclasses.dataclass(eq=False)
class Outgoing:
    """One unacked msg.send. Its bytes never change, so a resend is idempotent."""

    case_id: str
    epoch: int
    client_msg_id: str
    nonce: bytes
    ciphertext: bytes
    body: str
    ts: int
    envelope: crypto.Envelope  # what was signed, with the order fields (prev_seq, n)
    future: asyncio.Future[Sent]
    generation: int = 0  # the link generation it was last transmitted on (0: never)

    def frame_fields(self) -> dict[str, object]:
        """The fields of its ``msg.send`` (the same on every transmission)."""
        return {
            "case_id": self.case_id,
            "epoch": self.epoch,
            "client_msg_id": self.client_msg_id,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }


class Outbox:
    """See the module docstring. ``session`` and ``keys`` may be None for the pure
    bookkeeping (tests); :meth:`send` and transmission need both."""

    def __init__(
        self,
        session: Supervisor | None,
        keys: KeyManager | None,
        identity: crypto.Identity,
        account_id: str,
        *,
        on_stored: Callable[[Outgoing, f.MsgAck], None],
        next_order: NextOrder | None = None,
    ) -> None:
        self._next_order = next_order
        self._session = session
        self._keys = keys
        self._identity = identity
        self._account_id = account_id
        self._on_stored = on_stored
        self._pending: dict[str, Outgoing] = {}  # client_msg_id -> entry, in send order

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, client_msg_id: object) -> bool:
        return client_msg_id in self._pending

    def pending(self) -> list[Outgoing]:
        """The unacked entries, in send order."""
        return list(self._pending.values())

    # -- sending -----------------------------------------------------------------------

    async def send(self, case_id: str, text: str) -> Sent:
        """Encrypt, sign and send ``text``; return once the hub has stored it."""
        session, keys = self._session, self._keys
        assert session is not None and keys is not None
        session.check_running()
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters")
        epoch, key = await keys.send_epoch(case_id)
        assert self._next_order is not None
        out = self.seal(case_id, epoch, key, text, order=await self._next_order(case_id))
        session.check_running()
        self.add(out)
        if session.ready.is_set() and session.link is not None:
            self._transmit(out, session.link, session.generation)
        # Shielded: a caller that gives up waiting does not unsend the message.
        return await asyncio.shield(out.future)

    def seal(
        self,
        case_id: str,
        epoch: int,
        key: bytes,
        text: str,
        *,
        order: Order = (0, bytes(32), 1),
    ) -> Outgoing:
        """A new entry: ``text`` signed and encrypted under the epoch key, fresh id.
        ``order``: (prev_seq, prev_hash, n); the default is a case's first message."""
        cmid = secrets.token_urlsafe(16)
        ts = now_ms()
        prev_seq, prev_hash, n = order
        envelope = crypto.Envelope(
            body=text, ts=ts, client_msg_id=cmid, prev_seq=prev_seq, prev_hash=prev_hash, n=n
        )
        nonce, ciphertext = crypto.encrypt_message(
            key,
            self._identity,
            case_id=case_id,
            epoch=epoch,
            sender_id=self._account_id,
            envelope=envelope,
        )
        return Outgoing(
            case_id=case_id,
            epoch=epoch,
            client_msg_id=cmid,
            nonce=nonce,
            ciphertext=ciphertext,
            body=text,
            ts=ts,
            envelope=envelope,
            future=asyncio.get_running_loop().create_future(),
        )

    def resend(self, link: Link, generation: int) -> None:
        """Transmit every entry not yet sent on this link (after a reconnect)."""
        for out in self.due(generation):
            self._spawn_delivery(out, link, generation)

    # -- bookkeeping (no I/O) ----------------------------------------------------------

    def add(self, out: Outgoing) -> None:
        self._pending[out.client_msg_id] = out

    def due(self, generation: int) -> list[Outgoing]:
        """Entries to transmit on link ``generation``, in send order, marked as sent on
        it: each entry goes out at most once per link."""
        due = [out for out in self._pending.values() if out.generation != generation]
        for out in due:
            out.generation = generation
        return due

    def settle(self, out: Outgoing, ack: f.MsgAck) -> Sent | None:
        """Match ``ack`` to ``out`` and resolve its future. Returns the result, or None if
        the send had already been settled (a second ack for a resent frame) or the ack
        names another message (the send then fails with InvalidFrame)."""
        self._pending.pop(out.client_msg_id, None)
        if out.future.done():
            return None
        if ack.client_msg_id != out.client_msg_id or ack.case_id != out.case_id:
            out.future.set_exception(pe.InvalidFrame("ack names another message"))
            out.future.exception()  # mark retrieved: the caller may have stopped waiting
            return None
        sent = Sent(
            case_id=ack.case_id,
            client_msg_id=ack.client_msg_id,
            seq=ack.seq,
            chain_hash=ack.chain_hash,
            duplicate=ack.duplicate,
        )
        out.future.set_result(sent)
        return sent

    def fail(self, out: Outgoing, exc: BaseException) -> None:
        """The hub refused this send for good: drop it and raise ``exc`` to the sender."""
        self._pending.pop(out.client_msg_id, None)
        if not out.future.done():
            out.future.set_exception(exc)
            out.future.exception()  # mark retrieved: the caller may have stopped waiting

    def fail_all(self, exc: BaseException) -> None:
        """The client stopped: every pending send fails with ``exc``."""
        for out in self._pending.values():
            if not out.future.done():
                out.future.set_exception(exc)
                out.future.exception()  # mark retrieved: the caller may be gone
        self._pending.clear()

    # -- transmission ------------------------------------------------------------------

    def _transmit(self, out: Outgoing, link: Link, generation: int) -> None:
        if out.generation == generation:
            return  # already on this link
        out.generation = generation
        self._spawn_delivery(out, link, generation)

    def _spawn_delivery(self, out: Outgoing, link: Link, generation: int) -> None:
        assert self._session is not None
        self._session.spawn(self._deliver(out, link, generation))

    async def _deliver(self, out: Outgoing, link: Link, generation: int) -> None:
        assert self._session is not None
        try:
            ack = expect(await link.request(f.MsgSend, **out.frame_fields()), f.MsgAck)
        except LinkClosed:
            return  # stays in the outbox: resent after the next reconnect
        except (pe.RateLimited, pe.Unavailable):
            # Not stored: try again shortly on this link, or after the reconnect that a
            # shutting-down server is about to force.
            await asyncio.sleep(0.5 + random.random())
            if self._session.generation == generation and not link.closed:
                out.generation = 0
                self._transmit(out, link, generation)
            return
        except pe.ProtocolError as exc:
            self.fail(out, exc)
            return
        if self.settle(out, ack) is not None:
            self._on_stored(out, ack)
