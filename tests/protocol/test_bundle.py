"""protocol/bundle.py: a good bundle verifies with a threshold of officer keys; every
kind of tampering is reported and classified (exit codes 10, 11, 12).

Every finding :func:`verify_bundle` can make has a test here that provokes exactly that
finding on a bundle from tests/helpers/escrow_factory.py and checks its words and its
exit code."""

from __future__ import annotations

import msgspec
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol.bundle import (
    Bundle,
    BundleCapsule,
    ChainHead,
    Report,
    decode_bundle,
    encode_bundle,
    verify_bundle,
)
from protocol.chain import GENESIS, chain_hash, sign_head
from protocol.escrow import (
    DisputeDocument,
    ForeignMaterial,
    make_approval,
    make_legal_order,
    policy_fingerprint,
    sign_consent,
    sign_dispute,
)
from protocol.frames import MessageRecord
from tests.helpers.escrow_factory import (
    HEAD,
    LEGAL,
    NOW,
    ORG,
    Scenario,
    build,
    make_policy,
    officers,
)

ORG_FP = crypto.fingerprint(bytes(ORG.verify_key))


STRANGER = "acct_stranger"


def keys(s: Scenario, *indices: int) -> list[PrivateKey]:
    return [s.people[i].box for i in indices]


def check(s: Scenario, bundle: Bundle) -> Report:
    """``bundle`` (a changed ``s.bundle``) verified with two officer keys and both pins."""
    return verify_bundle(
        bundle,
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
        server_fingerprint=crypto.fingerprint(s.server.sign_pk),
    )


def only(findings: list[str], words: str) -> None:
    """Some finding says ``words``."""
    assert any(words in finding for finding in findings), findings


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
    wrong = verify_bundle(
        s.bundle, [s.people[0].box, PrivateKey(bytes([201]) * 32)], org_fingerprint=ORG_FP
    )
    assert wrong.exit_code == 11


def test_flipped_ciphertext_byte_exit_10() -> None:
    s = build()
    m = s.bundle.messages[1]
    flipped = bytearray(m.ciphertext)
    flipped[5] ^= 1
    msgs = list(s.bundle.messages)
    msgs[1] = msgspec.structs.replace(m, ciphertext=bytes(flipped))
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=msgs), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 10
    bad = [m.seq for m in report.messages if not m.ok]
    assert 2 in bad
    assert report.messages[0].ok and report.messages[0].body == s.texts[0][1]
    assert len(report.messages) == 3  # still reported, not dropped


def test_removed_message_exit_10() -> None:
    s = build()
    msgs = [m for m in s.bundle.messages if m.seq != 2]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=msgs), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 10
    assert report.missing_seqs == [2]
    # Dropping the last message is caught by the signed head.
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=s.bundle.messages[:-1]),
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
    )
    assert report.exit_code == 10
    assert report.missing_seqs == [3]


def test_message_labelled_with_another_case_exit_10() -> None:
    # Version 2 bundles carry each MessageRecord whole, case_id included: a record
    # relabelled to another case is named as such, and its chain link fails.
    s = build()
    msgs = list(s.bundle.messages)
    msgs[0] = msgspec.structs.replace(msgs[0], case_id="case_other")
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=msgs), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 10
    assert report.messages[0].problems == [
        "belongs to another case",
        "hash chain broken here (altered, removed or reordered)",
    ]
    assert report.messages[1].ok and report.messages[2].ok


def test_a_version_1_bundle_is_foreign() -> None:
    s = build()
    old = msgspec.json.decode(encode_bundle(s.bundle))
    old["version"] = 1
    for m in old["messages"]:
        del m["case_id"]
    with pytest.raises(ForeignMaterial, match="not a dispute bundle"):
        decode_bundle(msgspec.json.encode(old))


def test_swapped_messages_exit_10() -> None:
    s = build()
    m = list(s.bundle.messages)
    m[0], m[1] = m[1], m[0]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, messages=m), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 10
    assert {v.seq for v in report.messages if not v.ok} >= {1, 2}


