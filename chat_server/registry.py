"""The session registry: which peers are live, for which account, and delivery to them,
on this node and, through the event bus, on every other node.

This is the one place that knows where an account's sessions are, so it is the seam of
cross-node fan-out (DESIGN.md "Scale-out", docs/DECISIONS.md 24 and 32):

* :meth:`connect` / :meth:`attach` / :meth:`detach`: a connection opened, authenticated
  as an account, ended. ``attach`` records the session in presence, which decides the
  per-account session cap across all nodes: the oldest sessions beyond it are closed
  with 4009, here or, through an ``Evict`` on the bus, on the node that holds them. A
  counselor's first session on this node makes it available for matching
  (``presence.counselor_online``), its last one unavailable.
* :meth:`publish`: one event to every live session of some accounts, encoded once:
  pushed to this node's sessions at once and published on the bus (``Deliver``) for the
  sessions elsewhere. Typing, receipts, case and dispute events all go this way.
* :meth:`deliver`: the end of a ``msg.send``, called by the group committer right after
  the commit that decided it, in commit order: ``msg.ack`` (or the error) to the sending
  peer, then ``msg.new`` to every other live session of the case's participants.
* :meth:`sign_out`: ``logout{all}``: every session of the account closes (4004), here
  and, through a ``SignOut`` on the bus, on every other node.
* :meth:`on_event`: what another node published: ``Deliver`` is pushed to the local
  sessions of its accounts, ``Evict`` closes the named local sessions, ``SignOut`` all
  of an account's.
* :meth:`push_local`: frames for this node's sessions only (the catch-up after a bus gap).
* :meth:`close_all`: shutdown.

Delivery never waits: a peer's ``push`` queues or closes, and a bus publication is
queued or dropped (counted). A dropped publication is reported to ``on_publish_lost``
while the bus is connected (queue full); while it is not, the bus's reconnection makes
the cluster catch up instead (``catchup.py``). Only ``attach`` and ``detach`` await,
for presence, which never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import msgspec

from protocol import codec
from protocol import frames as f
from protocol.errors import CloseCode, ErrorCode, ProtocolError, RemoteError
from storage.records import AccountRecord, AlreadyStored

from .bus import Deliver, Envelope, EventBus, Evict, LocalBus, SignOut
from .context import Peer
from .logs import log_event
from .metrics import HubMetrics
from .presence import LocalPresence, Presence, SessionRef

__all__ = ["SessionRegistry"]

_REPLACED = "replaced by a newer session"
_SIGNED_OUT = "signed out on every device: sign in again"


class _Online:
    """The live sessions of one account on this node, oldest first."""

    __slots__ = ("account", "peers")

    def __init__(self, account: AccountRecord) -> None:
        self.account = account
        self.peers: list[Peer] = []


class _FrameType(msgspec.Struct):
    type: str = ""


_frame_type = msgspec.json.Decoder(_FrameType)


def _tag(frame: msgspec.Struct) -> str:
    return str(frame.__struct_config__.tag)


class SessionRegistry:
    """Live peers by account, on this node and (through the bus) on the others."""

    __slots__ = (
        "_accounts",
        "_all",
        "_bus",
        "_by_session",
        "_metrics",
        "_of",
        "_presence",
        "max_sessions_per_account",
        "node_id",
        "on_publish_lost",
    )

    def __init__(
        self,
        max_sessions_per_account: int,
        *,
        node_id: str = "local",
        bus: EventBus | None = None,
        presence: Presence | None = None,
        metrics: HubMetrics | None = None,
    ) -> None:
        """Without ``bus`` and ``presence``: a single node (a never-started ``LocalBus``
        and a ``LocalPresence``), as unit tests use it."""
        self.max_sessions_per_account = max_sessions_per_account
        self.node_id = node_id
        self._bus: EventBus = bus if bus is not None else LocalBus(node_id)
        self._presence: Presence = presence if presence is not None else LocalPresence(node_id)
        self._metrics = metrics if metrics is not None else HubMetrics(node_id, process=False)
        self._all: set[Peer] = set()
        self._of: dict[Peer, str] = {}
        self._by_session: dict[str, Peer] = {}
        self._accounts: dict[str, _Online] = {}
        #: Called when a publication was dropped although the bus is connected (its
        #: queue was full): the other nodes missed it and must catch up.
        self.on_publish_lost: Callable[[], None] | None = None

    # -- membership ------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        """A connection opened (closed by :meth:`close_all` even if it never attaches)."""
        self._all.add(peer)

    async def attach(self, peer: Peer, account: AccountRecord) -> None:
        """``peer`` authenticated as ``account``: it receives the account's events from
        now on. Past the per-account cap (counted over all nodes) the oldest sessions
        are closed (4009); a counselor's first session here makes it matchable."""
        online = self._accounts.get(account.id)
        if online is None:
            online = self._accounts[account.id] = _Online(account)
        online.peers.append(peer)
        self._of[peer] = account.id
        self._by_session[peer.session_id] = peer
        self._metrics.sessions.inc()
        self._metrics.sessions_open.inc()
        first_here = len(online.peers) == 1
        place = await self._presence.session_opened(
            account.id, peer.session_id, self.max_sessions_per_account
        )
        self._evict(account.id, place.evict)
        if account.role == "counselor" and first_here and account.id in self._accounts:
            await self._presence.counselor_online(account.id)

    async def detach(self, peer: Peer) -> None:
        """The connection ended (idempotent); a counselor's last session here makes it
        unavailable for matching."""
        self._all.discard(peer)
        account_id = self._of.pop(peer, None)
        if account_id is None:
            return
        self._by_session.pop(peer.session_id, None)
        self._metrics.sessions_open.dec()
        online = self._accounts[account_id]
        online.peers.remove(peer)
        last_here = not online.peers
        if last_here:
            del self._accounts[account_id]
        await self._presence.session_closed(account_id, peer.session_id)
        if last_here and online.account.role == "counselor" and account_id not in self._accounts:
            await self._presence.counselor_offline(account_id)

    def _evict(self, account_id: str, refs: Iterable[SessionRef]) -> None:
        """Close the sessions presence chose to stay within the cap, wherever they are."""
        elsewhere: dict[str, list[str]] = {}
        for ref in refs:
            if ref.node == self.node_id:
                self._close_local(ref.session_id)
            else:
                elsewhere.setdefault(ref.node, []).append(ref.session_id)
        for node, session_ids in elsewhere.items():
            self._bus.publish(Evict(account_id, tuple(session_ids)), nodes=[node])

    def _close_local(self, session_id: str) -> None:
        # A closing peer drops whatever is pushed to it; its session's end detaches it.
        peer = self._by_session.get(session_id)
        if peer is not None:
            peer.close(CloseCode.REPLACED, _REPLACED)

    def sign_out(self, account_id: str, *, exclude: Peer | None = None) -> None:
        """Close every session of the account on every node with 4004 (``exclude``: the
        session that asked, which closes normally after its answer)."""
        self._sign_out_local(account_id, exclude)
        self._bus.publish(SignOut(account_id))

    def _sign_out_local(self, account_id: str, exclude: Peer | None = None) -> None:
        online = self._accounts.get(account_id)
        for peer in list(online.peers) if online is not None else []:
            if peer is not exclude:
                peer.close(CloseCode.SIGNED_OUT, _SIGNED_OUT)

    def local_accounts(self) -> list[str]:
        """Accounts with at least one live session on this node."""
        return list(self._accounts)

    def sessions_of(self, account_id: str) -> int:
        """Live sessions of ``account_id`` on this node."""
        online = self._accounts.get(account_id)
        return len(online.peers) if online is not None else 0

    # -- delivery --------------------------------------------------------------------

    def publish(
        self,
        account_ids: Iterable[str | None],
        frame: msgspec.Struct,
        *,
        exclude: Peer | None = None,
    ) -> None:
        """Queue ``frame`` (encoded once) to every live session of ``account_ids``, here
        and on the other nodes."""
        accounts = tuple({a for a in account_ids if a is not None})
        data = codec.encode(frame)
        pushed = self._push(accounts, data, exclude)
        if pushed:
            self._metrics.frame_out(_tag(frame), pushed)
        if accounts and not self._bus.publish(Deliver(accounts, (data,))):
            self._lost()

    def push_local(self, account_ids: Iterable[str], frame: msgspec.Struct) -> None:
        """Queue ``frame`` to this node's sessions of ``account_ids`` only."""
        pushed = self._push(set(account_ids), codec.encode(frame), None)
        if pushed:
            self._metrics.frame_out(_tag(frame), pushed)

    def _push(self, account_ids: Iterable[str], data: bytes, exclude: Peer | None) -> int:
        accounts = self._accounts
        pushed = 0
        for account_id in account_ids:
            online = accounts.get(account_id)
            if online is None:
                continue
            for peer in online.peers:
                if peer is not exclude:
                    peer.push_raw(data)
                    pushed += 1
        return pushed

    def _lost(self) -> None:
        if self._bus.connected and self.on_publish_lost is not None:
            self.on_publish_lost()

    def deliver(
        self,
        sender: Peer,
        request_id: str,
        participants: tuple[str, ...],
        outcome: f.MessageRecord | AlreadyStored | ProtocolError,
    ) -> None:
        """Finish one ``msg.send`` after its commit: ack (or error) to ``sender``, then the
        new message to the participants' other sessions, on every node. Never raises: if
        it fails, the sender is closed with 1011 so it resends (idempotently) after
        reconnecting."""
        try:
            if type(outcome) is f.MessageRecord:
                record, new = outcome, True
            elif isinstance(outcome, AlreadyStored):
                # An identical retry: delivered (or reachable by sync) when first stored.
                record, new = outcome.message, False
            else:
                if isinstance(outcome, RemoteError):
                    code, message = outcome.code.value, outcome.message
                else:  # the transaction failed: nothing was acked
                    code, message = ErrorCode.UNAVAILABLE.value, "not stored; retry"
                sender.push(f.ErrorFrame(code=code, message=message, id=request_id))
                return
            sender.push(
                f.MsgAck(
                    id=request_id,
                    case_id=record.case_id,
                    client_msg_id=record.client_msg_id,
                    seq=record.seq,
                    chain_hash=record.chain_hash,
                    duplicate=not new,
                )
            )
            if new:
                self.publish(participants, f.MsgNew(message=record), exclude=sender)
        except Exception:
            log_event("msg.fan_out_failed", logging.ERROR, exc=True, session=sender.session_id)
            sender.close(CloseCode.INTERNAL, "internal error")

    # -- events from other nodes -----------------------------------------------------

    def on_event(self, envelope: Envelope) -> None:
        """An event another node published (the bus's ``on_event``; never blocks)."""
        event = envelope.event
        if isinstance(event, Deliver):
            for data in event.frames:
                pushed = self._push(event.accounts, data, None)
                if pushed:
                    self._metrics.frame_out(_frame_type.decode(data).type, pushed)
        elif isinstance(event, Evict):
            for session_id in event.session_ids:
                self._close_local(session_id)
        elif isinstance(event, SignOut):
            self._sign_out_local(event.account_id)

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection, attached or not (shutdown)."""
        for peer in list(self._all):
            peer.close(code, reason)
