"""The dispute bundle, as ``chat-unseal`` verifies it, offline. Pure: bytes in, a
verification report out.

The format (what ``chat-server disputes export`` writes) is :mod:`protocol.bundle_format`,
re-exported here for readers. Verifying opens escrow capsules and decrypts messages
(:mod:`protocol.opening`), so the hub, which only writes bundles, may not import this.

:func:`verify_bundle` checks all of it and sorts every finding into one of three kinds,
which ``chat-unseal`` maps to its exit codes (docs/DISPUTES.md):

* **foreign** (exit 12): material that belongs elsewhere or is forged: a policy not
  signed by the pinned organisation key, a request for another case or not signed by
  the case's client (the key that signed its evidence: consent and key commitment), a
  reason that does not open, an approval that does not verify, fewer than k valid
  approvals, a capsule bound to another case or epoch, a key commitment its creator
  did not sign. The authority to open (policy, participants, request, approvals) is
  checked first: if it fails, no capsule is opened and no message decrypted;
* **keys** (exit 11): the officer keys given are not a threshold subset of the policy;
* **tampered** (exit 10): a message that does not decrypt or whose sender signature
  fails, a broken hash chain, a missing, extra or reordered message, a chain head that
  does not match or is not signed by the server, and every contradiction between the
  presented order and the order participants signed (protocol/transcript.py: one
  line per problem naming its seq, kind and sender), a box key its owner did not sign.

Nothing is dropped silently: every message in the bundle gets a verdict, and every
missing seq is named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nacl.public import PrivateKey

from . import crypto
from .bundle_format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    Bundle,
    BundleCapsule,
    BundleCase,
    BundleConsent,
    BundleEpoch,
    BundleParticipant,
    ChainHead,
    decode_bundle,
    encode_bundle,
)
from .chain import verify_chain, verify_head
from .errors import CryptoError
from .escrow import (
    EscrowError,
    ForeignMaterial,
    InsufficientKeys,
    verify_approval,
    verify_consent,
    verify_dispute,
    verify_policy,
)
from .frames import case_participants
from .opening import decrypt_message, open_capsule, open_reason
from .transcript import OrderProblem, check_order, check_receipts

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
    "MessageVerdict",
    "Report",
    "decode_bundle",
    "encode_bundle",
    "verify_bundle",
]


@dataclasses.dataclass
class MessageVerdict:
    """One message of the bundle: the verified text, or why there is none."""

    seq: int
    epoch: int
    sender_id: str
    sender_role: str
    client_msg_id: str
    server_ts: int
    body: str | None = None
    ts: int | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.body is not None and not self.problems


@dataclasses.dataclass
class Report:
    case_id: str
    policy_fingerprint: str = ""
    server_fingerprint: str = ""
    request_kind: str = ""
    request_note: str = ""
    #: The client's reason, opened with the first officer key given (None: legal order).
    reason: str | None = None
    approvals_valid: list[int] = dataclasses.field(default_factory=list)
    keys_used: list[int] = dataclasses.field(default_factory=list)
    messages: list[MessageVerdict] = dataclasses.field(default_factory=list)
    missing_seqs: list[int] = dataclasses.field(default_factory=list)
    order_problems: list[OrderProblem] = dataclasses.field(default_factory=list)
    foreign: list[str] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    tampered: list[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all verified; 12 foreign/forged; 11 wrong or too few keys; 10 tampered."""
        if self.foreign:
            return 12
        if self.keys:
            return 11
        if self.tampered or any(not m.ok for m in self.messages):
            return 10
        return 0


def _fp_equal(a: str, b: str) -> bool:
    return "".join(a.split()).lower() == "".join(b.split()).lower()