def test_resigned_head_by_another_server_is_caught_by_the_pin() -> None:
    s = build()
    head = s.bundle.chain_head
    bad_sig = msgspec.structs.replace(head, sig=bytes(64))
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, chain_head=bad_sig), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 10
    report = verify_bundle(
        s.bundle,
        keys(s, 0, 1),
        server_fingerprint=crypto.fingerprint(bytes(32)),
        org_fingerprint=ORG_FP,
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
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, epochs=epochs), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 12
    assert any("another case" in p for p in report.foreign)


def test_forged_approval_exit_12() -> None:
    s = build()
    forged = msgspec.structs.replace(s.bundle.approvals[1], sig=bytes(64))
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, approvals=[s.bundle.approvals[0], forged]),
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
    )
    assert report.exit_code == 12
    # An approval by a non-officer key claiming an officer's index.
    impostor = SigningKey(bytes([55]) * 32)
    fake = msgspec.structs.replace(
        s.bundle.approvals[0], officer_index=1, officer_sign_pk=bytes(impostor.verify_key)
    )
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, approvals=[s.bundle.approvals[0], fake]),
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
    )
    assert report.exit_code == 12


def test_too_few_approvals_exit_12() -> None:
    s = build(approvers=[0])
    report = verify_bundle(s.bundle, keys(s, 0, 1), org_fingerprint=ORG_FP)
    assert report.exit_code == 12
    # The same officer twice counts once.
    dup = [s.bundle.approvals[0], s.bundle.approvals[0]]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, approvals=dup), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
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
    approvals = [
        make_approval(s.people[i].sign, forged, s.policy.policy, NOW, HEAD) for i in (0, 1)
    ]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, request=forged, approvals=approvals),
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
    )
    assert report.exit_code == 12
    only(report.foreign, "the request is not signed by the case client's key")
    # Nothing was opened: the authority to open failed first.
    assert report.messages == [] and report.keys_used == []


def without_commitment_evidence(s: Scenario) -> Bundle:
    """``s.bundle`` whose request cites no key commitment (the counselor made every
    key), approvals re-made over it."""
    doc = s.bundle.request
    assert doc.evidence is not None
    request = msgspec.structs.replace(
        doc, evidence=msgspec.structs.replace(doc.evidence, commitment=None)
    )
    approvals = [
        make_approval(s.people[i].sign, request, s.policy.policy, NOW, HEAD) for i in (0, 1)
    ]
    return msgspec.structs.replace(s.bundle, request=request, approvals=approvals)


def test_request_evidence_must_be_the_clients_own_exit_12() -> None:
    s = build()
    assert check(s, without_commitment_evidence(s)).exit_code == 0
    doc = s.bundle.request
    assert doc.evidence is not None

    def with_request(request: DisputeDocument) -> Report:
        approvals = [
            make_approval(s.people[i].sign, request, s.policy.policy, NOW, HEAD) for i in (0, 1)
        ]
        return check(s, msgspec.structs.replace(s.bundle, request=request, approvals=approvals))

    no_evidence = with_request(msgspec.structs.replace(doc, evidence=None))
    only(no_evidence.foreign, "carries no evidence that its key is the client's")
    assert no_evidence.messages == []
    bad_consent = msgspec.structs.replace(doc.evidence, consent_sig=bytes(64))
    report = with_request(msgspec.structs.replace(doc, evidence=bad_consent))
    only(report.foreign, "did not sign the client's consent to its policy")
    bad_commit = msgspec.structs.replace(doc.evidence, commitment_sig=bytes(64))
    report = with_request(msgspec.structs.replace(doc, evidence=bad_commit))
    only(report.foreign, "did not sign the case-key commitment")
    only(report.foreign, "cites a key commitment not in the case")
    report = with_request(msgspec.structs.replace(doc, requester_id=STRANGER))
    only(report.foreign, "the dispute request is not from the case's client")
    elsewhere = msgspec.structs.replace(doc.evidence, epoch=7)
    report = with_request(msgspec.structs.replace(doc, evidence=elsewhere))
    only(report.foreign, "cites a key commitment not in the case")


