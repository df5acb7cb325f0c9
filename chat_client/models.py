"""Value objects the SDK hands to applications: messages, send results and events.

All are frozen dataclasses. ``Message.body`` is ``None`` whenever ``verified`` is False:
an application never gets unverified text to display. Timestamps are integer
milliseconds since the Unix epoch, as the protocol states them
(:func:`protocol.clock.now_ms`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from protocol.crypto import Envelope
from protocol.frames import CaseInfo, DirectoryEntry

__all__ = [
    "WAITING_FOR_KEY",
    "CaseAssignedEvent",
    "CaseClosedEvent",
    "CaseInfo",
    "ConnectionEvent",
    "ConnectionState",
    "DirectoryEntry",
    "DisputeEvent",
    "Event",
    "KeyPendingEvent",
    "Message",
    "MessageEvent",
    "QueueEvent",
    "ReceiptEvent",
    "Safety",
    "Sent",
    "TypingEvent",
    "WarningEvent",
    "WarningKind",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One decrypted (or rejected) message of a case.

    ``verified`` is True only if the ciphertext decrypted under the case key, the sender's
    Ed25519 signature verified, and the server's hash chain link matched. Otherwise
    ``body`` is None and ``error`` says what failed. ``ts`` is the sender's timestamp
    (ms) when verified, else the server's.
    """

    case_id: str
    seq: int
    epoch: int
    sender_id: str
    client_msg_id: str
    body: str | None
    ts: int
    verified: bool
    error: str | None = None
    chain_hash: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    #: The verified envelope (None unless verified): its prev_seq, prev_hash and n are
    #: the order the sender signed (chat_client/ordering.py checks them).
    envelope: Envelope | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """The server's acknowledgement of ``send``: the message is durably stored at ``seq``."""

    case_id: str
    client_msg_id: str
    seq: int
    chain_hash: bytes
    duplicate: bool


@dataclasses.dataclass(frozen=True, slots=True)
class MessageEvent:
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class CaseAssignedEvent:
    case: CaseInfo


@dataclasses.dataclass(frozen=True, slots=True)
class TypingEvent:
    case_id: str
    account_id: str
    active: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiptEvent:
    case_id: str
    account_id: str
    kind: Literal["delivered", "read"]
    up_to_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class CaseClosedEvent:
    case_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class QueueEvent:
    """A waiting case of ours moved in the queue: ``position`` among the cases waiting
    for its language (1: next), and how many counselors for it are online (as the hub
    says: it decides matching, so this is its word, like the case's state)."""

    case_id: str
    position: int
    counselors_online: int
    specialists_online: int


ConnectionState = Literal["connected", "disconnected", "reconnecting"]


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionEvent:
    state: ConnectionState
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DisputeEvent:
    """A dispute request on one of our cases appeared or changed state (pending ->
    approved -> exported): one we filed, or a legal order (``kind`` "legal")."""

    request_id: str
    case_id: str
    state: Literal["pending", "approved", "exported"]
    kind: Literal["client", "legal"] = "client"
    legal_order: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Safety:
    """What ``chat-client safety`` shows: the contact's current (signed) keys, the
    safety number both sides compute, and the pinned fingerprint when the keys changed."""

    entry: DirectoryEntry
    safety_number: str
    pinned_fingerprint: str | None = None

    @property
    def changed(self) -> bool:
        return self.pinned_fingerprint is not None


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPendingEvent:
    """The counselor's side: messages of the case from ``seq`` on are under an epoch key
    (``epoch``) its client has not shared with us yet (the client wrote while the case
    was waiting). They are delivered, in order, once the key arrives; until then the
    case says "waiting for the client's key" (:data:`WAITING_FOR_KEY`)."""

    case_id: str
    epoch: int
    seq: int


#: What a message under a key not shared with us yet says instead of its text.
WAITING_FOR_KEY = "waiting for the client's key"

WarningKind = Literal["no_org", "dropped", "reordered", "replayed", "rewritten", "key_not_shared"]


@dataclasses.dataclass(frozen=True, slots=True)
class WarningEvent:
    """Something the user must be told plainly: no organisation key pinned (the hub
    alone vouches for the counselor), or the case history contradicts what the
    participants signed or what this client saw before (``seq`` names the record;
    kinds as protocol/transcript.py's OrderProblem, plus "rewritten" for a chain hash
    that changed at a seq seen before)."""

    case_id: str
    kind: WarningKind
    text: str
    seq: int | None = None


Event = (
    MessageEvent
    | CaseAssignedEvent
    | TypingEvent
    | ReceiptEvent
    | CaseClosedEvent
    | ConnectionEvent
    | DisputeEvent
    | WarningEvent
    | QueueEvent
    | KeyPendingEvent
)
