"""Who is calling a use case, and the narrow way back to them.

A handler (``chat_server/handlers``) never sees a connection. It gets the hub's
services, a frozen context and the decoded frame, and answers with a frame (or
``None``) or one of the two outcomes below, which change the connection's protocol
state. Whoever runs the handler (the session, or a test with a recording peer) applies
the outcome through :class:`protocol.session.SessionMachine`.

* :class:`Peer` is all a use case may do to a connection: queue a frame for it (``push``),
  close it with a code and reason, and name it (``session_id``). The session registry
  holds peers, not sessions; ``chat_server/session.py`` implements the protocol.
* :class:`Guest` is the context before authentication: the peer and the nonce a
  ``hello`` was answered with (``None`` before that).
* :class:`Caller` is the context after authentication: the account the connection
  speaks for and what use cases need to know about it. It is made once, by ``auth``.
* :class:`Challenged` (from ``hello``) and :class:`SignedIn` (from ``auth``) are the
  outcomes that move the state machine; every other handler returns its reply frame.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import msgspec

from protocol import frames as f
from storage.records import Role

__all__ = ["Caller", "Challenged", "Guest", "Peer", "SignedIn"]


class Peer(Protocol):
    """One live connection, as use cases and the registry see it. ``push`` never blocks."""

    @property
    def session_id(self) -> str: ...

    def push(self, frame: msgspec.Struct) -> None:
        """Queue ``frame`` for the peer (a slow consumer is closed, never waited for)."""

    def push_raw(self, data: bytes) -> None:
        """Queue an already encoded frame (one encoding shared by a fan-out)."""

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued so far (idempotent)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Guest:
    """A connection that has not authenticated (yet)."""

    peer: Peer
    #: The nonce ``hello`` was answered with; ``auth`` must sign it. None before hello.
    challenge: bytes | None
    #: The client's address, as the per-address limits count it (``guard.py``).
    ip: str = ""

    @property
    def session_id(self) -> str:
        return self.peer.session_id


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated connection: the account it speaks for, made once by ``auth``."""

    peer: Peer
    session_id: str
    account_id: str
    role: Role
    #: The account's Ed25519 key: commitments, consents and requests it signs verify here.
    sign_pk: bytes
    #: Hash of the session token the connection authenticated with (``logout`` revokes it).
    token_hash: bytes
    #: When that token expires (ms since the epoch): the session ends then (4002).
    #: None: never (use-case tests that make a Caller by hand).
    token_expires: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Challenged:
    """``hello``'s outcome: send ``reply``; ``auth`` must sign ``reply.nonce``."""

    reply: f.Challenge


@dataclasses.dataclass(frozen=True, slots=True)
class SignedIn:
    """``auth``'s outcome: the connection now speaks for ``caller`` (``welcome`` was sent,
    and the peer attached to the registry, by the use case itself: both must precede the
    matching it runs)."""

    caller: Caller