def test_request_for_another_case_exit_12() -> None:
    s = build()
    other = build(case_id="case_9999")
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, request=other.bundle.request),
        keys(s, 0, 1),
        org_fingerprint=ORG_FP,
    )
    assert report.exit_code == 12


def test_policy_not_from_the_pinned_org_exit_12() -> None:
    s = build()
    report = verify_bundle(s.bundle, keys(s, 0, 1), org_fingerprint=crypto.fingerprint(bytes(32)))
    assert report.exit_code == 12


def test_unsigned_commitment_exit_12() -> None:
    s = build()
    epochs = [msgspec.structs.replace(s.bundle.epochs[0], commitment_sig=bytes(64))]
    report = verify_bundle(
        msgspec.structs.replace(s.bundle, epochs=epochs), keys(s, 0, 1), org_fingerprint=ORG_FP
    )
    assert report.exit_code == 12


# -- every finding, one at a time ------------------------------------------------------


def test_legal_order_bundle_verifies() -> None:
    s = build(legal_order="Court 2025/17")
    report = check(s, s.bundle)
    assert report.exit_code == 0, (report.foreign, report.tampered)
    assert report.request_kind == "legal"
    assert report.request_note == "legal order 'Court 2025/17', signed by legal1"


def test_legal_order_not_signed_by_a_legal_signer_exit_12() -> None:
    """The hub's operator records an order of its own: unsigned, signed by a key the
    policy does not name, or an order for another case. Nothing opens."""
    s = build(legal_order="Court 2025/17")
    doc = s.bundle.request
    assert doc.order is not None
    mallory = SigningKey(bytes([66]) * 32)
    policy = s.policy.policy
    rogue = msgspec.structs.replace(
        doc.order,
        signer_sign_pk=bytes(mallory.verify_key),
        sig=make_legal_order(LEGAL, policy, s.case_id, "x", NOW).sig,
    )
    elsewhere = make_legal_order(LEGAL, policy, "case_other", "Court 2025/17", NOW)
    for request, words in (
        (msgspec.structs.replace(doc, order=None), "must carry the signed order"),
        (msgspec.structs.replace(doc, order=rogue), "not the legal signer's"),
        (msgspec.structs.replace(doc, order=elsewhere), "for another case"),
        (msgspec.structs.replace(doc, legal_order="Court 9999/1"), "another case, reference"),
    ):
        approvals = [make_approval(s.people[i].sign, request, policy, NOW, HEAD) for i in (0, 1)]
        bundle = msgspec.structs.replace(s.bundle, request=request, approvals=approvals)
        report = check(s, bundle)
        only(report.foreign, words)
        assert report.messages == []


def test_participants_must_be_exactly_the_case_parties_exit_12() -> None:
    s = build()
    client, counselor = s.bundle.participants
    stranger = msgspec.structs.replace(counselor, account_id=STRANGER, handle="mallory")
    for participants in ([client, counselor, stranger], [client, counselor, counselor]):
        report = check(s, msgspec.structs.replace(s.bundle, participants=participants))
        assert report.exit_code == 12
        only(report.foreign, "participants do not match the case")


def test_the_client_must_be_listed_as_the_client_exit_12() -> None:
    s = build()
    client, counselor = s.bundle.participants
    wrong = msgspec.structs.replace(client, role="counselor")
    report = check(s, msgspec.structs.replace(s.bundle, participants=[wrong, counselor]))
    assert report.exit_code == 12
    only(report.foreign, "the case's client is not listed as the client")


def test_request_under_another_policy_exit_12() -> None:
    s = build()
    other = policy_fingerprint(make_policy(officers(2), 1).policy)
    request = msgspec.structs.replace(s.bundle.request, policy_fingerprint=other)
    report = check(s, msgspec.structs.replace(s.bundle, request=request))
    assert report.exit_code == 12
    only(report.foreign, "the dispute request was made under another escrow policy")


