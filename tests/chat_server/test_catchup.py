"""Catching sessions up from the database after the bus may have lost events
(chat_server/catchup.py), on the real hub services over a real SQLite file, with nodes
joined in-process by a ``LocalNetwork`` (the bus's in-process implementation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from chat_server.bus import Envelope, LocalBus, LocalNetwork, Resync
from chat_server.catchup import catch_up_frames
from chat_server.hub import Hub
from protocol import frames as f
from protocol.clock import now_ms
from storage.engine import open_database, sqlite_url
from storage.records import CaseActivity, CaseRecord, NewMessage
from tests.helpers.hubs import test_config as hub_config
from tests.helpers.usecases import World
from tests.helpers.waiting import wait_until, within


class _Listener:
    """Another node on the network: records what it is told."""

    def __init__(self, network: LocalNetwork) -> None:
        self.bus = LocalBus("n2", network)
        self.heard: list[Envelope] = []

    async def start(self) -> None:
        await self.bus.start(self.heard.append, lambda since_ms: None)


@pytest.fixture
async def net_world(tmp_path: Path) -> AsyncIterator[tuple[World, _Listener]]:
    """A hub (node n1) joined to one other node (n2) by an in-process network."""
    network = LocalNetwork()
    config = hub_config(tmp_path, node_id="n1")
    db = await open_database(sqlite_url(tmp_path / "chat.db"), config.resolved_data_key())
    hub = Hub(config, db, config.server_key(), bus=LocalBus("n1", network))
    listener = _Listener(network)
    await listener.start()
    await hub.start()
    try:
        yield World(hub), listener
    finally:
        await hub.shutdown()
        await db.close()


def _count_rematches(hub: Hub) -> list[bool]:
    """The hub's matching after a reconnection, recorded instead of run."""
    rematched: list[bool] = []

    async def rematch() -> None:
        rematched.append(True)

    hub.catchup.after_reconnect = rematch
    return rematched


def test_the_frames_follow_the_order_of_what_happened() -> None:
    record = f.MessageRecord(
        case_id="k1",
        seq=7,
        epoch=2,
        sender_id="cl",
        client_msg_id="m",
        nonce=bytes(24),
        ciphertext=bytes(40),
        chain_hash=bytes(32),
        server_ts=5_000,
    )
    case = CaseRecord(
        id="k1",
        client_id="cl",
        counselor_id="co",
        state="closed",
        topic="anxiety",
        language="en",
        epoch=2,
        last_seq=7,
        chain_head=bytes(32),
        created_at=1_000,
        assigned_at=4_000,
        closed_at=6_000,
    )
    frames = catch_up_frames(CaseActivity(case, record, new_epoch=True), 3_000)
    assert [type(x).__name__ for x in frames] == [
        "CaseAssigned",
        "CaseKeyNew",
        "MsgNew",
        "CaseClosed",
    ]
    assert catch_up_frames(CaseActivity(case, None, new_epoch=False), 4_500) == [
        f.CaseClosed(case_id="k1")
    ]


async def test_a_reconnection_catches_local_sessions_up_and_tells_the_others(
    net_world: tuple[World, _Listener],
) -> None:
    world, listener = net_world
    hub = world.hub
    client, counselor, stranger = await world.client_counselor_stranger()
    case = await world.case(client, counselor)
    other_session = await world.second_session(client)
    since = now_ms()
    # Stored meanwhile by another node, whose wake-ups never arrived here.
    stored = await hub.db.messages.append_batch(
        [
            NewMessage(case.id, 1, counselor.id, f"m{i}", i.to_bytes(24, "big"), bytes(40))
            for i in range(3)
        ],
        now_ms(),
    )
    rematched = _count_rematches(hub)
    hub.catchup.on_reconnect(since + 10_000)  # the margin (10 s) reaches back to `since`
    await within(hub.catchup.caught_up.wait(), 5, "a catch-up pass")
    newest = f.MsgNew(message=stored[-1])  # type: ignore[arg-type]
    for peer in (client.peer, other_session, counselor.peer):
        assert peer.frames == [newest]  # the newest is enough: a gap makes clients sync
    assert stranger.peer.frames == []
    assert rematched == [True]
    # The other nodes are told their sessions may have missed this node's events.
    assert [e.event for e in listener.heard] == [Resync(since_ms=since)]
    assert hub.metrics.registry.get_sample_value("chat_catchups_total") == 1


async def test_a_resync_from_another_node_catches_up_without_rematching(
    net_world: tuple[World, _Listener],
) -> None:
    world, listener = net_world
    hub = world.hub
    client, counselor, _ = await world.client_counselor_stranger()
    since = now_ms()
    case = await world.case(client, counselor)  # assigned (and keyed) after `since`
    rematched = _count_rematches(hub)
    listener.bus.publish(Resync(since_ms=since))
    await within(hub.catchup.caught_up.wait(), 5, "a catch-up pass")
    assert [type(x).__name__ for x in client.peer.frames] == ["CaseAssigned", "CaseKeyNew"]
    assert client.peer.frames[0] == f.CaseAssigned(
        case=f.CaseInfo(
            case_id=case.id,
            client_id=client.id,
            counselor_id=counselor.id,
            state="assigned",
            topic="anxiety",
            language="en",
            epoch=1,
            last_seq=0,
            created_at=case.created_at,
        )
    )
    assert rematched == [] and listener.heard == []


async def test_a_publication_dropped_while_connected_is_announced(
    net_world: tuple[World, _Listener],
) -> None:
    world, listener = net_world
    before = now_ms()
    world.hub.catchup.publish_lost()
    world.hub.catchup.publish_lost()  # merged: one announcement
    await wait_until(lambda: listener.heard, "the Resync")
    (envelope,) = listener.heard
    assert isinstance(envelope.event, Resync)
    assert before - 10_000 <= envelope.event.since_ms <= now_ms() - 10_000


async def test_a_pass_that_fails_is_tried_again(net_world: tuple[World, _Listener]) -> None:
    world, _ = net_world
    hub = world.hub
    client, counselor, _ = await world.client_counselor_stranger()
    since = now_ms()
    await world.case(client, counselor)
    # The database cannot answer the catch-up's question for a while.
    async with hub.db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE case_keys RENAME TO case_keys_away"))
    hub.catchup.on_resync(since)
    await wait_until(lambda: hub.catchup.failures, "a failed pass")
    assert client.peer.frames == []
    async with hub.db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE case_keys_away RENAME TO case_keys"))
    await within(hub.catchup.caught_up.wait(), 5, "the pass that succeeds")
    assert [type(x).__name__ for x in client.peer.frames] == ["CaseAssigned", "CaseKeyNew"]