def verify_bundle(
    bundle: Bundle,
    officer_keys: Sequence[PrivateKey],
    *,
    org_fingerprint: str,
    server_fingerprint: str | None = None,
) -> Report:
    """Check everything in ``bundle`` with the given officers' box keys (see the
    module docstring for what is checked and how findings are classified).

    The authority to open comes first: the policy under the pinned organisation key,
    the participants, the request and its evidence, k valid approvals. If any of it
    fails (``report.foreign``), no capsule is opened and no message decrypted."""
    case = bundle.case
    report = Report(case_id=case.case_id)
    report.server_fingerprint = crypto.fingerprint(bundle.server_sign_pk)
    policy = bundle.policy.policy
    try:
        report.policy_fingerprint = verify_policy(bundle.policy, org_fingerprint)
    except EscrowError as exc:
        report.foreign.append(f"escrow policy: {exc}")
        return report
    if server_fingerprint is not None and not _fp_equal(
        report.server_fingerprint, server_fingerprint
    ):
        report.foreign.append("the chain head is signed by another server key than pinned")
    participants = _check_participants(bundle, report)
    _check_request(bundle, participants, report)
    _check_approvals(bundle, report)
    escrowed = _check_epochs(bundle, participants, report)
    if report.foreign:
        return report

    # Officer keys -> policy indices; a key of no officer is a wrong key.
    held: dict[int, PrivateKey] = {}
    for key in officer_keys:
        pk = bytes(key.public_key)
        index = next((i for i, o in enumerate(policy.officers) if o.box_pk == pk), None)
        if index is None:
            report.keys.append("a key given is not an officer key of this escrow policy")
        else:
            held[index] = key
    report.keys_used = sorted(held)
    _open_reason(bundle, held, report)
    if report.foreign:
        return report
    epoch_keys = _open_epochs(bundle, escrowed, participants, held, report)
    _check_messages(bundle, participants, epoch_keys, report)
    _check_client_history(bundle, report)
    return report


def _check_client_history(bundle: Bundle, report: Report) -> None:
    """A client request's key must be the key the client wrote with: if the case keys
    opened (some message verified) and the client wrote messages, at least one of them
    must verify under the request's key. Otherwise the request, its evidence and the
    participant key may all be one invented identity (docs/DISPUTES.md), and the case
    is not opened on its word."""
    if bundle.request.kind != "client" or not any(m.ok for m in report.messages):
        return
    client = bundle.case.client_id
    written = [m for m in report.messages if m.sender_id == client]
    if written and not any(m.ok for m in written):
        report.foreign.append(
            f"none of the client's {len(written)} messages verifies under the request's "
            "key: the request is not shown to be the client's"
        )


def _check_participants(bundle: Bundle, report: Report) -> dict[str, BundleParticipant]:
    case = bundle.case
    by_id = {p.account_id: p for p in bundle.participants}
    expected = set(case_participants(case.client_id, case.counselor_id))
    if set(by_id) != expected or len(by_id) != len(bundle.participants):
        report.foreign.append("participants do not match the case")
    client = by_id.get(case.client_id)
    if client is not None and client.role != "client":
        report.foreign.append("the case's client is not listed as the client")
    for participant in bundle.participants:
        try:
            if participant.box_sig is None:
                raise CryptoError("missing")
            crypto.verify_box_key(participant.sign_pk, participant.box_pk, participant.box_sig)
        except CryptoError:
            report.tampered.append(f"{participant.account_id}: box key not signed by its owner")
    return {a: p for a, p in by_id.items() if a in expected}


def _check_request(
    bundle: Bundle, participants: dict[str, BundleParticipant], report: Report
) -> None:
    request = bundle.request
    report.request_kind = request.kind
    if request.case_id != bundle.case.case_id:
        report.foreign.append("the dispute request is for another case")
    if request.policy_fingerprint != report.policy_fingerprint:
        report.foreign.append("the dispute request was made under another escrow policy")
    client = participants.get(bundle.case.client_id)
    if request.kind == "client":
        if request.requester_id != bundle.case.client_id or client is None:
            report.foreign.append("the dispute request is not from the case's client")
        report.request_note = f"filed by the client {request.requester_id}"
        _check_evidence(bundle, report)
    else:
        signers = bundle.policy.policy.legal_signers
        order = request.order
        by = (
            f", signed by {signers[order.signer_index].name}"
            if order is not None and order.signer_index < len(signers)
            else ""
        )
        report.request_note = f"legal order {request.legal_order!r}{by}"
    try:
        verify_dispute(
            request, client.sign_pk if client is not None else None, policy=bundle.policy.policy
        )
    except EscrowError as exc:
        report.foreign.append(f"dispute request: {exc}")