def test_request_with_a_bad_signature_exit_12() -> None:
    s = build()
    request = msgspec.structs.replace(s.bundle.request, sig=bytes(64))
    report = check(s, msgspec.structs.replace(s.bundle, request=request))
    assert report.exit_code == 12
    only(report.foreign, "dispute request: the request is not signed by the requesting client")


def test_epoch_created_by_a_non_participant_exit_12() -> None:
    s = build()
    epoch = msgspec.structs.replace(s.bundle.epochs[0], creator_id=STRANGER)
    bundle = without_commitment_evidence(s)
    report = check(s, msgspec.structs.replace(bundle, epochs=[epoch]))
    assert report.exit_code == 12
    only(report.foreign, "epoch 1: key commitment not signed by its creator")


def test_capsule_from_a_non_participant_exit_12() -> None:
    s = build()
    epoch = s.bundle.epochs[0]
    stranger = BundleCapsule(depositor_id=STRANGER, capsule=epoch.capsules[0].capsule)
    changed = msgspec.structs.replace(epoch, capsules=[*epoch.capsules, stranger])
    report = check(s, msgspec.structs.replace(s.bundle, epochs=[changed]))
    assert report.exit_code == 12
    only(report.foreign, "epoch 1: capsule from a non-participant")
    assert all(m.ok for m in report.messages)  # the participants' capsules still open


def test_epoch_without_capsules_exit_10() -> None:
    s = build()
    epoch = msgspec.structs.replace(s.bundle.epochs[0], capsules=[])
    report = check(s, msgspec.structs.replace(s.bundle, epochs=[epoch]))
    assert report.exit_code == 10
    assert not report.foreign and not report.keys
    only(report.tampered, "epoch 1: no escrow capsule in the bundle")
    # Without a capsule no key opens: each message says so, as tampering.
    assert [m.problems for m in report.messages] == [["no key for epoch 1"]] * 3
    only(report.tampered, "message seq 1: no key for epoch 1")


def test_message_of_an_epoch_without_a_key_exit_10() -> None:
    s = build()
    messages = list(s.bundle.messages)
    messages[1] = msgspec.structs.replace(messages[1], epoch=2)
    report = check(s, msgspec.structs.replace(s.bundle, messages=messages))
    assert report.exit_code == 10
    [bad] = [m for m in report.messages if not m.ok]
    assert bad.seq == 2 and "no key for epoch 2" in bad.problems
    assert any("hash chain broken" in p for p in bad.problems)  # the chain covers the epoch


def test_sender_who_is_not_a_participant_exit_10() -> None:
    s = build()
    messages = list(s.bundle.messages)
    messages[0] = msgspec.structs.replace(messages[0], sender_id=STRANGER)
    report = check(s, msgspec.structs.replace(s.bundle, messages=messages))
    assert report.exit_code == 10
    first = report.messages[0]
    assert first.sender_role == "unknown" and first.body is None
    assert "sender is not a participant of the case" in first.problems


def test_duplicated_message_exit_10() -> None:
    s = build()
    messages = [*s.bundle.messages[:2], s.bundle.messages[1], s.bundle.messages[2]]
    report = check(s, msgspec.structs.replace(s.bundle, messages=messages))
    assert report.exit_code == 10
    assert [m.seq for m in report.messages] == [1, 2, 2, 3]  # every copy gets a verdict
    assert "seq appears twice" in report.messages[2].problems
    only(report.tampered, "message seq 2: seq appears twice")


