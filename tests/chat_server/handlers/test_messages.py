"""The message use cases (chat_server/handlers/messages.py) without a socket: send is
acked after its commit and fanned out by the registry; sync, receipts, typing."""

from __future__ import annotations

import secrets

import pytest

from chat_server.handlers import messages
from protocol import crypto
from protocol import frames as f
from protocol.errors import Forbidden
from storage.records import EpochKeyRecord
from tests.helpers.usecases import Person, World


def send(case_id: str, sender: Person, *, epoch: int = 1, cmid: str | None = None) -> f.MsgSend:
    return f.MsgSend(
        id="r" + secrets.token_hex(3),
        case_id=case_id,
        epoch=epoch,
        client_msg_id=cmid or secrets.token_urlsafe(9),
        nonce=secrets.token_bytes(24),
        ciphertext=secrets.token_bytes(64),
    )


async def test_a_send_is_acked_after_its_commit_and_reaches_every_other_session(
    world: World,
) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    second = await world.second_session(client)
    frame = send(case.id, client)

    assert await messages.msg_send(hub, client.caller, frame) is None
    assert client.peer.frames == []  # nothing before the commit
    await hub.committer.drain()

    [ack] = client.peer.frames
    assert isinstance(ack, f.MsgAck) and (ack.id, ack.seq, ack.duplicate) == (frame.id, 1, False)
    for peer in (counselor.peer, second):
        [new] = peer.frames
        assert isinstance(new, f.MsgNew)
        m = new.message
        assert (m.seq, m.chain_hash, m.sender_id) == (1, ack.chain_hash, client.id)
        assert (m.nonce, m.ciphertext, m.client_msg_id) == (
            frame.nonce,
            frame.ciphertext,
            frame.client_msg_id,
        )
    # What was fanned out is exactly what was stored.
    assert await hub.db.messages.range(case.id, 0, 10) == [m]


