"""The dispute use cases without a socket: a client's request through the handler, the
officers' side through the same DisputeService the CLI uses, and the watcher telling
the requester's session about each state change."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from chat_server.disputes import NotEnoughApprovals
from chat_server.handlers import disputes, messages
from chat_server.hub import Hub
from protocol import crypto
from protocol import frames as f
from protocol.bundle import decode_bundle, verify_bundle
from protocol.clock import now_ms
from protocol.errors import (
    Conflict,
    ConsentRequired,
    Forbidden,
    InvalidFrame,
    LimitExceeded,
    NotFound,
)
from protocol.escrow import (
    AuditHead,
    DisputeDocument,
    EscrowError,
    make_approval,
    make_legal_order,
    policy_fingerprint,
    seal_reasons,
    sign_consent,
    sign_dispute,
    sign_policy,
    verify_dispute,
)
from storage.consents import ConsentRecord
from storage.engine import open_database, sqlite_url
from storage.records import CaseRecord
from tests.helpers import hubs
from tests.helpers.usecases import Person, World

ORG = SigningKey(bytes([7]) * 32)
LEGAL = SigningKey(bytes([8]) * 32)
OFFICERS = [(PrivateKey(bytes([i + 1]) * 32), SigningKey(bytes([i + 41]) * 32)) for i in range(3)]
DAY = 86_400_000


async def install_policy(
    world: World, k: int = 2, consenting: tuple[Person, ...] = ()
) -> f.SignedEscrowPolicy:
    """Install a k-of-3 policy; each of ``consenting`` signs the consent to it."""
    now = now_ms()
    policy = f.EscrowPolicy(
        version=1,
        officers=[
            f.EscrowOfficer(
                name=f"officer{i}", box_pk=bytes(box.public_key), sign_pk=bytes(sign.verify_key)
            )
            for i, (box, sign) in enumerate(OFFICERS)
        ],
        threshold=k,
        not_before=now - DAY,
        not_after=now + DAY,
        org_sign_pk=bytes(ORG.verify_key),
        legal_signers=[f.LegalSigner(name="court", sign_pk=bytes(LEGAL.verify_key))],
    )
    signed = sign_policy(ORG, policy)
    fp = policy_fingerprint(policy)
    await world.hub.db.escrow.install(fp, msgspec.json.encode(signed), 1, now)
    for person in consenting:
        sig = sign_consent(person.identity, person.id, 1, fp)
        assert await world.hub.db.consents.record(ConsentRecord(person.id, 1, fp, sig, now))
    return signed


def request(
    client: Person, case: CaseRecord, signed: f.SignedEscrowPolicy, **change: object
) -> f.DisputeRequest:
    fp = policy_fingerprint(signed.policy)
    reasons = seal_reasons(signed.policy, "I was treated unfairly")
    ts = now_ms()
    values: dict[str, object] = {
        "id": "d",
        "case_id": case.id,
        "timestamp": ts,
        "policy_fingerprint": fp,
        "reason_ct": reasons,
        "sig": sign_dispute(client.identity, case.id, "all", ts, fp, reasons),
    }
    values.update(change)
    return f.DisputeRequest(**values)  # type: ignore[arg-type]


async def test_a_client_request_is_stored_and_listed(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    signed = await install_policy(world)
    with pytest.raises(ConsentRequired, match="accept the current terms"):
        await disputes.dispute_request(hub, client.caller, request(client, case, signed))
    signed = await install_policy(world, consenting=(client,))
    created = await disputes.dispute_request(hub, client.caller, request(client, case, signed))
    assert (created.dispute.case_id, created.dispute.state) == (case.id, "pending")
    listed = await disputes.dispute_list(hub, client.caller, f.DisputeList(id="l"))
    assert listed.disputes == [created.dispute]
    assert (
        await disputes.dispute_list(hub, counselor.caller, f.DisputeList(id="m"))
    ).disputes == []
    view = await hub.disputes.view(await hub.disputes.get(created.dispute.request_id))
    doc = view.request
    assert (doc.kind, doc.requester_id, doc.requester_sign_pk) == (
        "client",
        client.id,
        client.identity.sign_pk,
    )
    # The evidence: the client's own consent; the case's only key was made before the
    # policy (bound to "none"), so no commitment under the policy is cited.
    assert doc.evidence is not None and doc.evidence.commitment is None
    verify_dispute(doc, client.identity.sign_pk)
    # A case whose key the client made under the policy: that commitment is cited too.
    bound = await world.case(client, counselor, escrow=policy_fingerprint(signed.policy))
    again = await disputes.dispute_request(hub, client.caller, request(client, bound, signed))
    doc = (await hub.disputes.view(await hub.disputes.get(again.dispute.request_id))).request
    assert doc.evidence is not None and doc.evidence.commitment is not None
    assert doc.evidence.epoch == 1
    verify_dispute(doc, client.identity.sign_pk)


async def test_what_a_request_is_refused_for(world: World) -> None:
    hub = world.hub
    client, counselor, stranger = await world.client_counselor_stranger()
    case = await world.case(client, counselor)
    with pytest.raises(NotFound, match="no escrow policy"):
        await disputes.dispute_request(hub, client.caller, request(client, case, _unsigned()))
    signed = await install_policy(world, consenting=(client,))
    good = request(client, case, signed)
    with pytest.raises(Forbidden, match="only the case's client"):
        await disputes.dispute_request(hub, counselor.caller, request(counselor, case, signed))
    with pytest.raises(Forbidden, match="not a participant"):
        await disputes.dispute_request(hub, stranger.caller, request(stranger, case, signed))
    refusals = [
        ({"policy_fingerprint": " ".join(["abcd"] * 10)}, "another escrow policy"),
        ({"reason_ct": good.reason_ct[:2]}, "sealed to every officer"),
        ({"timestamp": good.timestamp - 2 * DAY}, "too far from the hub's clock"),
        ({"sig": bytes(64)}, "signature does not verify"),
    ]
    for change, message in refusals:
        with pytest.raises(InvalidFrame, match=message):
            await disputes.dispute_request(
                hub, client.caller, request(client, case, signed, **change)
            )
    assert await hub.disputes.all() == []


async def test_approvals_export_and_the_watcher_tell_the_client(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    signed = await install_policy(world, k=2, consenting=(client,))
    created = await disputes.dispute_request(hub, client.caller, request(client, case, signed))
    request_id = created.dispute.request_id
    view = await hub.disputes.view(await hub.disputes.get(request_id))
    doc: DisputeDocument = view.request
    head = view.audit_head
    assert head.seq >= 1  # the request itself is audited

    with pytest.raises(NotEnoughApprovals, match="0 valid approvals; the policy requires 2"):
        await hub.disputes.export(request_id, hub.server_key)
    # An approval anchoring an audit head this log does not have (a later, or another,
    # log) is refused.
    ahead = AuditHead(seq=head.seq + 5, hash=head.hash)
    with pytest.raises(EscrowError, match="audit head does not match this log"):
        await hub.disputes.approve(
            request_id, make_approval(OFFICERS[0][1], doc, signed.policy, now_ms(), ahead)
        )
    approve = [make_approval(sign, doc, signed.policy, now_ms(), head) for _, sign in OFFICERS]
    first = await hub.disputes.approve(request_id, approve[0])
    assert (first.officer_name, first.record.state, first.threshold) == ("officer0", "pending", 2)
    with pytest.raises(Conflict):
        await hub.disputes.approve(request_id, approve[0])
    forged = msgspec.structs.replace(approve[1], sig=bytes(64))
    with pytest.raises(EscrowError):
        await hub.disputes.approve(request_id, forged)
    second = await hub.disputes.approve(request_id, approve[2])
    assert second.record.state == "approved"
    # The watcher (started by the request) tells the requester's live session.
    updated = await client.peer.next(f.DisputeUpdated)
    assert (updated.dispute.request_id, updated.dispute.state) == (request_id, "approved")
    assert counselor.peer.of(f.DisputeUpdated) == []

    # The counselor's signed receipt (of the empty history) travels in the bundle.
    read = f.Receipt(
        id="rr",
        case_id=case.id,
        kind="read",
        up_to_seq=0,
        chain_hash=bytes(32),
        sig=crypto.sign_receipt(counselor.identity, case.id, "read", 0, bytes(32)),
    )
    assert isinstance(await messages.receipt(hub, counselor.caller, read), f.Ok)
    exported = await hub.disputes.export(request_id, hub.server_key)
    bundle = decode_bundle(exported.data)
    assert [(r.account_id, r.up_to_seq, r.sig) for r in bundle.receipts] == [
        (counselor.id, 0, read.sig)
    ]
    assert all(p.box_sig is not None for p in bundle.participants)
    assert (exported.messages, exported.epochs) == (0, 1)
    assert bundle.server_sign_pk == hub.server_key.sign_pk
    assert bundle.request == doc and [a.officer_index for a in bundle.approvals] == [0, 2]
    org_fp = crypto.fingerprint(bytes(ORG.verify_key))
    report = verify_bundle(bundle, [OFFICERS[0][0], OFFICERS[2][0]], org_fingerprint=org_fp)
    # The epoch-1 key was made before the policy (bound to "none"): never escrowed.
    assert not report.foreign and not report.keys
    assert report.tampered == [
        "epoch 1: not escrowed under this policy (its key is bound to 'none'); "
        "its messages cannot be opened"
    ]


async def test_a_legal_order_needs_a_case_a_policy_and_a_legal_signer(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    signed = await install_policy(world)
    order = make_legal_order(LEGAL, signed.policy, case.id, "order 1", now_ms())
    elsewhere = make_legal_order(LEGAL, signed.policy, "case_none", "order 1", now_ms())
    with pytest.raises(NotFound, match="no such case"):
        await hub.disputes.open_legal(elsewhere)
    # Signed by a key the policy does not name (the hub's own, say): refused.
    rogue = msgspec.structs.replace(order, signer_sign_pk=bytes(ORG.verify_key))
    with pytest.raises(EscrowError, match="not the legal signer's"):
        await hub.disputes.open_legal(rogue)
    doc = await hub.disputes.open_legal(order)
    assert (doc.kind, doc.legal_order, doc.requester_id, doc.reason_ct, doc.order) == (
        "legal",
        "order 1",
        None,
        [],
        order,
    )
    [record] = await hub.disputes.all()
    assert (record.id, record.kind, record.requester_id) == (doc.request_id, "legal", None)
    # The case's client sees it on their case, with its reference; the counselor not.
    listed = await disputes.dispute_list(hub, client.caller, f.DisputeList(id="l"))
    assert [(d.request_id, d.kind, d.legal_order) for d in listed.disputes] == [
        (doc.request_id, "legal", "order 1")
    ]
    none = await disputes.dispute_list(hub, counselor.caller, f.DisputeList(id="m"))
    assert none.disputes == []


async def test_a_legal_order_needs_an_installed_policy(world: World) -> None:
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    unsigned = _unsigned()
    order = make_legal_order(LEGAL, unsigned.policy, case.id, "order 1", now_ms())
    with pytest.raises(NotFound, match="no escrow policy is installed"):
        await world.hub.disputes.open_legal(order)


def _unsigned() -> f.SignedEscrowPolicy:
    """A well-formed policy that is not installed (for the no-policy refusal)."""
    now = now_ms()
    box, sign = OFFICERS[0]
    policy = f.EscrowPolicy(
        version=1,
        officers=[
            f.EscrowOfficer(name="o", box_pk=bytes(box.public_key), sign_pk=bytes(sign.verify_key))
        ],
        threshold=1,
        not_before=now - DAY,
        not_after=now + DAY,
        org_sign_pk=bytes(ORG.verify_key),
        legal_signers=[f.LegalSigner(name="court", sign_pk=bytes(LEGAL.verify_key))],
    )
    return sign_policy(ORG, policy)


async def test_dispute_requests_per_case_are_capped(tmp_path: Path) -> None:
    config = hubs.test_config(tmp_path, max_disputes_per_case=2)
    db = await open_database(sqlite_url(tmp_path / "chat.db"), config.resolved_data_key())
    hub = Hub(config, db, config.server_key())
    await hub.start()
    try:
        world = World(hub)
        client, counselor = await world.person(), await world.person("counselor")
        case = await world.case(client, counselor)
        other_case = await world.case(client, counselor)
        # The client consented (issue 11: no request without consent), so what stops
        # the third request is the cap.
        signed = await install_policy(world, consenting=(client,))
        for _ in range(2):
            await disputes.dispute_request(hub, client.caller, request(client, case, signed))
        with pytest.raises(LimitExceeded, match="about this case"):
            await disputes.dispute_request(hub, client.caller, request(client, case, signed))
        # Another case has its own allowance.
        await disputes.dispute_request(hub, client.caller, request(client, other_case, signed))
        filed = await hub.disputes.of_client(client.id)
        assert [r.requester_id for r in filed] == [client.id] * 3
    finally:
        await hub.shutdown()
        await db.close()