def test_replayed_ciphertext_is_named_exit_10() -> None:
    """Seq 3 carries seq 1's nonce and ciphertext again (a replay the hub stored)."""
    s = build()
    messages = list(s.bundle.messages)
    first = messages[0]
    messages[2] = msgspec.structs.replace(
        messages[2], nonce=first.nonce, ciphertext=first.ciphertext
    )
    report = check(s, msgspec.structs.replace(s.bundle, messages=messages))
    assert report.exit_code == 10
    assert "replay of seq 1 (its nonce was already used)" in report.messages[2].problems
    assert not any("replay" in p for p in report.messages[0].problems)
    only(report.tampered, "message seq 3: ")


def test_head_past_the_last_message_exit_10() -> None:
    s = build()
    report = check(s, msgspec.structs.replace(s.bundle, messages=[]))
    assert report.exit_code == 10
    only(report.tampered, "no messages, but the signed chain head is at seq 3")
    assert report.missing_seqs == [1, 2, 3]


def test_case_without_messages_verifies() -> None:
    s = build()
    head = ChainHead(seq=0, hash=GENESIS, sig=sign_head(s.server, s.case_id, 0, GENESIS))
    empty = msgspec.structs.replace(s.bundle, messages=[], chain_head=head, receipts=[])
    report = check(s, empty)
    assert report.exit_code == 0, (report.foreign, report.tampered)
    assert report.messages == [] and report.missing_seqs == []


def test_head_that_is_not_the_last_message_exit_10() -> None:
    s = build()
    last = s.bundle.messages[-1]
    head = ChainHead(
        seq=2, hash=last.chain_hash, sig=sign_head(s.server, s.case_id, 2, last.chain_hash)
    )
    report = check(s, msgspec.structs.replace(s.bundle, chain_head=head))
    assert report.exit_code == 10
    only(report.tampered, "the last message (seq 3) is not the signed chain head (seq 2)")


# -- version 2: the order participants signed ------------------------------------------

SIX = [
    ("client", "I feel unsafe at home."),
    ("counselor", "Thank you for telling me. Are you safe right now?"),
    ("client", "NO. Do not call anyone."),
    ("counselor", "Understood. I will not call anyone."),
    ("client", "Thank you."),
    ("counselor", "We can talk as long as you need."),
]


def rechained(s: Scenario, records: list[MessageRecord], *, receipts: bool = False) -> Bundle:
    """What a hostile hub with the server key exports after editing ``records``: seqs
    renumbered 1.., every chain hash recomputed, the head re-signed; receipts dropped
    unless ``receipts``."""
    out: list[MessageRecord] = []
    prev = GENESIS
    for seq, r in enumerate(records, start=1):
        link = chain_hash(
            prev,
            case_id=r.case_id,
            seq=seq,
            epoch=r.epoch,
            sender_id=r.sender_id,
            client_msg_id=r.client_msg_id,
            nonce=r.nonce,
            ciphertext=r.ciphertext,
        )
        out.append(msgspec.structs.replace(r, seq=seq, chain_hash=link))
        prev = link
    head = ChainHead(seq=len(out), hash=prev, sig=sign_head(s.server, s.case_id, len(out), prev))
    return msgspec.structs.replace(
        s.bundle,
        messages=out,
        chain_head=head,
        receipts=s.bundle.receipts if receipts else [],
    )


def order_lines(report: Report) -> list[tuple[int, str, str]]:
    return [(p.seq, p.kind, p.sender_id) for p in report.order_problems]


def test_a_deleted_and_rechained_message_is_detected() -> None:
    s = build(texts=SIX)
    kept = [m for m in s.bundle.messages if m.seq != 3]
    report = check(s, rechained(s, kept))
    assert report.exit_code == 10
    assert all(m.ok for m in report.messages)  # each message still verifies on its own
    assert (3, "reordered", "acct_counselor") in order_lines(report)
    assert (4, "dropped", "acct_client") in order_lines(report)  # the client's n=2
    only(report.tampered, "seq 4: dropped (acct_client): message n=2 of acct_client is missing")


def test_reordered_and_rechained_messages_are_detected() -> None:
    s = build(texts=SIX)
    m = list(s.bundle.messages)
    m[2], m[3] = m[3], m[2]
    report = check(s, rechained(s, m))
    assert report.exit_code == 10
    assert (3, "reordered", "acct_counselor") in order_lines(report)


