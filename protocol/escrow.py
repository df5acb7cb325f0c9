"""Sealed escrow: the signed k-of-n officer policy, key capsules, consent, dispute
requests and officer approvals, as pure functions over bytes (PyNaCl / libsodium only).

Byte layouts (docs/PROTOCOL.md, "Escrow and disputes"); every transcript is
length-prefixed with :func:`protocol.crypto.lp`, integers as 8-byte big-endian:

* policy bytes = lp("chat.escrow.policy.v1", u64(version), u64(threshold),
  u64(not_before), u64(not_after), org_sign_pk, u64(n), lp(name, box_pk, sign_pk) per
  officer[, u64(m), lp(name, sign_pk) per legal signer]) -- the bracketed part only when
  the policy names legal signers. The org Ed25519 key signs them; the policy
  fingerprint is ``crypto.fingerprint(policy bytes)``.
* legal order (:class:`LegalOrder`) = Ed25519 by a legal signer of the policy over
  lp("chat.legalorder.v1", case_id, order_ref, u64(issued_at), policy_fp,
  u64(signer_index), signer_sign_pk).
* capsule: for every k-subset of officers (indices ascending), K sealed in nested
  SealedBoxes, outermost to the subset's first officer, innermost to its last; the
  innermost plaintext is lp("chat.capsule.v1", case_id, u64(epoch), K), so a capsule
  cannot be replayed into another case or epoch, and the opened K must match the
  creator-signed key commitment.
* consent = Ed25519 over lp("chat.consent.v1", account_id, u64(terms_version), policy_fp).
* client request = Ed25519 over lp("chat.dispute.v1", case_id, scope, u64(timestamp),
  policy_fp, lp(reason seal per officer)).
* client evidence (:class:`ClientEvidence`, in every client request the hub stores):
  the client's consent signature for the request's policy and, when the client made an
  epoch key of the case, that key's commitment signature; :func:`verify_dispute`
  accepts the request only if one key verifies the request, the consent and the
  commitment, so a request signed by any other key (one the hub made) is refused.
* request digest = BLAKE2b-256 over every field of the stored request (see
  :func:`request_digest`; version 2 adds the evidence and the legal order); an approval
  is Ed25519 over lp("chat.approval.v2", request_id, digest, policy_fp,
  u64(officer_index), officer_sign_pk, u64(audit_seq), audit_hash): the officer also signs
  the audit-log head they were shown (:class:`AuditHead`), an anchor outside the
  database against which a later truncation of the log is detected.

Nothing here opens anything: opening a capsule or a sealed reason takes officer private
keys and lives in :mod:`protocol.opening`, which the hub may not import; the server
handles only public keys, signatures and sealed bytes.
"""

from __future__ import annotations

import hmac
import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
import nacl.exceptions
import nacl.hash
from msgspec import Meta
from nacl.encoding import RawEncoder
from nacl.public import PublicKey, SealedBox
from nacl.signing import SigningKey

from . import crypto
from .crypto import lp, u64
from .errors import CryptoError
from .frames import (
    Capsule,
    CapsuleLayer,
    Epoch,
    EscrowOfficer,
    EscrowPolicy,
    Fingerprint,
    Id,
    Key32,
    Millis,
    Sig,
    SignedEscrowPolicy,
)
from .limits import MAX_CAPSULE_SUBSETS, MAX_ESCROW_OFFICERS

__all__ = [
    "MAX_REASON_BYTES",
    "Approval",
    "AuditHead",
    "ClientEvidence",
    "DisputeDocument",
    "EscrowError",
    "ForeignMaterial",
    "InsufficientKeys",
    "LegalOrder",
    "PolicyError",
    "RequestView",
    "approval_transcript",
    "check_capsule_shape",
    "check_policy",
    "consent_transcript",
    "dispute_transcript",
    "legal_order_transcript",
    "make_approval",
    "make_capsule",
    "make_legal_order",
    "policy_bytes",
    "policy_fingerprint",
    "request_digest",
    "seal_reasons",
    "sign_consent",
    "sign_dispute",
    "sign_policy",
    "subsets",
    "verify_approval",
    "verify_consent",
    "verify_dispute",
    "verify_legal_order",
    "verify_policy",
]

