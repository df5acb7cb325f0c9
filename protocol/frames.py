"""Wire frames: one frozen msgspec struct per frame type, split by direction.

Every frame is a JSON object with ``"v": 2`` (PROTOCOL_VERSION) and a ``"type"`` tag.
Requests from the client carry an ``id``; the server answers each one with exactly one
frame carrying the same ``id`` (a result or an ``error``). Server events (``msg.new``...)
carry no ``id``.
Bytes travel as standard base64 (RFC 4648 section 4, with padding). Unknown fields, wrong
types and out-of-range values are rejected at decode time, so an invalid frame cannot be
constructed from the wire.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from . import PROTOCOL_VERSION
from .limits import (
    MAX_CAPSULE_SUBSETS,
    MAX_CIPHERTEXT_BYTES,
    MAX_ESCROW_OFFICERS,
    MAX_ID_CHARS,
    MAX_PREFS_BYTES,
    MAX_SYNC_BATCH,
)

__all__ = [
    "AccountAttest",
    "AuthRequest",
    "Capsule",
    "CapsuleLayer",
    "CaseAssigned",
    "CaseCapsule",
    "CaseClose",
    "CaseClosed",
    "CaseInfo",
    "CaseKeyDeposit",
    "CaseKeyNew",
    "CaseKeyShare",
    "CaseKeys",
    "CaseKeysResult",
    "CaseList",
    "CaseListResult",
    "CaseOpen",
    "CaseOpened",
    "CaseQueue",
    "Challenge",
    "ClientFrame",
    "ConsentAccept",
    "CounselorCert",
    "DirectoryEntry",
    "DirectoryGet",
    "DirectoryResult",
    "DisputeCreated",
    "DisputeInfo",
    "DisputeList",
    "DisputeListResult",
    "DisputeRequest",
    "DisputeUpdated",
    "EpochKey",
    "ErrorFrame",
    "EscrowOfficer",
    "EscrowPolicy",
    "Hello",
    "KeySeal",
    "LegalSigner",
    "Login",
    "LoginResult",
    "Logout",
    "MessageRecord",
    "MsgAck",
    "MsgNew",
    "MsgSend",
    "Ok",
    "Ping",
    "PolicyGet",
    "PolicyResult",
    "Pong",
    "PrefsGet",
    "PrefsPut",
    "PrefsResult",
    "Prelogin",
    "PreloginResult",
    "QueueInfo",
    "Receipt",
    "ReceiptNew",
    "Register",
    "Registered",
    "ServerFrame",
    "SignedEscrowPolicy",
    "SignedReceipt",
    "Sync",
    "SyncResult",
    "Typing",
    "TypingNew",
    "Welcome",
    "case_participants",
]

# -- value types -------------------------------------------------------------
# Patterns end in \Z, not $: Python's $ also matches before a trailing newline, which
# would let "alice\n" through as a handle distinct from (but looking like) "alice".

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
Handle = Annotated[str, Meta(min_length=3, max_length=32, pattern=r"^[a-z0-9][a-z0-9_.-]*\Z")]
Token = Annotated[str, Meta(min_length=1, max_length=128)]
Key32 = Annotated[bytes, Meta(min_length=32, max_length=32)]
Sig = Annotated[bytes, Meta(min_length=64, max_length=64)]
Nonce = Annotated[bytes, Meta(min_length=24, max_length=24)]
Salt = Annotated[bytes, Meta(min_length=16, max_length=16)]
#: nonce (24) + SecretBox(Ed25519 seed 32 || X25519 secret 32) (16 + 64)
WrappedKeys = Annotated[bytes, Meta(min_length=104, max_length=104)]
#: SealedBox of a 32-byte key: ephemeral pk (32) + MAC (16) + 32
SealedKey = Annotated[bytes, Meta(min_length=80, max_length=80)]
#: What an epoch key is escrowed under: a policy fingerprint, or "none" (docs/PROTOCOL.md 12.7).
EscrowBinding = Annotated[str, Meta(pattern=r"^(none|[0-9a-f]{4}( [0-9a-f]{4}){9})\Z")]
Ciphertext = Annotated[bytes, Meta(min_length=17, max_length=MAX_CIPHERTEXT_BYTES)]
Seq = Annotated[int, Meta(ge=0, le=2**53)]
Epoch = Annotated[int, Meta(ge=1, le=2**31)]
Topic = Annotated[str, Meta(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_-]*\Z")]
Language = Annotated[
    str, Meta(min_length=2, max_length=8, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)?\Z")
]
Opslimit = Annotated[int, Meta(ge=1, le=64)]
Memlimit = Annotated[int, Meta(ge=8192, le=1024 * 1024 * 1024)]
Millis = Annotated[int, Meta(ge=0, le=2**53)]
Role = Literal["client", "counselor"]
CaseState = Literal["waiting", "assigned", "closed"]
ReceiptKind = Literal["delivered", "read"]
#: An encrypted preferences blob: nonce (24) || XChaCha20-Poly1305 (tag 16 + JSON).
PrefsBlob = Annotated[bytes, Meta(min_length=24 + 16 + 1, max_length=MAX_PREFS_BYTES)]
PrefsVersion = Annotated[int, Meta(ge=0, le=2**53)]


# Struct options are spelled out (not splatted from a dict), and frozen=True is repeated on
# every subclass, so that mypy's dataclass_transform support sees them (msgspec itself
# inherits them anyway).
class _Frame(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", kw_only=True
):
    v: int = PROTOCOL_VERSION


class _Request(_Frame, frozen=True):
    id: Id


# -- nested values -------------------------------------------------------------


class KeySeal(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    account_id: Id
    sealed: SealedKey


class CaseInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    case_id: Id
    client_id: Id
    counselor_id: Id | None
    state: CaseState
    topic: Topic
    language: Language
    epoch: Annotated[int, Meta(ge=0)]
    last_seq: Seq
    created_at: Millis


class QueueInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a waiting case stands: its place among the cases waiting for a counselor
    who speaks its language (1: next), and who is online for it right now."""

    position: Annotated[int, Meta(ge=1)]
    #: Online counselors who speak the case's language.
    counselors_online: Annotated[int, Meta(ge=0)]
    #: Of those, the ones who list the case's topic among their specialties.
    specialists_online: Annotated[int, Meta(ge=0)]