def test_a_replayed_message_is_detected() -> None:
    s = build(texts=SIX)
    report = check(s, rechained(s, [*s.bundle.messages, s.bundle.messages[0]]))
    assert report.exit_code == 10
    assert (7, "replayed", "acct_client") in order_lines(report)


def test_receipts_catch_a_rechained_history() -> None:
    s = build(texts=SIX)
    # Both participants signed a read receipt for seq 6; the hub drops the last message.
    report = check(s, rechained(s, list(s.bundle.messages[:-1]), receipts=True))
    assert report.exit_code == 10
    assert sorted(order_lines(report)) == [
        (6, "dropped", "acct_client"),
        (6, "dropped", "acct_counselor"),
    ]


def test_receipt_signed_by_nobody_is_reported() -> None:
    s = build()
    forged = [msgspec.structs.replace(r, sig=bytes(64)) for r in s.bundle.receipts]
    report = check(s, msgspec.structs.replace(s.bundle, receipts=forged))
    assert report.exit_code == 10
    only(report.tampered, "read receipt is not signed by acct_client")


@pytest.mark.parametrize("box_sig", [None, bytes(64)])
def test_participant_box_key_not_signed_exit_10(box_sig: bytes | None) -> None:
    s = build()
    people = [msgspec.structs.replace(p, box_sig=box_sig) for p in s.bundle.participants]
    report = check(s, msgspec.structs.replace(s.bundle, participants=people))
    assert report.exit_code == 10
    only(report.tampered, "acct_counselor: box key not signed by its owner")


def test_an_honest_bundle_has_no_order_problem() -> None:
    s = build(texts=SIX)
    report = check(s, s.bundle)
    assert report.exit_code == 0 and report.order_problems == []


def test_reason_is_opened_or_the_request_is_malformed_exit_12() -> None:
    s = build()
    assert check(s, s.bundle).reason == "The counselor was rude to me."
    # Sealed to officer #0's key for someone else: it does not open, nothing else does.
    doc = s.bundle.request
    garbled = [bytes(len(doc.reason_ct[0])), *doc.reason_ct[1:]]
    for reasons in (garbled, []):
        sig = sign_dispute(
            s.client, doc.case_id, "all", doc.timestamp, doc.policy_fingerprint, reasons
        )
        request = msgspec.structs.replace(doc, reason_ct=reasons, sig=sig)
        approvals = [
            make_approval(s.people[i].sign, request, s.policy.policy, NOW, HEAD) for i in (0, 1)
        ]
        bundle = msgspec.structs.replace(s.bundle, request=request, approvals=approvals)
        report = check(s, bundle)
        only(report.foreign, "reason does not open for officer #0")
        assert report.messages == []


def test_an_invented_client_identity_is_foreign_exit_12() -> None:
    """The hub invents key X for the client: request, consent, key commitment and the
    participant entry all under X, approvals over that. Everything is consistent, but
    the client's real messages do not verify under X: nothing is reported opened."""
    s = build()
    x = crypto.Identity.from_secret_bytes(bytes([123]) * 64)
    b = s.bundle
    doc = b.request
    assert doc.evidence is not None
    fp = doc.policy_fingerprint
    epoch = b.epochs[0]
    epochs = [
        msgspec.structs.replace(
            epoch,
            commitment_sig=crypto.sign_commitment(
                x, s.case_id, 1, epoch.commitment, escrow=epoch.escrow
            ),
        )
    ]
    request = msgspec.structs.replace(
        doc,
        requester_sign_pk=x.sign_pk,
        sig=sign_dispute(x, doc.case_id, "all", doc.timestamp, fp, doc.reason_ct),
        evidence=msgspec.structs.replace(
            doc.evidence,
            consent_sig=sign_consent(x, doc.requester_id or "", 1, fp),
            commitment_sig=epochs[0].commitment_sig,
        ),
    )
    participants = [
        msgspec.structs.replace(p, sign_pk=x.sign_pk) if p.role == "client" else p
        for p in b.participants
    ]
    approvals = [
        make_approval(s.people[i].sign, request, s.policy.policy, NOW, HEAD) for i in (0, 1)
    ]
    assert b.client_consent is not None
    consent = msgspec.structs.replace(
        b.client_consent, sig=sign_consent(x, doc.requester_id or "", 1, fp)
    )
    forged = msgspec.structs.replace(
        b,
        request=request,
        epochs=epochs,
        participants=participants,
        approvals=approvals,
        client_consent=consent,
    )
    report = check(s, forged)
    assert report.exit_code == 12
    only(report.foreign, "none of the client's 2 messages verifies under the request's key")
    # A legal order on the same bundle is not a claim about the client's key.
    legal = build(legal_order="Court 1/26")
    assert check(legal, legal.bundle).exit_code == 0


