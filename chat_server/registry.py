"""The session registry: which peers are live, for which account, and delivery to them.

This is the only place that knows where an account's sessions are, so it is the seam
where cross-node fan-out (Redis pub/sub, DESIGN.md "Scale-out") will plug in: a
``publish`` or ``deliver`` for an account with no local session would then also go to
the node holding one. Its surface is kept to what that needs:

* :meth:`connect` / :meth:`attach` / :meth:`detach`: a connection opened, authenticated
  as an account, ended. Past the per-account limit the oldest session is closed (4009).
* :meth:`online_counselors`: the accounts matching may assign cases to.
* :meth:`publish`: one event to every live session of some accounts, encoded once.
* :meth:`deliver`: the end of a ``msg.send``, called by the group committer right after
  the commit that decided it, in commit order: ``msg.ack`` (or the error) to the sending
  peer, then ``msg.new`` to every other live session of the case's participants.
* :meth:`close_all`: shutdown.

Everything here is synchronous and never waits: a peer's ``push`` queues or closes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec

from protocol import codec
from protocol import frames as f
from protocol.errors import CloseCode, ErrorCode, ProtocolError, RemoteError
from storage.records import AccountRecord, AlreadyStored

from .context import Peer
from .logs import log_event

__all__ = ["SessionRegistry"]


class _Online:
    """The live sessions of one account, oldest first, and the account they speak for."""

    __slots__ = ("account", "peers")

    def __init__(self, account: AccountRecord) -> None:
        self.account = account
        self.peers: list[Peer] = []


class SessionRegistry:
    """Live peers by account. See the module docstring."""

    __slots__ = ("_accounts", "_all", "_of", "max_sessions_per_account")

    def __init__(self, max_sessions_per_account: int) -> None:
        self.max_sessions_per_account = max_sessions_per_account
        self._all: set[Peer] = set()
        self._of: dict[Peer, str] = {}
        self._accounts: dict[str, _Online] = {}

    # -- membership ------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        """A connection opened (closed by :meth:`close_all` even if it never attaches)."""
        self._all.add(peer)

    def attach(self, peer: Peer, account: AccountRecord) -> None:
        """``peer`` authenticated as ``account``; evict the oldest session past the limit."""
        online = self._accounts.get(account.id)
        if online is None:
            online = self._accounts[account.id] = _Online(account)
        online.peers.append(peer)
        self._of[peer] = account.id
        while len(online.peers) > self.max_sessions_per_account:
            oldest = online.peers.pop(0)
            del self._of[oldest]
            oldest.close(CloseCode.REPLACED, "replaced by a newer session")

    def detach(self, peer: Peer) -> None:
        """The connection ended (idempotent)."""
        self._all.discard(peer)
        account_id = self._of.pop(peer, None)
        if account_id is None:
            return
        online = self._accounts[account_id]
        online.peers.remove(peer)
        if not online.peers:
            del self._accounts[account_id]

    def online_counselors(self) -> list[AccountRecord]:
        """Counselor accounts with at least one live session."""
        return [o.account for o in self._accounts.values() if o.account.role == "counselor"]

    # -- delivery --------------------------------------------------------------------

    def publish(
        self,
        account_ids: Iterable[str | None],
        frame: msgspec.Struct,
        *,
        exclude: Peer | None = None,
    ) -> None:
        """Queue ``frame`` (encoded once) to every live session of ``account_ids``."""
        data = codec.encode(frame)
        accounts = self._accounts
        for account_id in set(account_ids):
            online = accounts.get(account_id) if account_id is not None else None
            if online is None:
                continue
            for peer in online.peers:
                if peer is not exclude:
                    peer.push_raw(data)

    def deliver(
        self,
        sender: Peer,
        request_id: str,
        participants: tuple[str, ...],
        outcome: f.MessageRecord | AlreadyStored | ProtocolError,
    ) -> None:
        """Finish one ``msg.send`` after its commit: ack (or error) to ``sender``, then the
        new message to the participants' other sessions. Never raises: if it fails, the
        sender is closed with 1011 so it resends (idempotently) after reconnecting."""
        try:
            if type(outcome) is f.MessageRecord:
                record, new = outcome, True
            elif isinstance(outcome, AlreadyStored):
                # An identical retry: delivered (or reachable by sync) when first stored.
                record, new = outcome.message, False
            else:
                if isinstance(outcome, RemoteError):
                    code, message = outcome.code.value, outcome.message
                else:  # the transaction failed: nothing was stored
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

    def close_all(self, code: int, reason: str) -> None:
        """Close every connection, attached or not (shutdown)."""
        for peer in list(self._all):
            peer.close(code, reason)
