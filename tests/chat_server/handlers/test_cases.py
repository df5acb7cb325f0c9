"""The case use cases (chat_server/handlers/cases.py) without a socket: open and match,
key epochs, close, the key directory; state is read fresh, never from a stale cache."""

from __future__ import annotations

import pytest

from chat_server.handlers import cases
from protocol import crypto
from protocol import frames as f
from protocol.errors import Conflict, Forbidden, InvalidFrame
from storage.records import CaseRecord
from tests.helpers.usecases import Person, World


def deposit(
    case: CaseRecord, creator: Person, holders: list[Person], epoch: int
) -> f.CaseKeyDeposit:
    key = crypto.new_case_key()
    commitment = crypto.key_commitment(key, case.id, epoch)
    return f.CaseKeyDeposit(
        id=f"k{epoch}",
        case_id=case.id,
        epoch=epoch,
        commitment=commitment,
        commitment_sig=crypto.sign_commitment(
            creator.identity, case.id, epoch, commitment, escrow=crypto.NO_ESCROW
        ),
        escrow=crypto.NO_ESCROW,
        seals=[
            f.KeySeal(account_id=p.id, sealed=crypto.seal_case_key(key, p.identity.box_pk))
            for p in holders
        ],
    )


async def test_open_assigns_to_an_online_counselor_and_tells_both(world: World) -> None:
    hub = world.hub
    counselor = await world.person("counselor", languages=("en", "ur"))
    client = await world.person()
    opened = await cases.case_open(
        hub, client.caller, f.CaseOpen(id="o", topic="anxiety", language="ur")
    )
    assert opened.case.state == "assigned" and opened.case.counselor_id == counselor.id
    for peer in (client.peer, counselor.peer):
        [assigned] = peer.of(f.CaseAssigned)
        assert assigned.case == opened.case
    with pytest.raises(Forbidden, match="only clients open cases"):
        await cases.case_open(hub, counselor.caller, f.CaseOpen(id="x", topic="a", language="en"))


async def test_a_case_waits_until_a_counselor_is_online(world: World) -> None:
    hub = world.hub
    client = await world.person()
    opened = await cases.case_open(
        hub, client.caller, f.CaseOpen(id="o", topic="grief", language="en")
    )
    assert opened.case.state == "waiting" and client.peer.frames == []
    counselor = await world.person("counselor")  # attached to the registry: online
    await hub.casebook.match_waiting()
    [assigned] = counselor.peer.of(f.CaseAssigned)
    assert (assigned.case.case_id, assigned.case.counselor_id) == (
        opened.case.case_id,
        counselor.id,
    )
    assert client.peer.of(f.CaseAssigned) == [assigned]


async def test_key_epochs_advance_one_at_a_time(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)  # epoch 1 exists
    ok = await cases.case_key(
        hub, counselor.caller, deposit(case, counselor, [client, counselor], 2)
    )
    assert isinstance(ok, f.Ok)
    [new] = client.peer.of(f.CaseKeyNew)
    assert (new.case_id, new.epoch) == (case.id, 2) and counselor.peer.frames == []
    with pytest.raises(Conflict, match="epoch already has a key"):
        await cases.case_key(hub, client.caller, deposit(case, client, [client, counselor], 2))
    with pytest.raises(InvalidFrame, match="must follow"):
        await cases.case_key(hub, client.caller, deposit(case, client, [client, counselor], 4))
    with pytest.raises(InvalidFrame, match="one sealed key per participant"):
        await cases.case_key(hub, counselor.caller, deposit(case, counselor, [counselor], 3))
    with pytest.raises(InvalidFrame, match="one sealed key per participant"):
        await cases.case_key(hub, client.caller, deposit(case, client, [client, client], 3))
    forged = deposit(case, counselor, [client, counselor], 3)  # signed by someone else
    with pytest.raises(InvalidFrame, match="commitment signature"):
        await cases.case_key(hub, client.caller, forged)
    result = await cases.case_keys(hub, client.caller, f.CaseKeys(id="q", case_id=case.id))
    assert [k.epoch for k in result.keys] == [1, 2]
    assert [k.creator_id for k in result.keys] == [client.id, counselor.id]