#: Longest dispute reason (UTF-8 bytes) before sealing.
MAX_REASON_BYTES = 2000


class EscrowError(CryptoError):
    """Escrow material does not verify."""


class PolicyError(EscrowError):
    """A policy is malformed, unsigned by the pinned organisation key, or not in force."""


class ForeignMaterial(EscrowError):
    """A capsule, request or approval belongs to another case, request or policy."""


class InsufficientKeys(EscrowError):
    """The officer keys given are not a threshold subset of the policy's officers."""


# -- the policy ------------------------------------------------------------------------


def policy_bytes(policy: EscrowPolicy) -> bytes:
    """The canonical bytes the organisation signs and the fingerprint is taken over."""
    return lp(
        b"chat.escrow.policy.v1",
        u64(policy.version),
        u64(policy.threshold),
        u64(policy.not_before),
        u64(policy.not_after),
        policy.org_sign_pk,
        u64(len(policy.officers)),
        *(lp(o.name.encode(), o.box_pk, o.sign_pk) for o in policy.officers),
        *_legal_signer_bytes(policy),
    )


def _legal_signer_bytes(policy: EscrowPolicy) -> tuple[bytes, ...]:
    if not policy.legal_signers:
        return ()
    return (
        u64(len(policy.legal_signers)),
        *(lp(s.name.encode(), s.sign_pk) for s in policy.legal_signers),
    )


def policy_fingerprint(policy: EscrowPolicy) -> str:
    return crypto.fingerprint(policy_bytes(policy))


def check_policy(policy: EscrowPolicy) -> None:
    """Structural rules the wire schema cannot express; PolicyError if broken."""
    n = len(policy.officers)
    if not 1 <= policy.threshold <= n:
        raise PolicyError(f"threshold {policy.threshold} is not between 1 and {n}")
    if n > MAX_ESCROW_OFFICERS or math.comb(n, policy.threshold) > MAX_CAPSULE_SUBSETS:
        raise PolicyError("too many officer subsets for one capsule")
    legal = [s.sign_pk for s in policy.legal_signers]
    keys = [o.box_pk for o in policy.officers] + [o.sign_pk for o in policy.officers] + legal
    if len(set(keys)) != len(keys):
        raise PolicyError("officer and legal signer keys must all be distinct")
    if len({o.name for o in policy.officers}) != n:
        raise PolicyError("officer names must be distinct")
    if len({s.name for s in policy.legal_signers}) != len(legal):
        raise PolicyError("legal signer names must be distinct")
    if policy.not_after <= policy.not_before:
        raise PolicyError("policy validity window is empty")


def sign_policy(org_key: SigningKey, policy: EscrowPolicy) -> SignedEscrowPolicy:
    check_policy(policy)
    if bytes(org_key.verify_key) != policy.org_sign_pk:
        raise PolicyError("the policy names another organisation key")
    sig = bytes(org_key.sign(policy_bytes(policy)).signature)
    return SignedEscrowPolicy(policy=policy, sig=sig)


def verify_policy(
    signed: SignedEscrowPolicy, org_fingerprint: str | None, now_ms: int | None = None
) -> str:
    """Check shape, the org signature, the pinned org key and (with ``now_ms``) the
    validity window; return the policy fingerprint. PolicyError on any failure."""
    policy = signed.policy
    check_policy(policy)
    try:
        crypto.verify_signature(policy.org_sign_pk, policy_bytes(policy), signed.sig)
    except CryptoError:
        raise PolicyError("policy signature does not verify") from None
    if org_fingerprint is not None and not hmac.compare_digest(
        _normal_fp(crypto.fingerprint(policy.org_sign_pk)), _normal_fp(org_fingerprint)
    ):
        raise PolicyError("policy is not signed by the pinned organisation key")
    if now_ms is not None and not policy.not_before <= now_ms <= policy.not_after:
        raise PolicyError("policy is not in force now")
    return policy_fingerprint(policy)


def _normal_fp(text: str) -> str:
    return "".join(text.split()).lower()


# -- capsules --------------------------------------------------------------------------


