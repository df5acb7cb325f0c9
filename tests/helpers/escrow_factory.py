"""Build real escrow material and whole dispute bundles without a server, for the pure
tests of protocol/escrow.py and protocol/bundle.py and for chat-unseal's tests."""

from __future__ import annotations

import dataclasses

import msgspec
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol import frames as f
from protocol.bundle import (
    Bundle,
    BundleCapsule,
    BundleCase,
    BundleConsent,
    BundleEpoch,
    BundleParticipant,
    ChainHead,
)
from protocol.chain import GENESIS, chain_hash, sign_head
from protocol.escrow import (
    AuditHead,
    ClientEvidence,
    DisputeDocument,
    make_approval,
    make_capsule,
    make_legal_order,
    policy_fingerprint,
    seal_reasons,
    sign_consent,
    sign_dispute,
    sign_policy,
)

__all__ = [
    "DAY",
    "HEAD",
    "LEGAL",
    "NOW",
    "ORG",
    "Officer",
    "Scenario",
    "build",
    "make_policy",
    "officers",
]

NOW = 1_750_000_000_000
DAY = 86_400_000


@dataclasses.dataclass
class Officer:
    name: str
    box: PrivateKey
    sign: SigningKey

    @property
    def public(self) -> f.EscrowOfficer:
        return f.EscrowOfficer(
            name=self.name, box_pk=bytes(self.box.public_key), sign_pk=bytes(self.sign.verify_key)
        )


def officers(n: int, seed: int = 0) -> list[Officer]:
    return [
        Officer(
            f"officer{i + 1}",
            PrivateKey(bytes([seed + i + 1]) * 32),
            SigningKey(bytes([seed + i + 101]) * 32),
        )
        for i in range(n)
    ]


ORG = SigningKey(bytes([7]) * 32)
#: The audit-log head officers are shown and sign in the factory's approvals.
HEAD = AuditHead(seq=7, hash=bytes(range(1, 33)))
#: The policy's one legal-order signer (kept offline like an officer key).
LEGAL = SigningKey(bytes([9]) * 32)


def make_policy(
    people: list[Officer],
    k: int,
    org: SigningKey = ORG,
    version: int = 1,
    legal: list[SigningKey] | None = None,
) -> f.SignedEscrowPolicy:
    signers = [LEGAL] if legal is None else legal
    policy = f.EscrowPolicy(
        version=version,
        officers=[o.public for o in people],
        threshold=k,
        not_before=NOW - DAY,
        not_after=NOW + 365 * DAY,
        org_sign_pk=bytes(org.verify_key),
        legal_signers=[
            f.LegalSigner(name=f"legal{i + 1}", sign_pk=bytes(key.verify_key))
            for i, key in enumerate(signers)
        ],
    )
    return sign_policy(org, policy)


@dataclasses.dataclass
class Scenario:
    people: list[Officer]
    policy: f.SignedEscrowPolicy
    client: crypto.Identity
    counselor: crypto.Identity
    server: crypto.Identity
    case_id: str
    texts: list[tuple[str, str]]  # (sender role, body)
    bundle: Bundle