def case_participants(client_id: str, counselor_id: str | None) -> tuple[str, ...]:
    """The accounts taking part in a case: its client, and its counselor once assigned.

    The one definition of "participant": who may read a case, receive its events, appear
    in its dispute bundle. Once a counselor is assigned it never changes.
    """
    return (client_id,) if counselor_id is None else (client_id, counselor_id)


class EpochKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    epoch: Epoch
    creator_id: Id
    commitment: Key32
    commitment_sig: Sig
    #: The escrow policy fingerprint the creator bound the key to, or "none" (§12.7).
    escrow: EscrowBinding
    sealed: SealedKey
    #: The accounts the hub holds a seal of this key for (a hint, not evidence: the
    #: creator uses it to see which epochs still lack a seal for a newly assigned
    #: counselor; a hub that lies about it only delays or repeats a ``case.key.share``).
    sealed_for: Annotated[list[Id], Meta(max_length=8)] = []


class CounselorCert(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The organisation key's statement "this account, with these keys, is one of our
    counselors" (protocol/crypto.py ``counselor_cert_transcript``). Made offline by
    ``chat-escrow certify``; the hub stores and serves it but cannot make one."""

    account_id: Id
    handle: Handle
    sign_pk: Key32
    box_pk: Key32
    issued_at: Millis
    org_sign_pk: Key32
    sig: Sig


class DirectoryEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An account's public keys. ``box_sig`` is the identity key's signature over the box
    key (None only for a version-1 account that has not logged in since); ``cert`` is
    its counselor certificate, if the organisation issued one."""

    account_id: Id
    handle: Handle
    role: Role
    sign_pk: Key32
    box_pk: Key32
    box_sig: Sig | None = None
    cert: CounselorCert | None = None


class SignedReceipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A participant's signed statement "I have seen the case up to ``up_to_seq``, whose
    chain hash is ``chain_hash``" (protocol/crypto.py ``receipt_transcript``)."""

    account_id: Id
    kind: ReceiptKind
    up_to_seq: Seq
    chain_hash: Key32
    sig: Sig


class MessageRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A stored message: the one shape it has from the hub's database to the client's
    processor and a dispute bundle. ``chain_hash`` covers every field but ``server_ts``
    and the previous record's hash (protocol/chain.py)."""

    case_id: Id
    seq: Seq
    epoch: Epoch
    sender_id: Id
    client_msg_id: Id
    nonce: Nonce
    ciphertext: Ciphertext
    chain_hash: Key32
    server_ts: Millis


# -- escrow (docs/DISPUTES.md): the policy, capsules, dispute requests -----------------

OfficerName = Annotated[str, Meta(min_length=1, max_length=64)]
#: "xxxx xxxx ..." as crypto.fingerprint prints it (BLAKE2b-160, 10 groups of four hex).
Fingerprint = Annotated[str, Meta(pattern=r"^[0-9a-f]{4}( [0-9a-f]{4}){9}\Z")]
#: One layer per officer of a subset: SealedBox adds 48 bytes to the binding, which is
#: 71 bytes plus the case id (protocol/escrow.py).
CapsuleBytes = Annotated[
    bytes, Meta(min_length=71 + 1 + 48, max_length=71 + MAX_ID_CHARS + 48 * MAX_ESCROW_OFFICERS)
]
#: A dispute reason sealed to one officer (SealedBox of at most 2000 bytes of UTF-8).
SealedReason = Annotated[bytes, Meta(min_length=49, max_length=2048)]
DisputeState = Literal["pending", "approved", "exported"]


class EscrowOfficer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: OfficerName
    box_pk: Key32
    sign_pk: Key32


class LegalSigner(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A key that may sign legal orders (kept offline, like officer keys)."""

    name: OfficerName
    sign_pk: Key32


class EscrowPolicy(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    version: Annotated[int, Meta(ge=1, le=2**31)]
    officers: Annotated[list[EscrowOfficer], Meta(min_length=1, max_length=MAX_ESCROW_OFFICERS)]
    threshold: Annotated[int, Meta(ge=1, le=MAX_ESCROW_OFFICERS)]
    not_before: Millis
    not_after: Millis
    org_sign_pk: Key32
    #: Who may sign a legal order (none: no legal-order path). Omitted on the wire when
    #: empty, and then not part of the signed bytes, so older policies keep their
    #: fingerprints.
    legal_signers: Annotated[list[LegalSigner], Meta(max_length=MAX_ESCROW_OFFICERS)] = []


class SignedEscrowPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    policy: EscrowPolicy
    sig: Sig


class CapsuleLayer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """K for one k-subset of officers (indices ascending), one seal layer per officer."""

    officers: Annotated[
        list[Annotated[int, Meta(ge=0, le=MAX_ESCROW_OFFICERS - 1)]],
        Meta(min_length=1, max_length=MAX_ESCROW_OFFICERS),
    ]
    sealed: CapsuleBytes


class Capsule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    policy_fingerprint: Fingerprint
    subsets: Annotated[list[CapsuleLayer], Meta(min_length=1, max_length=MAX_CAPSULE_SUBSETS)]


class DisputeInfo(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    request_id: Id
    case_id: Id
    state: DisputeState
    created_at: Millis
    #: "legal": a legal order on the client's case (not filed by them); omitted when
    #: "client", so a client's own requests look as before on the wire.
    kind: Literal["client", "legal"] = "client"
    #: The order's reference (legal orders only).
    legal_order: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


# -- client -> server ----------------------------------------------------------


class Hello(_Request, tag="hello", frozen=True):
    client: Annotated[str, Meta(max_length=64)] = ""


class Register(_Request, tag="register", frozen=True):
    handle: Handle
    salt: Salt
    opslimit: Opslimit
    memlimit: Memlimit
    auth_key: Key32
    sign_pk: Key32
    box_pk: Key32
    box_sig: Sig
    wrapped_keys: WrappedKeys
    invite: Annotated[str, Meta(min_length=8, max_length=64)] | None = None


class Prelogin(_Request, tag="prelogin", frozen=True):
    handle: Handle


class Login(_Request, tag="login", frozen=True):
    handle: Handle
    auth_key: Key32


class AuthRequest(_Request, tag="auth", frozen=True):
    account_id: Id
    token: Token
    sig: Sig


class Logout(_Request, tag="logout", frozen=True):
    #: True: end every session of the account, on every node, and revoke all its tokens.
    all: bool = False


class DirectoryGet(_Request, tag="directory.get", frozen=True):
    account_ids: Annotated[list[Id], Meta(min_length=1, max_length=50)]


class CaseOpen(_Request, tag="case.open", frozen=True):
    topic: Topic
    language: Language


class CaseList(_Request, tag="case.list", frozen=True):
    pass


class CaseKeyDeposit(_Request, tag="case.key", frozen=True):
    case_id: Id
    epoch: Epoch
    commitment: Key32
    commitment_sig: Sig
    #: The installed escrow policy's fingerprint, or "none" without one; signed with
    #: the commitment, and it must be what the hub has installed.
    escrow: EscrowBinding
    seals: Annotated[list[KeySeal], Meta(min_length=1, max_length=8)]
    #: The creator's escrow capsule of K under the installed policy; omitted on the wire
    #: when unset, and required by a hub that has an escrow policy installed.
    capsules: Annotated[list[Capsule], Meta(max_length=1)] | msgspec.UnsetType = msgspec.UNSET


class CaseKeys(_Request, tag="case.keys", frozen=True):
    case_id: Id


class CaseKeyShare(_Request, tag="case.key.share", frozen=True):
    """The case's client adds the seal of an epoch key it made (while the case was
    waiting) for the counselor assigned since, after verifying that counselor."""

    case_id: Id
    epoch: Epoch
    seal: KeySeal


class MsgSend(_Request, tag="msg.send", frozen=True):
    case_id: Id
    epoch: Epoch
    client_msg_id: Id
    nonce: Nonce
    ciphertext: Ciphertext


class Sync(_Request, tag="sync", frozen=True):
    case_id: Id
    after_seq: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_SYNC_BATCH)] = MAX_SYNC_BATCH


class Receipt(_Request, tag="receipt", frozen=True):
    case_id: Id
    kind: ReceiptKind
    up_to_seq: Seq
    chain_hash: Key32
    sig: Sig


class Typing(_Request, tag="typing", frozen=True):
    case_id: Id
    active: bool


class CaseClose(_Request, tag="case.close", frozen=True):
    case_id: Id


class Ping(_Request, tag="ping", frozen=True):
    pass


class CaseCapsule(_Request, tag="case.capsule", frozen=True):
    """The other participant's own capsule of an epoch key it did not create."""

    case_id: Id
    epoch: Epoch
    capsule: Capsule


class PolicyGet(_Request, tag="policy.get", frozen=True):
    pass


class ConsentAccept(_Request, tag="consent", frozen=True):
    terms_version: Annotated[int, Meta(ge=1, le=2**31)]
    policy_fingerprint: Fingerprint
    sig: Sig


class DisputeRequest(_Request, tag="dispute.request", frozen=True):
    case_id: Id
    timestamp: Millis
    policy_fingerprint: Fingerprint
    reason_ct: Annotated[list[SealedReason], Meta(min_length=1, max_length=MAX_ESCROW_OFFICERS)]
    sig: Sig
    scope: Literal["all"] = "all"


class DisputeList(_Request, tag="dispute.list", frozen=True):
    pass


class AccountAttest(_Request, tag="account.attest", frozen=True):
    """A version-1 account's first signature over its own box key (answered ``ok``)."""

    box_sig: Sig


class PrefsGet(_Request, tag="prefs.get", frozen=True):
    pass


class PrefsPut(_Request, tag="prefs.put", frozen=True):
    """Replace the account's encrypted preferences blob if the stored version is still
    ``version`` (compare-and-swap; ``conflict`` otherwise). Answered by ``prefs.result``
    with the new version."""

    blob: PrefsBlob
    version: PrefsVersion


ClientFrame = (
    Hello
    | Register
    | Prelogin
    | Login
    | AuthRequest
    | Logout
    | DirectoryGet
    | CaseOpen
    | CaseList
    | CaseKeyDeposit
    | CaseKeys
    | CaseKeyShare
    | MsgSend
    | Sync
    | Receipt
    | Typing
    | CaseClose
    | Ping
    | CaseCapsule
    | PolicyGet
    | ConsentAccept
    | DisputeRequest
    | DisputeList
    | AccountAttest
    | PrefsGet
    | PrefsPut
)

# -- server -> client: results (carry the request id) -----------------------------


class Challenge(_Request, tag="challenge", frozen=True):
    nonce: Key32
    server_key: Key32
    min_opslimit: Opslimit
    min_memlimit: Memlimit


class Registered(_Request, tag="registered", frozen=True):
    account_id: Id
    role: Role


class PreloginResult(_Request, tag="prelogin.result", frozen=True):
    salt: Salt
    opslimit: Opslimit
    memlimit: Memlimit


class LoginResult(_Request, tag="login.result", frozen=True):
    account_id: Id
    role: Role
    sign_pk: Key32
    box_pk: Key32
    box_sig: Sig | None
    cert: CounselorCert | None
    wrapped_keys: WrappedKeys
    token: Token
    token_expires: Millis


class Welcome(_Request, tag="welcome", frozen=True):
    account_id: Id
    handle: Handle
    role: Role
    session_id: Id
    cases: list[CaseInfo]


class DirectoryResult(_Request, tag="directory.result", frozen=True):
    entries: list[DirectoryEntry]


class CaseOpened(_Request, tag="case.opened", frozen=True):
    case: CaseInfo
    #: Where a waiting case stands (None once it is assigned).
    queue: QueueInfo | None = None


class CaseListResult(_Request, tag="case.list.result", frozen=True):
    cases: list[CaseInfo]


class CaseKeysResult(_Request, tag="case.keys.result", frozen=True):
    case_id: Id
    keys: list[EpochKey]


class MsgAck(_Request, tag="msg.ack", frozen=True):
    case_id: Id
    client_msg_id: Id
    seq: Seq
    chain_hash: Key32
    duplicate: bool = False


class SyncResult(_Request, tag="sync.result", frozen=True):
    case_id: Id
    messages: list[MessageRecord]
    last_seq: Seq
    has_more: bool
    #: Each participant's latest signed receipt of each kind.
    receipts: list[SignedReceipt]


class PolicyResult(_Request, tag="policy.result", frozen=True):
    """The installed escrow policy (None: the hub runs without escrow), the terms
    version that goes with it, and whether this account accepted both."""

    policy: SignedEscrowPolicy | None
    terms_version: Annotated[int, Meta(ge=0, le=2**31)]
    consented: bool


class DisputeCreated(_Request, tag="dispute.created", frozen=True):
    dispute: DisputeInfo


class DisputeListResult(_Request, tag="dispute.list.result", frozen=True):
    disputes: list[DisputeInfo]


class PrefsResult(_Request, tag="prefs.result", frozen=True):
    """The stored preferences blob (None: never written) and its version (0: never)."""

    blob: PrefsBlob | None
    version: PrefsVersion


class Ok(_Request, tag="ok", frozen=True):
    pass


class Pong(_Request, tag="pong", frozen=True):
    pass


class ErrorFrame(_Frame, tag="error", frozen=True):
    code: Annotated[str, Meta(max_length=64)]
    message: Annotated[str, Meta(max_length=256)]
    id: Id | None = None
    #: ``rate_limited`` / ``busy``: milliseconds until the request may succeed.
    retry_after_ms: Annotated[int, Meta(ge=0, le=86_400_000)] | None = None


# -- server -> client: events (no id) ----------------------------------------------


class MsgNew(_Frame, tag="msg.new", frozen=True):
    message: MessageRecord


class CaseAssigned(_Frame, tag="case.assigned", frozen=True):
    case: CaseInfo


class CaseKeyNew(_Frame, tag="case.key.new", frozen=True):
    case_id: Id
    epoch: Epoch


class ReceiptNew(_Frame, tag="receipt.new", frozen=True):
    case_id: Id
    account_id: Id
    kind: ReceiptKind
    up_to_seq: Seq
    chain_hash: Key32
    sig: Sig


class TypingNew(_Frame, tag="typing.new", frozen=True):
    case_id: Id
    account_id: Id
    active: bool


class CaseClosed(_Frame, tag="case.closed", frozen=True):
    case_id: Id


class CaseQueue(_Frame, tag="case.queue", frozen=True):
    """A waiting case's place in the queue changed (sent to its client)."""

    case_id: Id
    queue: QueueInfo


class DisputeUpdated(_Frame, tag="dispute.updated", frozen=True):
    dispute: DisputeInfo


ServerFrame = (
    Challenge
    | Registered
    | PreloginResult
    | LoginResult
    | Welcome
    | DirectoryResult
    | CaseOpened
    | CaseListResult
    | CaseKeysResult
    | MsgAck
    | SyncResult
    | Ok
    | Pong
    | ErrorFrame
    | MsgNew
    | CaseAssigned
    | CaseKeyNew
    | ReceiptNew
    | TypingNew
    | CaseClosed
    | CaseQueue
    | PolicyResult
    | DisputeCreated
    | DisputeListResult
    | DisputeUpdated
    | PrefsResult
)
