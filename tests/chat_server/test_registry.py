"""The session registry (chat_server/registry.py): who is online, the per-account
session cap across nodes, publish encoding once and reaching other nodes, and
deliver's answers. Several nodes are joined in-process by a ``LocalNetwork`` (the
bus's in-process implementation, same interface as Redis's)."""

from __future__ import annotations

import asyncio

from chat_server.bus import BUS_VERSION, Deliver, Envelope, Evict, LocalBus, LocalNetwork
from chat_server.presence import LocalPresence, SessionPlace, SessionRef
from chat_server.registry import SessionRegistry
from protocol import codec
from protocol import frames as f
from protocol.errors import CloseCode, Forbidden
from storage.records import AlreadyStored
from tests.helpers.usecases import RecordingPeer, account

RECORD = f.MessageRecord(
    case_id="k1",
    seq=4,
    epoch=1,
    sender_id="cl",
    client_msg_id="m1",
    nonce=bytes(24),
    ciphertext=bytes(40),
    chain_hash=bytes(range(32)),
    server_ts=5,
)


async def test_attach_detach_and_who_is_online() -> None:
    presence = LocalPresence("n1")
    registry = SessionRegistry(8, node_id="n1", presence=presence)
    co1, co2, cl = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    registry.connect(co1)
    await registry.attach(co1, account("co", "counselor"))
    await registry.attach(co2, account("co", "counselor"))
    await registry.attach(cl, account("cl"))
    assert await presence.online_counselors() == {"co"}
    assert sorted(registry.local_accounts()) == ["cl", "co"]
    await registry.detach(co1)
    assert await presence.online_counselors() == {"co"}  # one session is left
    await registry.detach(co2)
    await registry.detach(co2)  # idempotent
    assert await presence.online_counselors() == frozenset()
    assert await presence.session_count("co") == 0
    await registry.detach(RecordingPeer("never attached"))


async def test_past_the_limit_the_oldest_session_is_replaced() -> None:
    registry = SessionRegistry(2)
    peers = [RecordingPeer(f"s{i}") for i in range(3)]
    for peer in peers:
        await registry.attach(peer, account("cl"))
    assert peers[0].closed == (CloseCode.REPLACED, "replaced by a newer session")
    assert peers[1].closed is None and peers[2].closed is None
    await registry.detach(peers[0])  # its session ends later: nothing else changes
    registry.publish(["cl"], f.CaseClosed(case_id="k1"))
    assert [len(p.frames) for p in peers] == [0, 1, 1]


async def test_publish_reaches_every_session_but_the_excluded_one() -> None:
    registry = SessionRegistry(8)
    a, b, c = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    await registry.attach(a, account("cl"))
    await registry.attach(b, account("cl"))
    await registry.attach(c, account("co", "counselor"))
    registry.publish(["cl", "co", None, "offline", "cl"], f.CaseClosed(case_id="k1"), exclude=a)
    assert a.frames == [] and b.frames == c.frames == [f.CaseClosed(case_id="k1")]


async def _nodes(*names: str) -> list[SessionRegistry]:
    """Registries of several nodes joined by one in-process network."""
    network = LocalNetwork()
    registries = []
    for name in names:
        bus = LocalBus(name, network)
        registry = SessionRegistry(8, node_id=name, bus=bus)
        await bus.start(registry.on_event, lambda since_ms: None)
        registries.append(registry)
    return registries


async def test_publish_and_deliver_reach_sessions_on_other_nodes() -> None:
    n1, n2 = await _nodes("n1", "n2")
    sender, here = RecordingPeer("a"), RecordingPeer("b")
    there, counselor = RecordingPeer("c"), RecordingPeer("d")
    await n1.attach(sender, account("cl"))
    await n1.attach(here, account("cl"))
    await n2.attach(there, account("cl"))
    await n2.attach(counselor, account("co", "counselor"))
    n1.deliver(sender, "r1", ("cl", "co"), RECORD)
    n1.publish(["co"], f.TypingNew(case_id="k1", account_id="cl", active=True))
    new = f.MsgNew(message=RECORD)
    assert here.frames == [new]  # at once, on the sender's node
    assert await counselor.next(f.TypingNew) == f.TypingNew(
        case_id="k1", account_id="cl", active=True
    )
    assert there.frames == [new] and counselor.frames[0] == new
    assert len(sender.frames) == 1  # the ack; no copy of its own message comes back