def build(
    n: int = 3,
    k: int = 2,
    *,
    case_id: str = "case_0001",
    texts: list[tuple[str, str]] | None = None,
    approvers: list[int] | None = None,
    key_seed: int = 1,
    legal_order: str | None = None,
) -> Scenario:
    """A case with ``texts`` under a k-of-n policy, disputed by its client (or by
    ``legal_order``), approved by ``approvers`` (default the first k officers) and
    exported as one bundle."""
    people = officers(n)
    signed = make_policy(people, k)
    policy = signed.policy
    fp = policy_fingerprint(policy)
    client = crypto.Identity.from_secret_bytes(bytes([key_seed]) * 64)
    counselor = crypto.Identity.from_secret_bytes(bytes([key_seed + 1]) * 64)
    server = crypto.Identity.from_secret_bytes(bytes([key_seed + 2]) * 64)
    ids = {"client": "acct_client", "counselor": "acct_counselor"}
    who = {"client": client, "counselor": counselor}
    texts = texts or [
        ("client", "I need help with <b>anxiety</b> & sleep"),
        ("counselor", "I'm here. Tell me more."),
        ("client", "It started last month."),
    ]
    key = bytes(range(32, 64))
    commitment = crypto.key_commitment(key, case_id, 1)
    epoch = BundleEpoch(
        epoch=1,
        creator_id=ids["client"],
        commitment=commitment,
        commitment_sig=crypto.sign_commitment(client, case_id, 1, commitment, escrow=fp),
        escrow=fp,
        created_at=NOW - 500,
        capsules=[
            BundleCapsule(
                depositor_id=ids["client"], capsule=make_capsule(policy, case_id, 1, key)
            ),
            BundleCapsule(
                depositor_id=ids["counselor"], capsule=make_capsule(policy, case_id, 1, key)
            ),
        ],
    )
    messages = []
    prev = GENESIS
    counters = {"client": 0, "counselor": 0}
    for seq, (role, body) in enumerate(texts, start=1):
        cmid = f"cmid-{seq:04d}"
        counters[role] += 1
        nonce, ct = crypto.encrypt_message(
            key,
            who[role],
            case_id=case_id,
            epoch=1,
            sender_id=ids[role],
            envelope=crypto.Envelope(
                body=body,
                ts=NOW + seq,
                client_msg_id=cmid,
                prev_seq=seq - 1,
                prev_hash=prev,
                n=counters[role],
            ),
        )
        h = chain_hash(
            prev,
            case_id=case_id,
            seq=seq,
            epoch=1,
            sender_id=ids[role],
            client_msg_id=cmid,
            nonce=nonce,
            ciphertext=ct,
        )
        messages.append(
            f.MessageRecord(
                case_id=case_id,
                seq=seq,
                epoch=1,
                sender_id=ids[role],
                client_msg_id=cmid,
                nonce=nonce,
                ciphertext=ct,
                chain_hash=h,
                server_ts=NOW + seq,
            )
        )
        prev = h
    last = len(messages)
    reason_ct = seal_reasons(policy, "The counselor was rude to me.")
    doc = DisputeDocument(
        request_id="dsp_0001",
        kind="client",
        case_id=case_id,
        timestamp=NOW,
        policy_fingerprint=fp,
        reason_ct=reason_ct,
        requester_id=ids["client"],
        requester_sign_pk=client.sign_pk,
        sig=sign_dispute(client, case_id, "all", NOW, fp, reason_ct),
        created_at=NOW + 5,
        evidence=ClientEvidence(
            terms_version=1,
            consent_sig=sign_consent(client, ids["client"], 1, fp),
            epoch=1,
            commitment=epoch.commitment,
            commitment_sig=epoch.commitment_sig,
        ),
    )
    if legal_order is not None:  # no requester, reason or signature: the signed order
        doc = msgspec.structs.replace(
            doc,
            kind="legal",
            reason_ct=[],
            requester_id=None,
            requester_sign_pk=None,
            sig=None,
            legal_order=legal_order,
            evidence=None,
            order=make_legal_order(LEGAL, policy, case_id, legal_order, NOW + 1),
        )
    approvals = [
        make_approval(people[i].sign, doc, policy, NOW + 10, HEAD)
        for i in (approvers if approvers is not None else list(range(k)))
    ]
    bundle = Bundle(
        exported_at=NOW + 20,
        case=BundleCase(
            case_id=case_id,
            client_id=ids["client"],
            counselor_id=ids["counselor"],
            state="assigned",
            language="en",
            created_at=NOW - 1000,
        ),
        participants=[
            BundleParticipant(
                account_id=ids["client"],
                role="client",
                handle="alice",
                sign_pk=client.sign_pk,
                box_pk=client.box_pk,
                box_sig=crypto.sign_box_key(client),
            ),
            BundleParticipant(
                account_id=ids["counselor"],
                role="counselor",
                handle="dr-who",
                sign_pk=counselor.sign_pk,
                box_pk=counselor.box_pk,
                box_sig=crypto.sign_box_key(counselor),
            ),
        ],
        policy=signed,
        epochs=[epoch],
        messages=messages,
        receipts=[
            f.SignedReceipt(
                account_id=ids[role],
                kind="read",
                up_to_seq=last,
                chain_hash=prev,
                sig=crypto.sign_receipt(who[role], case_id, "read", last, prev),
            )
            for role in ("client", "counselor")
        ],
        chain_head=ChainHead(seq=last, hash=prev, sig=sign_head(server, case_id, last, prev)),
        server_sign_pk=server.sign_pk,
        request=doc,
        approvals=approvals,
        audit_head=AuditHead(seq=9, hash=bytes(range(2, 34))),
        client_consent=BundleConsent(
            terms_version=1,
            sig=sign_consent(client, ids["client"], 1, fp),
            accepted_at=NOW - 900,
        ),
    )
    return Scenario(people, signed, client, counselor, server, case_id, texts, bundle)
