"""The dispute bundle's format: what ``chat-server disputes export`` writes.

A bundle is one JSON document (bytes as base64) holding everything needed to check a
case's history without the server: the case metadata, both participants' public keys,
the signed escrow policy, the client's signed consent to it, every epoch's key
commitment with its escrow binding (signed by its creator) and all escrow capsules,
every stored message exactly as the hub stored it (the protocol's
:class:`~protocol.frames.MessageRecord`), the server-signed chain head and the server's
public key, the dispute request and the officers' approvals.

This module only describes, encodes and decodes; the hub builds bundles with it. Their
verification, which opens capsules and decrypts messages, is :mod:`protocol.bundle`
(for ``chat-unseal`` only: the hub may not import it).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .escrow import Approval, AuditHead, DisputeDocument, ForeignMaterial
from .frames import (
    Capsule,
    Epoch,
    EscrowBinding,
    Handle,
    Id,
    Key32,
    Language,
    MessageRecord,
    Millis,
    Role,
    Seq,
    Sig,
    SignedEscrowPolicy,
    SignedReceipt,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Bundle",
    "BundleCapsule",
    "BundleCase",
    "BundleConsent",
    "BundleEpoch",
    "BundleParticipant",
    "ChainHead",
    "decode_bundle",
    "encode_bundle",
]

BUNDLE_FORMAT = "counsel-chat/dispute-bundle"
#: 2: messages are the protocol's MessageRecord (version 1 had them without case_id).
#: 3: protocol version 2: participants' box_sig and certificates, signed receipts; epochs
#: carry their signed escrow binding and creation time, and the bundle the client's
#: consent.
BUNDLE_VERSION = 3


class _S(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BundleCase(_S, frozen=True, kw_only=True):
    case_id: Id
    client_id: Id
    counselor_id: Id | None
    state: Literal["waiting", "assigned", "closed"]
    language: Language
    created_at: Millis


class BundleParticipant(_S, frozen=True, kw_only=True):
    account_id: Id
    role: Role
    handle: Handle
    sign_pk: Key32
    box_pk: Key32
    box_sig: Sig | None = None


class BundleCapsule(_S, frozen=True, kw_only=True):
    depositor_id: Id
    capsule: Capsule


class BundleEpoch(_S, frozen=True, kw_only=True):
    epoch: Epoch
    creator_id: Id
    commitment: Key32
    commitment_sig: Sig
    #: The policy fingerprint (or "none") the creator bound the key to, under its signature.
    escrow: EscrowBinding
    #: When the hub stored the key.
    created_at: Millis
    capsules: list[BundleCapsule]


class BundleConsent(_S, frozen=True, kw_only=True):
    """The case client's signed consent to the bundle's policy, as the hub recorded it."""

    terms_version: Annotated[int, Meta(ge=1, le=2**31)]
    sig: Sig
    accepted_at: Millis


class ChainHead(_S, frozen=True, kw_only=True):
    seq: Seq
    hash: Key32
    sig: Sig


class Bundle(_S, frozen=True, kw_only=True):
    format: Literal["counsel-chat/dispute-bundle"] = "counsel-chat/dispute-bundle"
    version: Literal[3] = 3
    exported_at: Millis
    case: BundleCase
    participants: list[BundleParticipant]
    policy: SignedEscrowPolicy
    epochs: list[BundleEpoch]
    #: Every stored message of the case, in seq order, exactly as the hub stored it;
    #: this order is the one chat-unseal checks against the order participants signed.
    messages: list[MessageRecord]
    #: Each participant's latest signed receipt of each kind.
    receipts: list[SignedReceipt]
    chain_head: ChainHead
    server_sign_pk: Key32
    request: DisputeDocument
    approvals: list[Approval]
    #: None: the client never consented to this policy (no epoch may be escrowed).
    client_consent: BundleConsent | None
    #: The hub's audit-log head at export (before the export's own row): an anchor kept
    #: outside the database (``chat-server audit verify --anchor BUNDLE``).
    audit_head: AuditHead


_decoder = msgspec.json.Decoder(Bundle)


def encode_bundle(bundle: Bundle) -> bytes:
    """Indented JSON (a bundle is a document people may open and read)."""
    return msgspec.json.format(msgspec.json.encode(bundle), indent=1) + b"\n"


def decode_bundle(data: bytes) -> Bundle:
    """ForeignMaterial if ``data`` is not a bundle of this format and version."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ForeignMaterial(f"not a dispute bundle: {str(exc)[:160]}") from None
