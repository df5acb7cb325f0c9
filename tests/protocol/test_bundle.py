"""protocol/bundle.py: a good bundle verifies with a threshold of officer keys; every
kind of tampering is reported and classified (exit codes 10, 11, 12)."""

from __future__ import annotations

import msgspec
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol.bundle import decode_bundle, encode_bundle, verify_bundle
from protocol.escrow import ForeignMaterial, make_approval, sign_dispute
from tests.helpers.escrow_factory import NOW, ORG, build

ORG_FP = crypto.fingerprint(bytes(ORG.verify_key))


def keys(s, *indices: int):  # type: ignore[no-untyped-def]
    return [s.people[i].box for i in indices]


def test_round_trip_and_full_verification() -> None:
    s = build()
    again = decode_bundle(encode_bundle(s.bundle))
    assert again == s.bundle
    report = verify_bundle(
        again,
        keys(s, 0, 2),
        org_fingerprint=ORG_FP,
        server_fingerprint=crypto.fingerprint(s.server.sign_pk),
    )
    assert report.exit_code == 0, (report.foreign, report.keys, report.tampered)
    assert [(m.seq, m.body) for m in report.messages] == [
        (i + 1, body) for i, (_, body) in enumerate(s.texts)
    ]
    assert [m.sender_role for m in report.messages] == [r for r, _ in s.texts]
    assert all(m.ok for m in report.messages)
    assert report.approvals_valid == [0, 1]
    assert report.keys_used == [0, 2]


def test_one_of_one() -> None:
    s = build(n=1, k=1)
    assert verify_bundle(s.bundle, keys(s, 0), org_fingerprint=ORG_FP).exit_code == 0


def test_not_a_bundle() -> None:
    with pytest.raises(ForeignMaterial):
        decode_bundle(b'{"format": "something else"}')
    with pytest.raises(ForeignMaterial):
        decode_bundle(b"not json")


def test_too_few_or_wrong_keys_exit_11() -> None:
    s = build()
    one = verify_bundle(s.bundle, keys(s, 1), org_fingerprint=ORG_FP)
    assert one.exit_code == 11
    assert all(m.body is None for m in one.messages)
    assert not one.tampered
    wrong = verify_bundle(s.bundle, [s.people[0].box, PrivateKey(bytes([201]) * 32)])
    assert wrong.exit_code == 11


def test_flipped_ciphertext_byte_exit_10() -> None:
    s = build()
    m = s.bundle.messages[1]
    flipped = bytearray(m.ciphertext)
    flipped[5] ^= 1
    msgs = list(s.bundle.messages)
    msgs[1] = msgspec.structs.replace(m, ciphertext=bytes(flipped))
    report = verify_bundle(msgspec.structs.replace(s.bundle, messages=msgs), keys(s, 0, 1))
    assert report.exit_code == 10
    bad = [m.seq for m in report.messages if not m.ok]
    assert 2 in bad
    assert report.messages[0].ok and report.messages[0].body == s.texts[0][1]
    assert len(report.messages) == 3  # still reported, not dropped


def test_removed_message_exit_10() -> None:
    s = build()
    msgs = [m for m in s.bundle.messages if m.seq != 2]
    report = verify_bundle(msgspec.structs.replace(s.bundle, messages=msgs), keys(s, 0, 1))
    assert report.exit_code == 10
    assert report.missing_seqs == [2]
    # Dropping the last message is caught by the signed head.
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=s.bundle.messages[:-1]), keys(s, 0, 1)
    )
    assert report.exit_code == 10
    assert report.missing_seqs == [3]


def test_swapped_messages_exit_10() -> None:
    s = build()
    m = list(s.bundle.messages)
    m[0], m[1] = m[1], m[0]
    report = verify_bundle(msgspec.structs.replace(s.bundle, messages=m), keys(s, 0, 1))
    assert report.exit_code == 10
    assert {v.seq for v in report.messages if not v.ok} >= {1, 2}