def subsets(policy: EscrowPolicy) -> list[tuple[int, ...]]:
    """Every k-subset of officer indices, in lexicographic order."""
    return list(itertools.combinations(range(len(policy.officers)), policy.threshold))


def _binding(case_id: str, epoch: int, case_key: bytes) -> bytes:
    return lp(b"chat.capsule.v1", case_id.encode(), u64(epoch), case_key)


def make_capsule(policy: EscrowPolicy, case_id: str, epoch: int, case_key: bytes) -> Capsule:
    """Seal ``case_key`` for every k-subset of the policy's officers."""
    check_policy(policy)
    inner = _binding(case_id, epoch, case_key)
    layers = []
    for subset in subsets(policy):
        sealed = inner
        for index in reversed(subset):  # innermost: the subset's last officer
            sealed = bytes(SealedBox(PublicKey(policy.officers[index].box_pk)).encrypt(sealed))
        layers.append(CapsuleLayer(officers=list(subset), sealed=sealed))
    return Capsule(policy_fingerprint=policy_fingerprint(policy), subsets=layers)


def check_capsule_shape(capsule: Capsule, policy: EscrowPolicy) -> None:
    """What a hub can check without keys: the right policy, every subset exactly once,
    each layer the size k seals make. ForeignMaterial otherwise."""
    if capsule.policy_fingerprint != policy_fingerprint(policy):
        raise ForeignMaterial("capsule is for another escrow policy")
    want = subsets(policy)
    got = [tuple(layer.officers) for layer in capsule.subsets]
    if got != want:
        raise ForeignMaterial("capsule does not hold every officer subset exactly once")
    size = len(_binding("", 0, bytes(crypto.KEY_BYTES)))
    for layer in capsule.subsets:
        # The binding's length depends on the case id, so only a lower bound is fixed.
        if len(layer.sealed) < size + 48 * policy.threshold:
            raise ForeignMaterial("capsule layer is too short")


# -- consent ---------------------------------------------------------------------------


def consent_transcript(account_id: str, terms_version: int, policy_fp: str) -> bytes:
    return lp(b"chat.consent.v1", account_id.encode(), u64(terms_version), policy_fp.encode())


def sign_consent(
    identity: crypto.Identity, account_id: str, terms_version: int, policy_fp: str
) -> bytes:
    return identity.sign(consent_transcript(account_id, terms_version, policy_fp))


def verify_consent(
    sign_pk: bytes, account_id: str, terms_version: int, policy_fp: str, sig: bytes
) -> None:
    crypto.verify_signature(sign_pk, consent_transcript(account_id, terms_version, policy_fp), sig)


# -- dispute requests ------------------------------------------------------------------


def seal_reasons(policy: EscrowPolicy, reason: str) -> list[bytes]:
    """The reason sealed to each officer's box key, in officer order."""
    data = reason.encode("utf-8")
    if not data or len(data) > MAX_REASON_BYTES:
        raise ValueError(f"a reason is 1 to {MAX_REASON_BYTES} bytes of UTF-8")
    return [bytes(SealedBox(PublicKey(o.box_pk)).encrypt(data)) for o in policy.officers]


def dispute_transcript(
    case_id: str, scope: str, timestamp: int, policy_fp: str, reason_ct: Sequence[bytes]
) -> bytes:
    return lp(
        b"chat.dispute.v1",
        case_id.encode(),
        scope.encode(),
        u64(timestamp),
        policy_fp.encode(),
        lp(*reason_ct),
    )


def sign_dispute(
    identity: crypto.Identity,
    case_id: str,
    scope: str,
    timestamp: int,
    policy_fp: str,
    reason_ct: Sequence[bytes],
) -> bytes:
    return identity.sign(dispute_transcript(case_id, scope, timestamp, policy_fp, reason_ct))


