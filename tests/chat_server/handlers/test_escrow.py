"""The escrow rules of ``case.key`` and ``case.capsule`` (chat_server/handlers/escrow.py)
without a socket: a key's signed escrow binding must be the installed policy (or "none"
without one), the case's client must have consented to it before the key is made, and
a capsule is accepted only for a key bound to the installed policy and made after that
consent. So nothing made before a policy, or under another one, is escrowed under it."""

from __future__ import annotations

import msgspec
import pytest

from chat_server.handlers import cases, escrow
from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import ConsentRequired, InvalidFrame
from protocol.escrow import make_capsule, policy_fingerprint, sign_consent, sign_policy
from storage.consents import ConsentRecord
from storage.records import CaseRecord
from tests.helpers.escrow_factory import ORG, make_policy, officers
from tests.helpers.usecases import Person, World

DAY = 86_400_000


async def install(world: World) -> f.SignedEscrowPolicy:
    """A 2-of-3 policy in force now, installed."""
    now = now_ms()
    template = make_policy(officers(3), 2).policy
    policy = msgspec.structs.replace(template, not_before=now - DAY, not_after=now + DAY)
    signed = sign_policy(ORG, policy)
    await world.hub.db.escrow.install(
        policy_fingerprint(policy), msgspec.json.encode(signed), 1, now
    )
    return signed


async def consent(world: World, client: Person, signed: f.SignedEscrowPolicy, at: int) -> None:
    fp = policy_fingerprint(signed.policy)
    sig = sign_consent(client.identity, client.id, 1, fp)
    assert await world.hub.db.consents.record(ConsentRecord(client.id, 1, fp, sig, at))


def deposit(
    case: CaseRecord,
    creator: Person,
    holders: list[Person],
    epoch: int,
    binding: str,
    signed: f.SignedEscrowPolicy | None = None,
) -> tuple[f.CaseKeyDeposit, bytes]:
    key = crypto.new_case_key()
    commitment = crypto.key_commitment(key, case.id, epoch)
    extra: dict[str, object] = {}
    if signed is not None:
        extra["capsules"] = [make_capsule(signed.policy, case.id, epoch, key)]
    frame = f.CaseKeyDeposit(
        id=f"k{epoch}",
        case_id=case.id,
        epoch=epoch,
        commitment=commitment,
        commitment_sig=crypto.sign_commitment(
            creator.identity, case.id, epoch, commitment, escrow=binding
        ),
        escrow=binding,
        seals=[
            f.KeySeal(account_id=p.id, sealed=crypto.seal_case_key(key, p.identity.box_pk))
            for p in holders
        ],
        **extra,  # type: ignore[arg-type]
    )
    return frame, key


async def test_case_key_binding_rules(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor, key=False)
    both = [client, counselor]
    # Without a policy a key is bound to "none", never to a policy.
    signed = make_policy(officers(3), 2)
    fp = policy_fingerprint(signed.policy)
    frame, _ = deposit(case, client, both, 1, fp)
    with pytest.raises(InvalidFrame, match='bind the key to "none"'):
        await cases.case_key(hub, client.caller, frame)
    frame, _ = deposit(case, client, both, 1, crypto.NO_ESCROW)
    await cases.case_key(hub, client.caller, frame)

    signed = await install(world)
    fp = policy_fingerprint(signed.policy)
    # With a policy: not "none", not another policy, and not before the client consents.
    for binding in (crypto.NO_ESCROW, " ".join(["abcd"] * 10)):
        frame, _ = deposit(case, counselor, both, 2, binding, signed)
        with pytest.raises(InvalidFrame, match="bound to the installed escrow policy"):
            await cases.case_key(hub, counselor.caller, frame)
    frame, _ = deposit(case, counselor, both, 2, fp, signed)
    with pytest.raises(ConsentRequired, match="client has not accepted"):
        await cases.case_key(hub, counselor.caller, frame)
    await consent(world, client, signed, now_ms())
    bare, _ = deposit(case, counselor, both, 2, fp)
    with pytest.raises(InvalidFrame, match="needs an escrow capsule"):
        await cases.case_key(hub, counselor.caller, bare)
    await cases.case_key(hub, counselor.caller, frame)
    stored = await hub.db.cases.epoch_key(case.id, 2)
    assert stored is not None and stored.escrow == fp
    old = await hub.db.cases.epoch_key(case.id, 1)
    assert old is not None and old.escrow == crypto.NO_ESCROW


async def test_capsules_only_under_the_binding_and_after_consent(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    signed = await install(world)
    fp = policy_fingerprint(signed.policy)
    # Epoch 1 of one case was made before the policy ("none"); of another, under it but
    # (as the database says) before the client consented.
    early = await world.case(client, counselor, escrow=crypto.NO_ESCROW)
    later = await world.case(client, counselor, escrow=fp)
    await consent(world, client, signed, now_ms() + 60_000)
    for case in (early, later):
        key = crypto.new_case_key()  # the hub cannot tell; the binding decides
        capsule = make_capsule(signed.policy, case.id, 1, key)
        request = f.CaseCapsule(id="c", case_id=case.id, epoch=1, capsule=capsule)
        words = "not bound to the installed" if case is early else "before the client consented"
        with pytest.raises(InvalidFrame, match=words):
            await escrow.case_capsule(hub, counselor.caller, request)
    assert await hub.db.escrow.capsules_for(early.id) == []
    assert await hub.db.escrow.capsules_for(later.id) == []