async def test_a_newer_session_on_another_node_evicts_through_the_bus() -> None:
    n1, n2 = await _nodes("n1", "n2")
    old = RecordingPeer("old")
    await n1.attach(old, account("cl"))
    # What a shared presence decides for a session opened on n2 past the cap.
    n2.on_event(Envelope(BUS_VERSION, "n1", Evict("cl", ("unknown-session",))))
    assert old.closed is None
    n1.on_event(Envelope(BUS_VERSION, "n2", Evict("cl", ("old",))))
    assert old.closed == (CloseCode.REPLACED, "replaced by a newer session")


class _CapTwoElsewhere(LocalPresence):
    """Presence that has one older session of every account on node ``n9``."""

    async def session_opened(self, account_id: str, session_id: str, cap: int) -> SessionPlace:
        await super().session_opened(account_id, session_id, cap)
        return SessionPlace(count=cap, evict=(SessionRef("n9", "far-away"),))


async def test_evictions_on_other_nodes_are_published_to_those_nodes() -> None:
    network = LocalNetwork()
    seen: list[Envelope] = []
    far = LocalBus("n9", network)
    await far.start(seen.append, lambda since_ms: None)
    bus = LocalBus("n1", network)
    registry = SessionRegistry(2, node_id="n1", bus=bus, presence=_CapTwoElsewhere("n1"))
    await bus.start(registry.on_event, lambda since_ms: None)
    await registry.attach(RecordingPeer("new"), account("cl"))
    await asyncio.sleep(0)  # the in-process network delivers on the next loop iteration
    assert [e.event for e in seen] == [Evict("cl", ("far-away",))]


async def test_a_publication_the_bus_drops_while_connected_is_reported() -> None:
    class FullBus(LocalBus):
        def publish(self, event: object, *, nodes: object = None) -> bool:
            self.stats.dropped_overflow += 1
            return False

    bus = FullBus("n1")
    registry = SessionRegistry(8, node_id="n1", bus=bus)
    await bus.start(registry.on_event, lambda since_ms: None)
    lost: list[bool] = []
    registry.on_publish_lost = lambda: lost.append(True)
    registry.publish(["cl"], f.CaseClosed(case_id="k1"))
    assert lost == [True]
    await bus.close()  # disconnected: the reconnection's catch-up covers it instead
    registry.publish(["cl"], f.CaseClosed(case_id="k1"))
    assert lost == [True]


async def test_a_deliver_from_another_node_is_pushed_to_local_sessions_only() -> None:
    registry = SessionRegistry(8, node_id="n1")
    peer = RecordingPeer("a")
    await registry.attach(peer, account("cl"))
    data = codec.encode(f.CaseClosed(case_id="k1"))
    registry.on_event(Envelope(BUS_VERSION, "n2", Deliver(("cl", "nobody-here"), (data, data))))
    assert peer.frames == [f.CaseClosed(case_id="k1")] * 2


async def test_deliver_answers_the_sender_and_fans_out_only_what_is_new() -> None:
    registry = SessionRegistry(8)
    sender, other, counselor = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    await registry.attach(sender, account("cl"))
    await registry.attach(other, account("cl"))
    await registry.attach(counselor, account("co", "counselor"))
    registry.deliver(sender, "r1", ("cl", "co"), RECORD)
    registry.deliver(sender, "r2", ("cl", "co"), AlreadyStored(RECORD))
    registry.deliver(sender, "r3", ("cl", "co"), Forbidden("case is closed"))
    assert sender.frames == [
        f.MsgAck(id="r1", case_id="k1", client_msg_id="m1", seq=4, chain_hash=RECORD.chain_hash),
        f.MsgAck(
            id="r2",
            case_id="k1",
            client_msg_id="m1",
            seq=4,
            chain_hash=RECORD.chain_hash,
            duplicate=True,
        ),
        f.ErrorFrame(code="forbidden", message="case is closed", id="r3"),
    ]
    assert other.frames == counselor.frames == [f.MsgNew(message=RECORD)]


async def test_close_all_closes_attached_and_unattached_connections() -> None:
    registry = SessionRegistry(8)
    attached, bare = RecordingPeer("a"), RecordingPeer("b")
    registry.connect(attached)
    registry.connect(bare)
    await registry.attach(attached, account("cl"))
    registry.close_all(CloseCode.GOING_AWAY, "bye")
    assert attached.closed == bare.closed == (CloseCode.GOING_AWAY, "bye")