def verify_dispute(
    doc: DisputeDocument, client_sign_pk: bytes | None = None, *, policy: EscrowPolicy | None = None
) -> None:
    """A client request must be signed by the key that also signed the client's consent
    to the request's policy and (if present) the case-key commitment in its evidence;
    with ``client_sign_pk`` (the case client's key, known from elsewhere, e.g. a
    bundle's participants) that key must be it. A legal-order request must carry an
    order signed by a legal signer named in ``policy`` (the request's policy), for this
    case and policy. EscrowError otherwise."""
    if doc.kind == "legal":
        _verify_legal_request(doc, policy)
        return
    if doc.requester_id is None or doc.requester_sign_pk is None or doc.sig is None:
        raise EscrowError("a client request must be signed by the client")
    evidence = doc.evidence
    if evidence is None:
        raise EscrowError("the request carries no evidence that its key is the client's")
    key = doc.requester_sign_pk
    if client_sign_pk is not None and not hmac.compare_digest(key, client_sign_pk):
        raise EscrowError("the request is not signed by the case client's key")
    try:
        crypto.verify_signature(
            key,
            dispute_transcript(
                doc.case_id, doc.scope, doc.timestamp, doc.policy_fingerprint, doc.reason_ct
            ),
            doc.sig,
        )
    except CryptoError:
        raise EscrowError("the request is not signed by the requesting client") from None
    try:
        verify_consent(
            key,
            doc.requester_id,
            evidence.terms_version,
            doc.policy_fingerprint,
            evidence.consent_sig,
        )
    except CryptoError:
        raise EscrowError(
            "the request's key did not sign the client's consent to its policy"
        ) from None
    if evidence.commitment is None:
        return
    try:
        crypto.verify_commitment(
            key,
            doc.case_id,
            evidence.epoch,
            evidence.commitment,
            evidence.commitment_sig,
            escrow=doc.policy_fingerprint,
        )
    except CryptoError:
        raise EscrowError(
            "the request's key did not sign the case-key commitment in its evidence"
        ) from None


def _verify_legal_request(doc: DisputeDocument, policy: EscrowPolicy | None) -> None:
    if doc.sig is not None or doc.requester_id is not None or doc.evidence is not None:
        raise EscrowError("a legal-order request carries no client signature")
    order = doc.order
    if order is None or not doc.legal_order:
        raise EscrowError("a legal-order request must carry the signed order")
    if (
        order.order_ref != doc.legal_order
        or order.case_id != doc.case_id
        or order.policy_fingerprint != doc.policy_fingerprint
    ):
        raise EscrowError("the signed order is for another case, reference or policy")
    if policy is None:
        raise EscrowError("a legal order is checked against its policy's legal signers")
    verify_legal_order(order, policy)


# -- legal orders ----------------------------------------------------------------------