async def test_acks_come_in_submission_order_across_batches(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    frames = [send(case.id, client) for _ in range(40)]
    for i, frame in enumerate(frames):
        await messages.msg_send(hub, client.caller, frame)
        if i % 7 == 0:
            await hub.committer.drain()  # some batches of one, some of many
    await hub.committer.drain()
    acks = client.peer.of(f.MsgAck)
    assert [a.id for a in acks] == [x.id for x in frames]
    assert [a.seq for a in acks] == list(range(1, 41))
    assert [n.message.seq for n in counselor.peer.of(f.MsgNew)] == list(range(1, 41))


async def test_an_identical_retry_is_acked_as_a_duplicate_and_not_fanned_out(
    world: World,
) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    frame = send(case.id, client)
    await messages.msg_send(hub, client.caller, frame)
    await hub.committer.drain()
    await messages.msg_send(hub, client.caller, f.MsgSend(**{**_fields(frame), "id": "again"}))
    changed = f.MsgSend(**{**_fields(frame), "id": "changed", "ciphertext": bytes(64)})
    await messages.msg_send(hub, client.caller, changed)
    await hub.committer.drain()

    first, retry, conflict = client.peer.frames
    assert isinstance(first, f.MsgAck) and isinstance(retry, f.MsgAck)
    assert (retry.id, retry.seq, retry.chain_hash, retry.duplicate) == (
        "again",
        1,
        first.chain_hash,
        True,
    )
    assert isinstance(conflict, f.ErrorFrame) and (conflict.id, conflict.code) == (
        "changed",
        "duplicate",
    )
    assert len(counselor.peer.of(f.MsgNew)) == 1


async def test_the_append_decides_case_state_and_epoch(world: World) -> None:
    """The handler checks only membership; the append refuses what the case no longer
    (or not yet) accepts, from the row it reads under its lock."""
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    waiting = await world.case(client)
    case = await world.case(client, counselor)
    await messages.msg_send(hub, client.caller, send(waiting.id, client))
    await messages.msg_send(hub, client.caller, send(case.id, client, epoch=2))
    await hub.committer.drain()
    await hub.db.cases.close(case.id, 1)  # as another hub would: this hub has no idea
    await messages.msg_send(hub, client.caller, send(case.id, client))
    await hub.committer.drain()
    assert [(e.code, e.message) for e in client.peer.of(f.ErrorFrame)] == [
        ("invalid", "no key has been deposited for this epoch"),  # waiting, no key yet
        ("invalid", "no key has been deposited for this epoch"),
        ("forbidden", "case is closed"),
    ]
    assert counselor.peer.frames == []


async def test_a_waiting_case_takes_its_clients_messages(world: World) -> None:
    """Issue 14: once the client deposited epoch 1 of its waiting case, its messages
    are stored (seq 1, 2) and its other sessions hear them; the counselor assigned
    later reads them with sync."""
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    waiting = await world.case(client)
    await hub.db.cases.add_epoch_key(
        EpochKeyRecord(
            case_id=waiting.id,
            epoch=1,
            creator_id=client.id,
            commitment=b"c" * 32,
            commitment_sig=b"s" * 64,
            seals={client.id: b"k" * 80},
            created_at=1,
        )
    )
    await messages.msg_send(hub, client.caller, send(waiting.id, client))
    await messages.msg_send(hub, client.caller, send(waiting.id, client))
    await hub.committer.drain()
    assert [a.seq for a in client.peer.of(f.MsgAck)] == [1, 2]
    await hub.db.cases.assign(waiting.id, counselor.id, 2)
    result = await messages.sync(hub, counselor.caller, f.Sync(id="s", case_id=waiting.id))
    assert [m.seq for m in result.messages] == [1, 2]


async def test_a_stranger_is_refused_before_anything_is_queued(world: World) -> None:
    hub = world.hub
    client, counselor, stranger = await world.client_counselor_stranger()
    case = await world.case(client, counselor)
    for use_case, frame in [
        (messages.msg_send, send(case.id, stranger)),
        (messages.msg_send, send("case_unknown", stranger)),
        (messages.sync, f.Sync(id="s", case_id=case.id)),
        (
            messages.receipt,
            f.Receipt(
                id="r",
                case_id=case.id,
                kind="read",
                up_to_seq=1,
                chain_hash=bytes(32),
                sig=bytes(64),
            ),
        ),
        (messages.typing, f.Typing(id="t", case_id=case.id, active=True)),
    ]:
        with pytest.raises(Forbidden, match="not a participant of this case"):
            await use_case(hub, stranger.caller, frame)  # type: ignore[operator]
    await hub.committer.drain()
    assert stranger.peer.frames == [] and await hub.db.messages.range(case.id, 0, 5) == []


async def test_sync_pages_in_seq_order(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    for _ in range(7):
        await messages.msg_send(hub, client.caller, send(case.id, client))
    await hub.committer.drain()
    page = await messages.sync(hub, counselor.caller, f.Sync(id="a", case_id=case.id, limit=5))
    assert [m.seq for m in page.messages] == [1, 2, 3, 4, 5]
    assert (page.last_seq, page.has_more) == (7, True)
    rest = await messages.sync(hub, counselor.caller, f.Sync(id="b", case_id=case.id, after_seq=5))
    assert [m.seq for m in rest.messages] == [6, 7] and not rest.has_more


async def test_receipts_advance_and_only_news_is_published(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    for _ in range(4):
        await messages.msg_send(hub, client.caller, send(case.id, client))
    await hub.committer.drain()
    counselor.peer.frames.clear()
    client.peer.frames.clear()
    stored = await hub.db.messages.range(case.id, 0, 10)
    ok = await messages.receipt(
        hub, counselor.caller, signed_receipt(counselor, case.id, stored[3])
    )
    assert isinstance(ok, f.Ok)
    [new] = client.peer.of(f.ReceiptNew)
    assert (new.account_id, new.kind, new.up_to_seq) == (counselor.id, "read", 4)
    assert new.chain_hash == stored[3].chain_hash  # the signed receipt, relayed as signed
    crypto.verify_receipt(
        counselor.identity.sign_pk,
        case.id,
        f.SignedReceipt(
            account_id=new.account_id,
            kind=new.kind,
            up_to_seq=new.up_to_seq,
            chain_hash=new.chain_hash,
            sig=new.sig,
        ),
    )
    # A lower receipt is stored as the maximum and not announced again.
    await messages.receipt(hub, counselor.caller, signed_receipt(counselor, case.id, stored[1]))
    assert len(client.peer.of(f.ReceiptNew)) == 1
    assert counselor.peer.frames == []  # never to the sender's own session
    # Sync returns the latest signed receipt of each participant and kind.
    synced = await messages.sync(hub, client.caller, f.Sync(id="s", case_id=case.id))
    assert [(r.account_id, r.up_to_seq) for r in synced.receipts] == [(counselor.id, 4)]


def signed_receipt(person: Person, case_id: str, record: f.MessageRecord) -> f.Receipt:
    return f.Receipt(
        id="r-" + str(record.seq),
        case_id=case_id,
        kind="read",
        up_to_seq=record.seq,
        chain_hash=record.chain_hash,
        sig=crypto.sign_receipt(person.identity, case_id, "read", record.seq, record.chain_hash),
    )


async def test_typing_needs_an_open_case_read_fresh(world: World) -> None:
    hub = world.hub
    client, counselor = await world.person(), await world.person("counselor")
    case = await world.case(client, counselor)
    waiting = await world.case(client)
    typing = f.Typing(id="t", case_id=case.id, active=True)
    assert isinstance(await messages.typing(hub, client.caller, typing), f.Ok)
    [new] = counselor.peer.of(f.TypingNew)
    assert (new.account_id, new.active) == (client.id, True)
    with pytest.raises(Forbidden, match="not assigned"):
        await messages.typing(hub, client.caller, f.Typing(id="w", case_id=waiting.id, active=True))
    await hub.db.cases.close(case.id, 1)  # on another hub
    for _ in range(2):  # read fresh, then known closed
        with pytest.raises(Forbidden, match="case is closed"):
            await messages.typing(hub, client.caller, typing)
    assert len(counselor.peer.of(f.TypingNew)) == 1


def _fields(frame: f.MsgSend) -> dict[str, object]:
    return {
        "id": frame.id,
        "case_id": frame.case_id,
        "epoch": frame.epoch,
        "client_msg_id": frame.client_msg_id,
        "nonce": frame.nonce,
        "ciphertext": frame.ciphertext,
    }