def test_resigned_head_by_another_server_is_caught_by_the_pin() -> None:
    s = build()
    head = s.bundle.chain_head
    bad_sig = msgspec.structs.replace(head, sig=bytes(64))
    report = verify_bundle(msgspec.structs.replace(s.bundle, chain_head=bad_sig), keys(s, 0, 1))
    assert report.exit_code == 10
    report = verify_bundle(
        s.bundle, keys(s, 0, 1), server_fingerprint=crypto.fingerprint(bytes(32))
    )
    assert report.exit_code == 12


def test_capsule_from_another_case_exit_12() -> None:
    s = build()
    other = build(case_id="case_9999")
    epochs = [
        msgspec.structs.replace(
            s.bundle.epochs[0],
            capsules=[other.bundle.epochs[0].capsules[0], s.bundle.epochs[0].capsules[1]],
        )
    ]
    report = verify_bundle(msgspec.structs.replace(s.bundle, epochs=epochs), keys(s, 0, 1))
    assert report.exit_code == 12
    assert any("another case" in p for p in report.foreign)


def test_forged_approval_exit_12() -> None:
    s = build()
    forged = msgspec.structs.replace(s.bundle.approvals[1], sig=bytes(64))
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, approvals=[s.bundle.approvals[0], forged]),
        keys(s, 0, 1),
    )
    assert report.exit_code == 12
    # An approval by a non-officer key claiming an officer's index.
    impostor = SigningKey(bytes([55]) * 32)
    fake = msgspec.structs.replace(
        s.bundle.approvals[0], officer_index=1, officer_sign_pk=bytes(impostor.verify_key)
    )
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, approvals=[s.bundle.approvals[0], fake]), keys(s, 0, 1)
    )
    assert report.exit_code == 12


def test_too_few_approvals_exit_12() -> None:
    s = build(approvers=[0])
    report = verify_bundle(s.bundle, keys(s, 0, 1))
    assert report.exit_code == 12
    # The same officer twice counts once.
    dup = [s.bundle.approvals[0], s.bundle.approvals[0]]
    report = verify_bundle(msgspec.structs.replace(s.bundle, approvals=dup), keys(s, 0, 1))
    assert report.exit_code == 12


def test_request_signed_by_someone_else_exit_12() -> None:
    s = build()
    doc = s.bundle.request
    mallory = crypto.Identity.from_secret_bytes(bytes([99]) * 64)
    forged = msgspec.structs.replace(
        doc,
        requester_sign_pk=mallory.sign_pk,
        sig=sign_dispute(
            mallory, doc.case_id, "all", doc.timestamp, doc.policy_fingerprint, doc.reason_ct
        ),
    )
    # Approvals re-made over the forged request, so only the signer check can catch it.
    approvals = [make_approval(s.people[i].sign, forged, s.policy.policy, NOW) for i in (0, 1)]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, request=forged, approvals=approvals), keys(s, 0, 1)
    )
    assert report.exit_code == 12
    assert any("not from the case's client" in p for p in report.foreign)


def test_request_for_another_case_exit_12() -> None:
    s = build()
    other = build(case_id="case_9999")
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, request=other.bundle.request), keys(s, 0, 1)
    )
    assert report.exit_code == 12


def test_policy_not_from_the_pinned_org_exit_12() -> None:
    s = build()
    report = verify_bundle(s.bundle, keys(s, 0, 1), org_fingerprint=crypto.fingerprint(bytes(32)))
    assert report.exit_code == 12


def test_unsigned_commitment_exit_12() -> None:
    s = build()
    epochs = [msgspec.structs.replace(s.bundle.epochs[0], commitment_sig=bytes(64))]
    report = verify_bundle(msgspec.structs.replace(s.bundle, epochs=epochs), keys(s, 0, 1))
    assert report.exit_code == 12