def _check_evidence(bundle: Bundle, report: Report) -> None:
    """The commitment a client request cites must be the bundle's own for that epoch,
    made by the client (verify_dispute checks the signatures)."""
    evidence = bundle.request.evidence
    if evidence is None or evidence.commitment is None:
        return
    epoch = next((e for e in bundle.epochs if e.epoch == evidence.epoch), None)
    if (
        epoch is None
        or epoch.creator_id != bundle.case.client_id
        or epoch.commitment != evidence.commitment
        or epoch.commitment_sig != evidence.commitment_sig
    ):
        report.foreign.append("the request's evidence cites a key commitment not in the case")


def _open_reason(bundle: Bundle, held: dict[int, PrivateKey], report: Report) -> None:
    """The reason the officers read before approving; one that does not open for an
    officer it claims to be sealed to makes the request malformed."""
    request = bundle.request
    if request.kind != "client" or not held:
        return
    index = min(held)
    try:
        report.reason = open_reason(request.reason_ct[index], held[index])
    except (EscrowError, IndexError):
        report.foreign.append(f"the request's reason does not open for officer #{index}")


def _check_approvals(bundle: Bundle, report: Report) -> None:
    policy = bundle.policy.policy
    valid: set[int] = set()
    for approval in bundle.approvals:
        try:
            verify_approval(approval, bundle.request, policy)
        except EscrowError as exc:
            report.foreign.append(f"approval by officer #{approval.officer_index}: {exc}")
            continue
        valid.add(approval.officer_index)
    report.approvals_valid = sorted(valid)
    if len(valid) < policy.threshold:
        report.foreign.append(
            f"{len(valid)} valid officer approvals; the policy requires {policy.threshold}"
        )


def _check_epochs(
    bundle: Bundle, participants: dict[str, BundleParticipant], report: Report
) -> list[BundleEpoch]:
    """Before anything is opened: each epoch's commitment and escrow binding must be
    signed by its creator; an epoch may be opened only if its creator bound it to this
    policy and the client's consent to the policy predates it. Capsules of an epoch
    bound to no policy or another one are foreign (escrowed against its binding). The
    epochs that may be opened, in bundle order."""
    case_id = bundle.case.case_id
    policy_fp = report.policy_fingerprint
    consent = _client_consent(bundle, participants, report)
    allowed = []
    for epoch in bundle.epochs:
        creator = participants.get(epoch.creator_id)
        try:
            if creator is None:
                raise CryptoError("creator is not a participant")
            crypto.verify_commitment(
                creator.sign_pk,
                case_id,
                epoch.epoch,
                epoch.commitment,
                epoch.commitment_sig,
                escrow=epoch.escrow,
            )
        except CryptoError:
            report.foreign.append(f"epoch {epoch.epoch}: key commitment not signed by its creator")
            continue
        if epoch.escrow != policy_fp:
            if epoch.capsules:
                report.foreign.append(
                    f"epoch {epoch.epoch}: its key is bound to escrow policy {epoch.escrow!r}, "
                    "but capsules under this policy were deposited for it"
                )
            else:
                report.tampered.append(
                    f"epoch {epoch.epoch}: not escrowed under this policy (its key is bound "
                    f"to {epoch.escrow!r}); its messages cannot be opened"
                )
            continue
        if consent is None or consent > epoch.created_at:
            report.foreign.append(
                f"epoch {epoch.epoch}: its key was made before the client consented to this policy"
            )
            continue
        allowed.append(epoch)
    return allowed


def _client_consent(
    bundle: Bundle, participants: dict[str, BundleParticipant], report: Report
) -> int | None:
    """When the case's client consented to the bundle's policy (its signature checked),
    or None if the bundle carries no valid consent."""
    consent = bundle.client_consent
    client = participants.get(bundle.case.client_id)
    if consent is None or client is None:
        return None
    try:
        verify_consent(
            client.sign_pk,
            bundle.case.client_id,
            consent.terms_version,
            report.policy_fingerprint,
            consent.sig,
        )
    except CryptoError:
        report.foreign.append("the client's consent to the policy is not signed by the client")
        return None
    return consent.accepted_at


