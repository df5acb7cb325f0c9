"""Plain records the repositories return and accept.

Repositories never hand out ORM objects: a record is a frozen snapshot of committed
state, safe to pass between tasks and to keep after the transaction that read it has
ended. All timestamps are integer milliseconds since the Unix epoch; all keys,
hashes and ciphertexts are ``bytes``. Values the database stores encrypted at rest
(counselor display names, case topics) appear here in clear: decryption happens in
the repository, so callers never see the at-rest form.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, TypeVar, get_args

from protocol.chain import GENESIS
from protocol.errors import RemoteError
from protocol.frames import CounselorCert, MessageRecord, case_participants

__all__ = [
    "GENESIS",
    "AccountRecord",
    "AlreadyStored",
    "AppendResult",
    "CaseActivity",
    "CaseRecord",
    "CaseState",
    "EpochKeyRecord",
    "InviteRecord",
    "MessageRecord",
    "NewMessage",
    "ReceiptKind",
    "Role",
    "as_case_state",
    "as_receipt_kind",
    "as_role",
    "join_list",
    "split_list",
]

Role = Literal["client", "counselor"]
CaseState = Literal["waiting", "assigned", "closed"]
ReceiptKind = Literal["delivered", "read"]

_L = TypeVar("_L", bound=str)


def _literal(value: str, allowed: tuple[_L, ...], what: str) -> _L:
    # The CHECK constraints keep bad values out of the database; this turns the str a
    # driver hands back into the Literal type without an unchecked cast.
    for a in allowed:
        if value == a:
            return a
    raise ValueError(f"unexpected {what} {value!r} in the database")


_ROLES: tuple[Role, ...] = get_args(Role)
_STATES: tuple[CaseState, ...] = get_args(CaseState)
_KINDS: tuple[ReceiptKind, ...] = get_args(ReceiptKind)


def as_role(value: str) -> Role:
    """``value`` as a :data:`Role`; ValueError if it is not one."""
    return _literal(value, _ROLES, "role")


def as_case_state(value: str) -> CaseState:
    """``value`` as a :data:`CaseState`; ValueError if it is not one."""
    return _literal(value, _STATES, "case state")


def as_receipt_kind(value: str) -> ReceiptKind:
    """``value`` as a :data:`ReceiptKind`; ValueError if it is not one."""
    return _literal(value, _KINDS, "receipt kind")


def join_list(items: tuple[str, ...]) -> str:
    """Store a tuple of short tokens (languages, topics) as one comma-separated string.

    The protocol's patterns for languages and topics exclude commas, so the encoding
    is unambiguous; anything else is refused rather than silently split differently.
    """
    for item in items:
        if not item or "," in item:
            raise ValueError(f"list item {item!r} is empty or contains a comma")
    return ",".join(items)


def split_list(stored: str) -> tuple[str, ...]:
    """Inverse of :func:`join_list` (the empty string is the empty tuple)."""
    return tuple(stored.split(",")) if stored else ()


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRecord:
    """A registered account. ``auth_hash`` is an Argon2id hash of the client's auth key;
    ``wrapped_keys`` is the identity blob only the account's passphrase can unwrap.
    ``box_sig`` is the identity key's signature over the box key (None: a version-1
    account not yet upgraded); ``cert`` the organisation's counselor certificate."""

    id: str
    handle: str
    role: Role
    salt: bytes
    opslimit: int
    memlimit: int
    auth_hash: str
    sign_pk: bytes
    box_pk: bytes
    wrapped_keys: bytes
    languages: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()
    display_name: str | None = None
    created_at: int = 0
    box_sig: bytes | None = None
    cert: CounselorCert | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InviteRecord:
    """A single-use counselor invite. Only a hash of the code is stored; ``used_by`` is
    the account that consumed it (None while unused)."""

    code_hash: bytes
    role: Role
    display_name: str | None
    languages: tuple[str, ...]
    specialties: tuple[str, ...]
    created_at: int
    used_by: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CaseRecord:
    """One case. ``epoch`` is the newest epoch with a key (0: none yet); ``last_seq``
    and ``chain_head`` describe the newest stored message (0 and GENESIS when none)."""

    id: str
    client_id: str
    counselor_id: str | None
    state: CaseState
    topic: str
    language: str
    epoch: int
    last_seq: int
    chain_head: bytes
    created_at: int
    assigned_at: int | None = None
    closed_at: int | None = None

    @property
    def participants(self) -> tuple[str, ...]:
        """The accounts taking part: the client, and the counselor once assigned."""
        return case_participants(self.client_id, self.counselor_id)


@dataclasses.dataclass(frozen=True, slots=True)
class CaseActivity:
    """What happened to a case since some moment (``CaseRepository.activity_since``):
    the case as it is now, its newest message if that was stored since then, and
    whether the newest epoch's key was deposited since then. Timestamps are the
    writing hub's clock."""

    case: CaseRecord
    last_message: MessageRecord | None
    new_epoch: bool


@dataclasses.dataclass(frozen=True, slots=True)
class EpochKeyRecord:
    """The key deposit of one epoch: the signed commitment and the key sealed to each
    participant (``seals``: account id -> SealedBox of K). Read back per account, a
    record carries only that account's seal."""

    case_id: str
    epoch: int
    creator_id: str
    commitment: bytes
    commitment_sig: bytes
    seals: dict[str, bytes]
    created_at: int
    #: The escrow policy fingerprint the creator signed with the commitment, or "none".
    escrow: str = "none"
    #: Read back per account: every account that holds a seal of this key (so the
    #: creator can tell which epochs still lack one for a newly assigned counselor).
    sealed_for: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class NewMessage:
    """A message submitted for appending, exactly as its sender sent it (ciphertext only).

    Not yet sequenced: it has no ``seq``, chain hash or server time, which the append
    assigns. That is the only difference from :class:`~protocol.frames.MessageRecord`,
    the one shape of a stored message, which the append returns.
    """

    case_id: str
    epoch: int
    sender_id: str
    client_msg_id: str
    nonce: bytes
    ciphertext: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class AlreadyStored:
    """An identical retry of a stored message: nothing was written; ``message`` is the
    original, with its seq, chain hash and server time."""

    message: MessageRecord


#: One slot of :meth:`storage.messages.MessageRepository.append_batch`'s result: the
#: stored message, the original of an identical retry, or why it was refused.
AppendResult = MessageRecord | AlreadyStored | RemoteError