class LegalOrder(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A legal order to open one case, signed offline by a legal signer the policy names
    (``chat-escrow legal-order``); ``chat-server disputes open-legal`` records it."""

    version: Literal[1] = 1
    case_id: Id
    order_ref: Annotated[str, Meta(min_length=1, max_length=200)]
    issued_at: Millis
    policy_fingerprint: Fingerprint
    signer_index: Annotated[int, Meta(ge=0, le=MAX_ESCROW_OFFICERS - 1)]
    signer_sign_pk: Key32
    sig: Sig


def legal_order_transcript(
    case_id: str,
    order_ref: str,
    issued_at: int,
    policy_fp: str,
    signer_index: int,
    signer_sign_pk: bytes,
) -> bytes:
    return lp(
        b"chat.legalorder.v1",
        case_id.encode(),
        order_ref.encode(),
        u64(issued_at),
        policy_fp.encode(),
        u64(signer_index),
        signer_sign_pk,
    )


def make_legal_order(
    signer: SigningKey, policy: EscrowPolicy, case_id: str, order_ref: str, issued_at: int
) -> LegalOrder:
    """Sign an order; ForeignMaterial if ``signer`` is not a legal signer of ``policy``."""
    sign_pk = bytes(signer.verify_key)
    index = next((i for i, s in enumerate(policy.legal_signers) if s.sign_pk == sign_pk), None)
    if index is None:
        raise ForeignMaterial("this key is not a legal signer of the escrow policy")
    fp = policy_fingerprint(policy)
    sig = signer.sign(
        legal_order_transcript(case_id, order_ref, issued_at, fp, index, sign_pk)
    ).signature
    return LegalOrder(
        case_id=case_id,
        order_ref=order_ref,
        issued_at=issued_at,
        policy_fingerprint=fp,
        signer_index=index,
        signer_sign_pk=sign_pk,
        sig=bytes(sig),
    )


def verify_legal_order(order: LegalOrder, policy: EscrowPolicy) -> None:
    """ForeignMaterial unless ``order`` is signed by the legal signer of ``policy`` it
    names, under exactly this policy."""
    if order.policy_fingerprint != policy_fingerprint(policy):
        raise ForeignMaterial("the order is for another escrow policy")
    if order.signer_index >= len(policy.legal_signers):
        raise ForeignMaterial("the order names no legal signer of the policy")
    signer = policy.legal_signers[order.signer_index]
    if signer.sign_pk != order.signer_sign_pk:
        raise ForeignMaterial("the order is signed by a key that is not the legal signer's")
    try:
        crypto.verify_signature(
            signer.sign_pk,
            legal_order_transcript(
                order.case_id,
                order.order_ref,
                order.issued_at,
                order.policy_fingerprint,
                order.signer_index,
                order.signer_sign_pk,
            ),
            order.sig,
        )
    except CryptoError:
        raise ForeignMaterial("the order's signature does not verify") from None


class ClientEvidence(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What ties a client request's key to the case's client, all signed by that client
    (the hub copies it from its records when the request is filed): the consent to the
    request's policy, and the commitment of an epoch key the client made in the case
    (None when the counselor made every key so far)."""

    terms_version: Annotated[int, Meta(ge=1, le=2**31)]
    consent_sig: Sig
    epoch: Epoch = 1
    commitment: Key32 | None = None
    commitment_sig: Sig = bytes(64)


class DisputeDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A stored dispute request, as officers see it (``disputes show --json``) and as
    a bundle carries it. Officers approve its :func:`request_digest`."""

    #: 2: client requests carry :class:`ClientEvidence` (version 1 ones are refused).
    version: Literal[1, 2] = 2
    request_id: Id
    kind: Literal["client", "legal"]
    case_id: Id
    scope: Literal["all"] = "all"
    timestamp: Millis
    policy_fingerprint: Fingerprint
    reason_ct: list[bytes]
    requester_id: Id | None = None
    requester_sign_pk: Key32 | None = None
    sig: Sig | None = None
    legal_order: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    created_at: Millis
    evidence: ClientEvidence | None = None
    #: Legal orders: the signed order (its ``order_ref`` is ``legal_order``).
    order: LegalOrder | None = None


def request_digest(doc: DisputeDocument) -> bytes:
    data = lp(
        b"chat.request.v1",
        u64(doc.version),
        doc.request_id.encode(),
        doc.kind.encode(),
        doc.case_id.encode(),
        doc.scope.encode(),
        u64(doc.timestamp),
        doc.policy_fingerprint.encode(),
        lp(*doc.reason_ct),
        (doc.requester_id or "").encode(),
        doc.requester_sign_pk or b"",
        doc.sig or b"",
        (doc.legal_order or "").encode(),
        u64(doc.created_at),
        *_evidence_bytes(doc),
    )
    return nacl.hash.blake2b(data, digest_size=32, person=b"chat-request-dg1", encoder=RawEncoder)


def _evidence_bytes(doc: DisputeDocument) -> tuple[bytes, ...]:
    if doc.version == 1:
        return ()
    e = doc.evidence
    o = doc.order
    evidence = (
        b""
        if e is None
        else lp(
            u64(e.terms_version), e.consent_sig, u64(e.epoch), e.commitment or b"", e.commitment_sig
        )
    )
    order = (
        b""
        if o is None
        else lp(
            o.case_id.encode(),
            o.order_ref.encode(),
            u64(o.issued_at),
            o.policy_fingerprint.encode(),
            u64(o.signer_index),
            o.signer_sign_pk,
            o.sig,
        )
    )
    return (evidence, order)


# -- approvals -------------------------------------------------------------------------


class AuditHead(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The newest row of the hub's audit log: its seq (0: empty) and hash."""

    seq: Annotated[int, Meta(ge=0, le=2**53)]
    hash: Key32


class Approval(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One officer's signed approval of one request under one policy, anchoring the
    audit head the officer was shown."""

    version: Literal[2] = 2
    request_id: Id
    request_digest: Key32
    policy_fingerprint: Fingerprint
    officer_index: Annotated[int, Meta(ge=0, le=MAX_ESCROW_OFFICERS - 1)]
    officer_sign_pk: Key32
    audit_head: AuditHead
    approved_at: Millis
    sig: Sig


def approval_transcript(
    request_id: str,
    digest: bytes,
    policy_fp: str,
    officer_index: int,
    officer_sign_pk: bytes,
    audit_head: AuditHead,
) -> bytes:
    return lp(
        b"chat.approval.v2",
        request_id.encode(),
        digest,
        policy_fp.encode(),
        u64(officer_index),
        officer_sign_pk,
        u64(audit_head.seq),
        audit_head.hash,
    )


def make_approval(
    officer_sign_key: SigningKey,
    doc: DisputeDocument,
    policy: EscrowPolicy,
    approved_at: int,
    audit_head: AuditHead,
) -> Approval:
    """Sign an approval; ForeignMaterial if this key is not an officer of ``policy``
    or the request is under another policy."""
    fp = policy_fingerprint(policy)
    if doc.policy_fingerprint != fp:
        raise ForeignMaterial("the request was made under another escrow policy")
    sign_pk = bytes(officer_sign_key.verify_key)
    index = next((i for i, o in enumerate(policy.officers) if o.sign_pk == sign_pk), None)
    if index is None:
        raise ForeignMaterial("this key is not an officer of the escrow policy")
    digest = request_digest(doc)
    sig = bytes(
        officer_sign_key.sign(
            approval_transcript(doc.request_id, digest, fp, index, sign_pk, audit_head)
        ).signature
    )
    return Approval(
        request_id=doc.request_id,
        request_digest=digest,
        policy_fingerprint=fp,
        officer_index=index,
        officer_sign_pk=sign_pk,
        audit_head=audit_head,
        approved_at=approved_at,
        sig=sig,
    )


def verify_approval(approval: Approval, doc: DisputeDocument, policy: EscrowPolicy) -> None:
    """ForeignMaterial unless ``approval`` is a valid signature, by the officer it names,
    over exactly this request under exactly this policy."""
    fp = policy_fingerprint(policy)
    if approval.request_id != doc.request_id or approval.policy_fingerprint != fp:
        raise ForeignMaterial("approval is for another request or policy")
    if not hmac.compare_digest(approval.request_digest, request_digest(doc)):
        raise ForeignMaterial("approval is for another version of the request")
    if approval.officer_index >= len(policy.officers):
        raise ForeignMaterial("approval names no officer of the policy")
    officer: EscrowOfficer = policy.officers[approval.officer_index]
    if officer.sign_pk != approval.officer_sign_pk:
        raise ForeignMaterial("approval is signed by a key that is not the officer's")
    try:
        crypto.verify_signature(
            officer.sign_pk,
            approval_transcript(
                approval.request_id,
                approval.request_digest,
                fp,
                approval.officer_index,
                approval.officer_sign_pk,
                approval.audit_head,
            ),
            approval.sig,
        )
    except CryptoError:
        raise ForeignMaterial("approval signature does not verify") from None


class RequestView(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What ``chat-server disputes show ID --json`` prints and ``chat-escrow approve``
    reads: the request, the policy it is under, its state and the approvals so far."""

    format: Literal["counsel-chat/dispute-request"] = "counsel-chat/dispute-request"
    request: DisputeDocument
    policy: SignedEscrowPolicy
    state: Literal["pending", "approved", "exported"]
    approvals: list[Approval]
    #: The hub's audit-log head when this was shown: what an approval signs.
    audit_head: AuditHead
    #: Client requests: the requester's box key and its signature by
    #: ``request.requester_sign_pk`` (crypto.verify_box_key), so ``chat-escrow approve``
    #: can show the account fingerprint the client itself sees (crypto.fingerprint_v2,
    #: over both keys). Null for legal orders and for a version-1 account (no box_sig).
    requester_box_pk: Key32 | None = None
    requester_box_sig: Sig | None = None