def _open_epochs(
    bundle: Bundle,
    epochs: list[BundleEpoch],
    participants: dict[str, BundleParticipant],
    held: dict[int, PrivateKey],
    report: Report,
) -> dict[int, bytes]:
    """Each escrowed epoch's K, opened from every capsule deposited for it; every
    capsule must open to the same committed key (each participant vouched for K on its
    own)."""
    case_id = bundle.case.case_id
    keys: dict[int, bytes] = {}
    for epoch in epochs:
        if not epoch.capsules:
            report.tampered.append(f"epoch {epoch.epoch}: no escrow capsule in the bundle")
        for deposit in epoch.capsules:
            if deposit.depositor_id not in participants:
                report.foreign.append(f"epoch {epoch.epoch}: capsule from a non-participant")
                continue
            try:
                key = open_capsule(
                    deposit.capsule,
                    bundle.policy.policy,
                    held,
                    case_id=case_id,
                    epoch=epoch.epoch,
                    commitment=epoch.commitment,
                )
            except InsufficientKeys as exc:
                if str(exc) not in report.keys:
                    report.keys.append(str(exc))
                continue
            except ForeignMaterial as exc:
                report.foreign.append(
                    f"epoch {epoch.epoch}: capsule of {deposit.depositor_id}: {exc}"
                )
                continue
            keys[epoch.epoch] = key
    return keys


def _check_messages(
    bundle: Bundle,
    participants: dict[str, BundleParticipant],
    epoch_keys: dict[int, bytes],
    report: Report,
) -> None:
    case_id = bundle.case.case_id
    head = bundle.chain_head
    try:
        verify_head(bundle.server_sign_pk, case_id, head.seq, head.hash, head.sig)
    except CryptoError:
        report.tampered.append("the chain head is not signed by the server key")
    broken = set(verify_chain(bundle.messages))
    if bundle.messages:
        last = bundle.messages[-1]
        if last.seq != head.seq or last.chain_hash != head.hash:
            report.tampered.append(
                f"the last message (seq {last.seq}) is not the signed chain head (seq {head.seq})"
            )
    elif head.seq != 0:
        report.tampered.append(f"no messages, but the signed chain head is at seq {head.seq}")
    present = [m.seq for m in bundle.messages]
    report.missing_seqs = sorted(set(range(1, head.seq + 1)) - set(present))
    for seq in report.missing_seqs:
        report.tampered.append(f"message seq {seq} is missing")
    seen: set[int] = set()
    opened: dict[int, crypto.Envelope] = {}
    nonces: dict[bytes, int] = {}  # the seq that first carried each nonce
    for message in bundle.messages:
        sender = participants.get(message.sender_id)
        verdict = MessageVerdict(
            seq=message.seq,
            epoch=message.epoch,
            sender_id=message.sender_id,
            sender_role=sender.role if sender else "unknown",
            client_msg_id=message.client_msg_id,
            server_ts=message.server_ts,
        )
        if message.case_id != case_id:
            verdict.problems.append("belongs to another case")
        if message.seq in seen:
            verdict.problems.append("seq appears twice")
        seen.add(message.seq)
        first = nonces.setdefault(message.nonce, message.seq)
        if first != message.seq:
            verdict.problems.append(f"replay of seq {first} (its nonce was already used)")
        if message.seq in broken:
            verdict.problems.append("hash chain broken here (altered, removed or reordered)")
        key = epoch_keys.get(message.epoch)
        if sender is None:
            verdict.problems.append("sender is not a participant of the case")
        elif key is None:
            verdict.problems.append(f"no key for epoch {message.epoch}")
        else:
            try:
                envelope = decrypt_message(
                    key,
                    sender.sign_pk,
                    case_id=case_id,
                    epoch=message.epoch,
                    sender_id=message.sender_id,
                    client_msg_id=message.client_msg_id,
                    nonce=message.nonce,
                    ciphertext=message.ciphertext,
                )
            except CryptoError as exc:
                verdict.problems.append(f"does not verify: {exc}")
            else:
                verdict.body = envelope.body
                verdict.ts = envelope.ts
                opened[message.seq] = envelope
        # Without enough officer keys nothing decrypts; that is a key problem (exit 11),
        # not evidence of tampering.
        tamper = [p for p in verdict.problems if not (key is None and report.keys)]
        if tamper:
            report.tampered.append(f"message seq {message.seq}: {'; '.join(tamper)}")
        report.messages.append(verdict)
    sign_pks = {a: p.sign_pk for a, p in participants.items()}
    report.order_problems = sorted(
        check_order(bundle.messages, opened)
        + check_receipts(case_id, bundle.messages, bundle.receipts, sign_pks),
        key=lambda p: p.seq,
    )
    report.tampered.extend(str(p) for p in report.order_problems)