async def test_no_key_deposit_once_another_hub_closed_the_case(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    await hub.casebook.participants(case.id, client.id)  # cached as assigned here
    await hub.db.cases.close(case.id, 1)  # another hub closes it
    with pytest.raises(Forbidden, match="case is closed"):
        await cases.case_key(hub, client.caller, deposit(case, client, [client, counselor], 2))


async def test_waiting_case_key_then_share_with_the_assigned_counselor(world: World) -> None:
    """Issue 14: the client deposits epoch 1 of its waiting case sealed to itself, then
    shares it with the counselor assigned since; every other share is refused, typed."""
    hub = world.hub
    client, counselor, stranger = await world.client_counselor_stranger()
    waiting = await world.case(client)
    assert waiting.state == "waiting"
    first = deposit(waiting, client, [client], 1)
    assert isinstance(await cases.case_key(hub, client.caller, first), f.Ok)
    key = crypto.new_case_key()

    def share(epoch: int, to: Person) -> f.CaseKeyShare:
        sealed = crypto.seal_case_key(key, to.identity.box_pk)
        seal = f.KeySeal(account_id=to.id, sealed=sealed)
        return f.CaseKeyShare(id="s", case_id=waiting.id, epoch=epoch, seal=seal)

    with pytest.raises(Forbidden, match="no counselor to share"):
        await cases.case_key_share(hub, client.caller, share(1, counselor))
    await hub.db.cases.assign(waiting.id, counselor.id, 2)
    with pytest.raises(Forbidden, match="only the case's client"):
        await cases.case_key_share(hub, counselor.caller, share(1, counselor))
    with pytest.raises(Forbidden, match="not a participant"):
        await cases.case_key_share(hub, stranger.caller, share(1, counselor))
    with pytest.raises(InvalidFrame, match="for the case's counselor"):
        await cases.case_key_share(hub, client.caller, share(1, stranger))
    with pytest.raises(InvalidFrame, match="the epoch has no key"):
        await cases.case_key_share(hub, client.caller, share(2, counselor))
    before = await cases.case_keys(hub, counselor.caller, f.CaseKeys(id="q", case_id=waiting.id))
    assert before.keys == []
    assert isinstance(await cases.case_key_share(hub, client.caller, share(1, counselor)), f.Ok)
    [told] = counselor.peer.of(f.CaseKeyNew)
    assert (told.case_id, told.epoch) == (waiting.id, 1)
    [got] = (
        await cases.case_keys(hub, counselor.caller, f.CaseKeys(id="q", case_id=waiting.id))
    ).keys
    assert (got.epoch, got.creator_id) == (1, client.id)
    assert sorted(got.sealed_for) == sorted([client.id, counselor.id])
    assert got.sealed == share(1, counselor).seal.sealed or len(got.sealed) == 80
    with pytest.raises(Conflict, match="already holds a seal"):
        await cases.case_key_share(hub, client.caller, share(1, counselor))
    # A key the counselor made is theirs to seal: the client cannot add seals to it.
    second = deposit(waiting, counselor, [client, counselor], 2)
    await cases.case_key(hub, counselor.caller, second)
    with pytest.raises(Forbidden, match="only the key's creator"):
        await cases.case_key_share(hub, client.caller, share(2, counselor))


async def test_close_is_announced_once(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    close = f.CaseClose(id="c", case_id=case.id)
    assert isinstance(await cases.case_close(hub, counselor.caller, close), f.Ok)
    for peer in (client.peer, counselor.peer):
        assert peer.of(f.CaseClosed) == [f.CaseClosed(case_id=case.id)]
    assert isinstance(await cases.case_close(hub, client.caller, close), f.Ok)
    assert len(client.peer.of(f.CaseClosed)) == 1
    # A close by another hub first: this hub answers ok and announces nothing.
    other = await world.case(client, counselor)
    await hub.casebook.participants(other.id, client.id)
    await hub.db.cases.close(other.id, 1)
    await cases.case_close(hub, client.caller, f.CaseClose(id="d", case_id=other.id))
    assert len(client.peer.of(f.CaseClosed)) == 1
    listed = await cases.case_list(hub, client.caller, f.CaseList(id="l"))
    assert {c.state for c in listed.cases} == {"closed"}


async def test_the_directory_shows_case_participants_only(world: World) -> None:
    hub = world.hub
    client, counselor, stranger = await world.client_counselor_stranger()
    await world.case(client, counselor)
    result = await cases.directory_get(
        hub, client.caller, f.DirectoryGet(id="d", account_ids=[counselor.id, client.id])
    )
    assert {(e.account_id, e.sign_pk) for e in result.entries} == {
        (counselor.id, counselor.identity.sign_pk),
        (client.id, client.identity.sign_pk),
    }
    with pytest.raises(Forbidden, match="visible only to case participants"):
        await cases.directory_get(
            hub, client.caller, f.DirectoryGet(id="e", account_ids=[stranger.id])
        )
