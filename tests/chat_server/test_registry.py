"""The session registry (chat_server/registry.py): who is online, the per-account
session limit, publish encoding once, and deliver's answers."""

from __future__ import annotations

from chat_server.registry import SessionRegistry
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


def test_attach_detach_and_who_is_online() -> None:
    registry = SessionRegistry(8)
    co1, co2, cl = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    registry.connect(co1)
    registry.attach(co1, account("co", "counselor"))
    registry.attach(co2, account("co", "counselor"))
    registry.attach(cl, account("cl"))
    assert [a.id for a in registry.online_counselors()] == ["co"]
    registry.detach(co1)
    assert [a.id for a in registry.online_counselors()] == ["co"]
    registry.detach(co2)
    registry.detach(co2)  # idempotent
    assert registry.online_counselors() == []
    registry.detach(RecordingPeer("never attached"))


def test_past_the_limit_the_oldest_session_is_replaced() -> None:
    registry = SessionRegistry(2)
    peers = [RecordingPeer(f"s{i}") for i in range(3)]
    for peer in peers:
        registry.attach(peer, account("cl"))
    assert peers[0].closed == (CloseCode.REPLACED, "replaced by a newer session")
    assert peers[1].closed is None and peers[2].closed is None
    registry.detach(peers[0])  # its session ends later: nothing else changes
    registry.publish(["cl"], f.CaseClosed(case_id="k1"))
    assert [len(p.frames) for p in peers] == [0, 1, 1]


def test_publish_reaches_every_session_but_the_excluded_one() -> None:
    registry = SessionRegistry(8)
    a, b, c = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    registry.attach(a, account("cl"))
    registry.attach(b, account("cl"))
    registry.attach(c, account("co", "counselor"))
    registry.publish(["cl", "co", None, "offline", "cl"], f.CaseClosed(case_id="k1"), exclude=a)
    assert a.frames == [] and b.frames == c.frames == [f.CaseClosed(case_id="k1")]


def test_deliver_answers_the_sender_and_fans_out_only_what_is_new() -> None:
    registry = SessionRegistry(8)
    sender, other, counselor = RecordingPeer("a"), RecordingPeer("b"), RecordingPeer("c")
    registry.attach(sender, account("cl"))
    registry.attach(other, account("cl"))
    registry.attach(counselor, account("co", "counselor"))
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


def test_close_all_closes_attached_and_unattached_connections() -> None:
    registry = SessionRegistry(8)
    attached, bare = RecordingPeer("a"), RecordingPeer("b")
    registry.connect(attached)
    registry.connect(bare)
    registry.attach(attached, account("cl"))
    registry.close_all(CloseCode.GOING_AWAY, "bye")
    assert attached.closed == bare.closed == (CloseCode.GOING_AWAY, "bye")
