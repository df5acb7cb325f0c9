"""protocol/escrow.py: policy signatures, capsules for every k-subset, consent, dispute
requests and approvals, and every way each must fail."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from protocol import crypto
from protocol import frames as f
from protocol.crypto import lp, u64
from protocol.errors import CryptoError
from protocol.escrow import (
    DisputeDocument,
    EscrowError,
    ForeignMaterial,
    InsufficientKeys,
    PolicyError,
    check_capsule_shape,
    check_policy,
    make_approval,
    make_capsule,
    make_legal_order,
    policy_bytes,
    policy_fingerprint,
    request_digest,
    seal_reasons,
    sign_consent,
    sign_dispute,
    sign_policy,
    subsets,
    verify_approval,
    verify_consent,
    verify_dispute,
    verify_legal_order,
    verify_policy,
)
from protocol.limits import MAX_ESCROW_OFFICERS
from protocol.opening import open_capsule, open_reason
from protocol.terms import render_terms
from tests.helpers.escrow_factory import HEAD, LEGAL, NOW, ORG, build, make_policy, officers

KEY = bytes(range(32))
CASE = "case_abc"


def test_policy_signature_and_pinning() -> None:
    signed = make_policy(officers(3), 2)
    fp = verify_policy(signed, crypto.fingerprint(bytes(ORG.verify_key)), NOW)
    assert fp == policy_fingerprint(signed.policy)
    # Fingerprint comparison ignores spacing and case.
    pin = crypto.fingerprint(bytes(ORG.verify_key)).replace(" ", "").upper()
    assert verify_policy(signed, pin) == fp
    with pytest.raises(PolicyError, match="pinned"):
        verify_policy(signed, crypto.fingerprint(bytes(32)))
    with pytest.raises(PolicyError, match="not in force"):
        verify_policy(signed, None, signed.policy.not_after + 1)
    forged = msgspec.structs.replace(
        signed, policy=msgspec.structs.replace(signed.policy, threshold=1)
    )
    with pytest.raises(PolicyError, match="signature"):
        verify_policy(forged, None)
    # A different organisation key cannot sign for the pinned one.
    other = make_policy(officers(3), 2, org=SigningKey(bytes([9]) * 32))
    with pytest.raises(PolicyError, match="pinned"):
        verify_policy(other, crypto.fingerprint(bytes(ORG.verify_key)))


def test_policy_bytes_cover_every_field() -> None:
    base = make_policy(officers(3), 2).policy
    variants = [
        msgspec.structs.replace(base, version=2),
        msgspec.structs.replace(base, threshold=3),
        msgspec.structs.replace(base, not_before=base.not_before + 1),
        msgspec.structs.replace(base, not_after=base.not_after + 1),
        msgspec.structs.replace(base, org_sign_pk=bytes(32)),
        msgspec.structs.replace(base, officers=base.officers[:2]),
        msgspec.structs.replace(base, officers=list(reversed(base.officers))),
        msgspec.structs.replace(
            base,
            officers=[msgspec.structs.replace(base.officers[0], name="x"), *base.officers[1:]],
        ),
    ]
    encodings = {policy_bytes(p) for p in [base, *variants]}
    assert len(encodings) == len(variants) + 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"threshold": 4}, "threshold"),
        ({"not_after": NOW - 10 * 86_400_000}, "window"),
    ],
)
def test_check_policy_rejects(change: dict[str, int], match: str) -> None:
    policy = msgspec.structs.replace(make_policy(officers(3), 2).policy, **change)
    with pytest.raises(PolicyError, match=match):
        check_policy(policy)


def test_check_policy_rejects_too_many_officers_and_shared_names() -> None:
    base = make_policy(officers(2), 1).policy
    many = msgspec.structs.replace(
        base, officers=[o.public for o in officers(MAX_ESCROW_OFFICERS + 1)]
    )
    with pytest.raises(PolicyError, match="too many officer subsets"):
        check_policy(many)
    first, second = base.officers
    same_name = msgspec.structs.replace(second, name=first.name)
    with pytest.raises(PolicyError, match="names must be distinct"):
        check_policy(msgspec.structs.replace(base, officers=[first, same_name]))


def test_check_policy_rejects_duplicate_officers() -> None:
    people = officers(2)
    policy = make_policy(people, 1).policy
    dup = msgspec.structs.replace(policy, officers=[policy.officers[0], policy.officers[0]])
    with pytest.raises(PolicyError, match="distinct"):
        check_policy(dup)
    with pytest.raises(PolicyError, match="another organisation"):
        sign_policy(SigningKey(bytes([3]) * 32), policy)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (3, 2), (3, 3), (4, 2), (5, 3)])
def test_every_k_subset_opens_and_no_smaller_set_does(n: int, k: int) -> None:
    people = officers(n)
    policy = make_policy(people, k).policy
    capsule = make_capsule(policy, CASE, 3, KEY)
    check_capsule_shape(capsule, policy)
    assert [tuple(c.officers) for c in capsule.subsets] == subsets(policy)
    commitment = crypto.key_commitment(KEY, CASE, 3)
    for subset in itertools.combinations(range(n), k):
        keys = {i: people[i].box for i in subset}
        assert open_capsule(capsule, policy, keys, case_id=CASE, epoch=3, commitment=commitment)
    for smaller in itertools.combinations(range(n), k - 1):
        keys = {i: people[i].box for i in smaller}
        with pytest.raises(InsufficientKeys):
            open_capsule(capsule, policy, keys, case_id=CASE, epoch=3, commitment=commitment)


def test_capsule_is_bound_to_case_epoch_and_commitment() -> None:
    people = officers(3)
    policy = make_policy(people, 2).policy
    keys = {0: people[0].box, 1: people[1].box}
    capsule = make_capsule(policy, CASE, 1, KEY)
    good = crypto.key_commitment(KEY, CASE, 1)
    assert open_capsule(capsule, policy, keys, case_id=CASE, epoch=1, commitment=good) == KEY
    with pytest.raises(ForeignMaterial, match="another case or epoch"):
        open_capsule(capsule, policy, keys, case_id="case_other", epoch=1, commitment=good)
    with pytest.raises(ForeignMaterial, match="another case or epoch"):
        open_capsule(capsule, policy, keys, case_id=CASE, epoch=2, commitment=good)
    other_key = make_capsule(policy, CASE, 1, bytes(32))
    with pytest.raises(ForeignMaterial, match="commitment"):
        open_capsule(other_key, policy, keys, case_id=CASE, epoch=1, commitment=good)


def test_capsule_layers_need_the_right_officer_keys() -> None:
    people = officers(3)
    policy = make_policy(people, 2).policy
    capsule = make_capsule(policy, CASE, 1, KEY)
    good = crypto.key_commitment(KEY, CASE, 1)
    # Officer 2's index with a stranger's key: the layer does not open.
    wrong = {0: people[0].box, 1: PrivateKey(bytes([200]) * 32)}
    with pytest.raises(ForeignMaterial, match="does not open"):
        open_capsule(capsule, policy, wrong, case_id=CASE, epoch=1, commitment=good)
    # Layers are nested in subset order; swapping them breaks the opening.
    swapped = msgspec.structs.replace(
        capsule,
        subsets=[
            msgspec.structs.replace(capsule.subsets[0], sealed=capsule.subsets[1].sealed),
            *capsule.subsets[1:],
        ],
    )
    with pytest.raises(ForeignMaterial):
        open_capsule(
            swapped,
            policy,
            {0: people[0].box, 1: people[1].box},
            case_id=CASE,
            epoch=1,
            commitment=good,
        )


def test_capsule_shape_checks() -> None:
    people = officers(3)
    policy = make_policy(people, 2).policy
    capsule = make_capsule(policy, CASE, 1, KEY)
    with pytest.raises(ForeignMaterial, match="every officer subset"):
        check_capsule_shape(msgspec.structs.replace(capsule, subsets=capsule.subsets[:2]), policy)
    other = make_policy(officers(3, seed=20), 2).policy
    with pytest.raises(ForeignMaterial, match="another escrow policy"):
        check_capsule_shape(capsule, other)
    with pytest.raises(ForeignMaterial, match="another escrow policy"):
        open_capsule(capsule, other, {}, case_id=CASE, epoch=1, commitment=bytes(32))
    short = f.CapsuleLayer(officers=capsule.subsets[0].officers, sealed=bytes(40))
    with pytest.raises(ForeignMaterial, match="too short"):
        check_capsule_shape(
            msgspec.structs.replace(capsule, subsets=[short, *capsule.subsets[1:]]), policy
        )


def test_capsule_binding_must_announce_a_32_byte_key() -> None:
    """A layer that opens to the right case and epoch but whose key length field is not
    32 (only a forger makes one: make_capsule cannot)."""
    people = officers(1)
    policy = make_policy(people, 1).policy
    inner = lp(b"chat.capsule.v1", CASE.encode(), u64(1)) + (31).to_bytes(4, "big") + KEY
    sealed = bytes(SealedBox(PublicKey(policy.officers[0].box_pk)).encrypt(inner))
    capsule = f.Capsule(
        policy_fingerprint=policy_fingerprint(policy),
        subsets=[f.CapsuleLayer(officers=[0], sealed=sealed)],
    )
    commitment = crypto.key_commitment(KEY, CASE, 1)
    with pytest.raises(ForeignMaterial, match="binding is malformed"):
        open_capsule(
            capsule, policy, {0: people[0].box}, case_id=CASE, epoch=1, commitment=commitment
        )


def test_capsule_fits_the_frame_limit_at_the_maximum_policy() -> None:
    from protocol import codec
    from protocol.limits import MAX_FRAME_BYTES

    people = officers(8)
    policy = make_policy(people, 4).policy
    capsule = make_capsule(policy, "c" * 64, 1, KEY)
    frame = f.CaseKeyDeposit(
        id="x" * 64,
        case_id="c" * 64,
        epoch=1,
        commitment=bytes(32),
        commitment_sig=bytes(64),
        escrow=policy_fingerprint(policy),
        seals=[f.KeySeal(account_id="a" * 64, sealed=bytes(80))] * 2,
        capsules=[capsule],
    )
    data = codec.encode(frame)
    assert len(data) < MAX_FRAME_BYTES
    assert codec.decode_client(data) == frame


def test_case_key_frame_without_capsules_is_unchanged_on_the_wire() -> None:
    from protocol import codec

    frame = f.CaseKeyDeposit(
        id="1",
        case_id="c",
        epoch=1,
        commitment=bytes(32),
        commitment_sig=bytes(64),
        escrow="none",
        seals=[f.KeySeal(account_id="a", sealed=bytes(80))],
    )
    assert b"capsules" not in codec.encode(frame)


def test_consent_signature() -> None:
    alice = crypto.Identity.from_secret_bytes(bytes(range(64)))
    sig = sign_consent(alice, "acct_a", 1, "fp")
    verify_consent(alice.sign_pk, "acct_a", 1, "fp", sig)
    for args in [("acct_b", 1, "fp"), ("acct_a", 2, "fp"), ("acct_a", 1, "fp2")]:
        with pytest.raises(CryptoError):
            verify_consent(alice.sign_pk, *args, sig)


def test_terms_name_the_policy_and_threshold() -> None:
    policy = make_policy(officers(3), 2).policy
    text = render_terms(4, policy)
    assert "version 4" in text
    assert policy_fingerprint(policy) in text
    assert "any 2 of its 3" in text
    assert "officer1, officer2, officer3" in text
    assert "WARNING" not in text
    assert "legal order signed by\nlegal1" in text and "told of any legal order" in text
    bare = render_terms(1, make_policy(officers(3), 2, legal=[]).policy)
    assert "names no one who\nmay sign a legal order" in bare
    # A single-officer policy says so plainly.
    single = render_terms(1, make_policy(officers(2), 1).policy)
    assert "any 1 of its 2" in single and "ONE escrow officer alone" in single


def test_reasons_open_only_for_their_officer() -> None:
    people = officers(3)
    policy = make_policy(people, 2).policy
    sealed = seal_reasons(policy, "unfair treatment — ünïcode")
    assert [open_reason(s, people[i].box) for i, s in enumerate(sealed)] == [
        "unfair treatment — ünïcode"
    ] * 3
    with pytest.raises(EscrowError):
        open_reason(sealed[0], people[1].box)
    with pytest.raises(ValueError):
        seal_reasons(policy, "")
    with pytest.raises(ValueError):
        seal_reasons(policy, "x" * 2001)


def test_dispute_request_and_approvals() -> None:
    s = build()
    doc = s.bundle.request
    policy = s.policy.policy
    verify_dispute(doc)
    approval = make_approval(s.people[2].sign, doc, policy, NOW, HEAD)
    assert approval.officer_index == 2
    verify_approval(approval, doc, policy)

    # Any change to the request invalidates its digest and so the approval.
    changed = msgspec.structs.replace(doc, created_at=doc.created_at + 1)
    assert request_digest(changed) != request_digest(doc)
    with pytest.raises(ForeignMaterial, match="another version"):
        verify_approval(approval, changed, policy)
    with pytest.raises(ForeignMaterial, match="another request"):
        verify_approval(approval, msgspec.structs.replace(doc, request_id="dsp_other"), policy)
    # Claiming to be another officer, or a bad signature.
    other = msgspec.structs.replace(approval, officer_index=0)
    with pytest.raises(ForeignMaterial, match="not the officer"):
        verify_approval(other, doc, policy)
    forged = msgspec.structs.replace(approval, sig=bytes(64))
    with pytest.raises(ForeignMaterial, match="does not verify"):
        verify_approval(forged, doc, policy)
    # An index past the policy's officers.
    nobody = msgspec.structs.replace(approval, officer_index=len(policy.officers))
    with pytest.raises(ForeignMaterial, match="names no officer"):
        verify_approval(nobody, doc, policy)
    # A key that is not an officer cannot approve.
    with pytest.raises(ForeignMaterial, match="not an officer"):
        make_approval(SigningKey(bytes([77]) * 32), doc, policy, NOW, HEAD)
    # Nor can an officer approve a request made under another policy.
    other = make_policy(officers(3, seed=20), 2).policy
    with pytest.raises(ForeignMaterial, match="another escrow policy"):
        make_approval(s.people[0].sign, doc, other, NOW, HEAD)


def test_request_must_be_signed_by_the_requester() -> None:
    s = build()
    doc = s.bundle.request
    mallory = crypto.Identity.from_secret_bytes(bytes([99]) * 64)
    sig = sign_dispute(
        mallory, doc.case_id, "all", doc.timestamp, doc.policy_fingerprint, doc.reason_ct
    )
    with pytest.raises(EscrowError, match="not signed"):
        verify_dispute(msgspec.structs.replace(doc, sig=sig))
    with pytest.raises(EscrowError, match="not signed"):
        verify_dispute(msgspec.structs.replace(doc, case_id="case_other"))
    with pytest.raises(EscrowError, match="must be signed"):
        verify_dispute(msgspec.structs.replace(doc, sig=None))
    # The hub's forgery: its own key signs the request, the client's evidence copied.
    forged = msgspec.structs.replace(doc, requester_sign_pk=mallory.sign_pk, sig=sig)
    with pytest.raises(EscrowError, match="did not sign the client's consent"):
        verify_dispute(forged)
    with pytest.raises(EscrowError, match="case client's key"):
        verify_dispute(forged, s.client.sign_pk)
    verify_dispute(doc, s.client.sign_pk)


def test_request_digest_covers_the_evidence() -> None:
    doc = build().bundle.request
    assert doc.version == 2 and doc.evidence is not None
    bare = msgspec.structs.replace(doc, evidence=None)
    old = msgspec.structs.replace(bare, version=1)
    assert len({request_digest(doc), request_digest(bare), request_digest(old)}) == 3
    other_epoch = msgspec.structs.replace(doc.evidence, epoch=2)
    assert request_digest(msgspec.structs.replace(doc, evidence=other_epoch)) != request_digest(doc)
    # Version 1 requests (no evidence) are refused.
    with pytest.raises(EscrowError, match="no evidence"):
        verify_dispute(old)


def test_legal_requests_carry_an_order_signed_by_a_legal_signer() -> None:
    signed = make_policy(officers(1), 1)
    policy = signed.policy
    fp = policy_fingerprint(policy)
    order = make_legal_order(LEGAL, policy, "case_1", "Court order 2025/123", NOW)
    assert order.signer_index == 0 and order.policy_fingerprint == fp
    verify_legal_order(order, policy)
    doc = DisputeDocument(
        request_id="dsp_l",
        kind="legal",
        case_id="case_1",
        timestamp=NOW,
        policy_fingerprint=fp,
        reason_ct=[],
        legal_order="Court order 2025/123",
        created_at=NOW,
        order=order,
    )
    verify_dispute(doc, policy=policy)
    with pytest.raises(EscrowError, match="checked against its policy"):
        verify_dispute(doc)
    with pytest.raises(EscrowError, match="must carry the signed order"):
        verify_dispute(msgspec.structs.replace(doc, legal_order=None), policy=policy)
    with pytest.raises(EscrowError, match="no client signature"):
        verify_dispute(msgspec.structs.replace(doc, sig=bytes(64)), policy=policy)
    evidence = build().bundle.request.evidence
    with pytest.raises(EscrowError, match="no client signature"):
        verify_dispute(msgspec.structs.replace(doc, evidence=evidence), policy=policy)
    with pytest.raises(EscrowError, match="another case, reference or policy"):
        verify_dispute(
            msgspec.structs.replace(doc, policy_fingerprint="0" * 4 + " 0000" * 9), policy=policy
        )
    # Signed by a key the policy does not name, under another policy, or forged.
    mallory = SigningKey(bytes([66]) * 32)
    with pytest.raises(ForeignMaterial, match="not a legal signer"):
        make_legal_order(mallory, policy, "case_1", "x", NOW)
    other = make_policy(officers(1), 1, version=2).policy
    with pytest.raises(ForeignMaterial, match="another escrow policy"):
        verify_legal_order(order, other)
    with pytest.raises(ForeignMaterial, match="names no legal signer"):
        verify_legal_order(msgspec.structs.replace(order, signer_index=1), policy)
    with pytest.raises(ForeignMaterial, match="does not verify"):
        verify_legal_order(msgspec.structs.replace(order, order_ref="Court 1/1"), policy)
    # The digest covers the order.
    changed = msgspec.structs.replace(doc, order=msgspec.structs.replace(order, issued_at=1))
    assert request_digest(changed) != request_digest(doc)


def test_policies_with_and_without_legal_signers() -> None:
    people = officers(2)
    bare = make_policy(people, 2, legal=[]).policy
    assert b"legal_signers" not in msgspec.json.encode(bare)
    with_legal = make_policy(people, 2).policy
    assert policy_fingerprint(bare) != policy_fingerprint(with_legal)
    assert policy_bytes(bare) in policy_bytes(with_legal)  # an extension, not a rewrite
    same = msgspec.structs.replace(
        with_legal, legal_signers=[*with_legal.legal_signers, *with_legal.legal_signers]
    )
    with pytest.raises(PolicyError, match="distinct"):
        check_policy(same)
    renamed = msgspec.structs.replace(
        same,
        legal_signers=[
            same.legal_signers[0],
            msgspec.structs.replace(same.legal_signers[0], sign_pk=bytes(range(32))),
        ],
    )
    with pytest.raises(PolicyError, match="legal signer names"):
        check_policy(renamed)