def rebound(
    s: Scenario, escrow: str, *, capsules: bool = True, created_at: int | None = None
) -> Bundle:
    """``s.bundle`` with epoch 1's key bound, under its creator's signature, to
    ``escrow``; the request cites no commitment (it would name the old binding)."""
    b = without_commitment_evidence(s)
    epoch = b.epochs[0]
    changed = msgspec.structs.replace(
        epoch,
        escrow=escrow,
        commitment_sig=crypto.sign_commitment(
            s.client, s.case_id, 1, epoch.commitment, escrow=escrow
        ),
        capsules=epoch.capsules if capsules else [],
        created_at=epoch.created_at if created_at is None else created_at,
    )
    return msgspec.structs.replace(b, epochs=[changed])


def test_escrow_reaching_backwards_is_foreign_exit_12() -> None:
    """A key made without escrow ("none"), or under another policy, for which capsules
    under this policy turn up: escrowed against what its creator signed. Nothing opens."""
    s = build()
    for escrow in (crypto.NO_ESCROW, "abcd " * 9 + "abcd"):
        report = check(s, rebound(s, escrow))
        assert report.exit_code == 12 and report.messages == []
        only(report.foreign, f"epoch 1: its key is bound to escrow policy {escrow!r}")
    # The same key with no capsules is simply not escrowed: its messages do not open.
    report = check(s, rebound(s, crypto.NO_ESCROW, capsules=False))
    assert report.exit_code == 10 and not report.foreign
    only(report.tampered, "epoch 1: not escrowed under this policy")
    assert all(m.body is None for m in report.messages)
    # A wrong binding claimed without the creator's signature over it.
    forged = msgspec.structs.replace(s.bundle.epochs[0], escrow=crypto.NO_ESCROW)
    report = check(s, msgspec.structs.replace(s.bundle, epochs=[forged]))
    only(report.foreign, "epoch 1: key commitment not signed by its creator")


def test_escrowed_epochs_must_follow_the_clients_consent_exit_12() -> None:
    s = build()
    assert s.bundle.client_consent is not None
    # Made before the client consented.
    consented = s.bundle.client_consent.accepted_at
    report = check(s, rebound(s, s.bundle.epochs[0].escrow, created_at=consented - 1))
    only(report.foreign, "epoch 1: its key was made before the client consented")
    assert report.messages == []
    # No consent in the bundle, or one not signed by the client.
    report = check(s, msgspec.structs.replace(s.bundle, client_consent=None))
    only(report.foreign, "epoch 1: its key was made before the client consented")
    bad = msgspec.structs.replace(s.bundle.client_consent, sig=bytes(64))
    report = check(s, msgspec.structs.replace(s.bundle, client_consent=bad))
    only(report.foreign, "the client's consent to the policy is not signed by the client")
    # A legal order rests on the same consent.
    legal = build(legal_order="Court 1/26")
    report = check(legal, msgspec.structs.replace(legal.bundle, client_consent=None))
    assert report.exit_code == 12
