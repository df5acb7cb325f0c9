"""chat_server/bus.py: the cross-node event bus, on the real Redis and on Redis servers
this test starts, stops, pauses and restarts itself (never the machine's)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio

from chat_server.bus import (
    BUS_VERSION,
    MAX_ENVELOPE_BYTES,
    CaseChanged,
    Deliver,
    Envelope,
    Evict,
    LocalBus,
    LocalNetwork,
    PresenceChanged,
    RedisBus,
    Resync,
    bundle,
    decode_envelope,
    decode_payload,
    encode_envelope,
)
from chat_server.redis_client import RedisSettings, backoff_delay
from tests.helpers.hubs import free_port
from tests.helpers.redis_server import RedisServer, own_redis
from tests.helpers.waiting import wait_until


class Inbox:
    """Collects what a bus hands to its callbacks, so tests can await it."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Envelope] = asyncio.Queue()
        self.reconnects = 0
        self.reconnected = asyncio.Event()
        self.gaps_since: list[int] = []

    def on_event(self, envelope: Envelope) -> None:
        self.events.put_nowait(envelope)

    def on_reconnect(self, since_ms: int) -> None:
        self.gaps_since.append(since_ms)
        self.reconnects += 1
        self.reconnected.set()

    async def next(self, timeout: float = 3.0) -> Envelope:
        return await asyncio.wait_for(self.events.get(), timeout)


def deliver(n: int) -> Deliver:
    return Deliver(accounts=("acc-1", "acc-2"), frames=(b'{"type":"msg.new","n":%d}' % n,))


@pytest.fixture
def settings(redis_url: str, redis_prefix: str) -> RedisSettings:
    # One bus namespace per test: buses of other tests never hear these events.
    return RedisSettings(redis_url, prefix=f"{redis_prefix}{random.getrandbits(32):x}:")


@pytest.fixture
async def bus_pair(
    settings: RedisSettings,
) -> AsyncIterator[tuple[RedisBus, Inbox, RedisBus, Inbox]]:
    a, b = RedisBus(settings, "node-a"), RedisBus(settings, "node-b")
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a.on_event, inbox_a.on_reconnect)
    await b.start(inbox_b.on_event, inbox_b.on_reconnect)
    assert a.connected and b.connected
    try:
        yield a, inbox_a, b, inbox_b
    finally:
        await a.close()
        await b.close()


# -- envelopes and back-off (no network) ---------------------------------------------


def test_every_event_kind_round_trips() -> None:
    events = [
        deliver(1),
        CaseChanged(case_id="case-1"),
        PresenceChanged(account_id="acc-9", online=True),
        Evict(account_id="acc-9", session_ids=("s1", "s2")),
        Resync(since_ms=1_700_000_000_000),
    ]
    for event in events:
        envelope = decode_envelope(encode_envelope("node-a", event))
        assert envelope == Envelope(BUS_VERSION, "node-a", event)


def test_envelopes_for_one_channel_travel_in_bundles_that_keep_their_order() -> None:
    raws = [encode_envelope("node-a", deliver(n)) for n in range(40)]
    (payload,) = bundle(raws)
    assert [e.event for e in decode_payload(payload)] == [deliver(n) for n in range(40)]
    assert bundle(raws[:1]) == raws[:1]  # one envelope travels alone
    assert decode_payload(raws[0]) == [decode_envelope(raws[0])]
    big = [
        encode_envelope("node-a", Deliver(accounts=("a",), frames=(bytes(100_000),)))
        for _ in range(12)
    ]
    payloads = bundle(big)
    assert len(payloads) == 3 and all(len(p) <= MAX_ENVELOPE_BYTES for p in payloads)
    assert sum(len(decode_payload(p)) for p in payloads) == 12
    stale = msgspec.msgpack.encode(
        {"v": BUS_VERSION - 1, "node": "n", "event": {"type": "case", "case_id": "c"}}
    )
    with pytest.raises(ValueError, match="version"):
        decode_payload(bundle([raws[0], stale])[0])


def test_envelopes_this_node_cannot_act_on_are_refused() -> None:
    other_version = msgspec.msgpack.encode(
        {"v": BUS_VERSION + 1, "node": "n", "event": {"type": "case", "case_id": "c"}}
    )
    unknown_kind = msgspec.msgpack.encode(
        {"v": BUS_VERSION, "node": "n", "event": {"type": "reboot"}}
    )
    for raw in (other_version, unknown_kind, b"\xc1garbage", b"x" * (MAX_ENVELOPE_BYTES + 1)):
        with pytest.raises(ValueError):
            decode_envelope(raw)


def test_an_added_optional_field_is_still_understood() -> None:
    """A newer node may add an optional field without bumping the version."""
    raw = msgspec.msgpack.encode(
        {"v": BUS_VERSION, "node": "n", "event": {"type": "case", "case_id": "c", "why": 1}}
    )
    assert decode_envelope(raw).event == CaseChanged(case_id="c")


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, base_s=0.1, cap_s=2.0, rng=rng) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] >= 1.0  # reached the cap's lower half, no further
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not lockstep
    assert backoff_delay(10_000, base_s=0.1, cap_s=2.0) <= 2.0  # no overflow


# -- the in-process bus --------------------------------------------------------------


async def test_local_bus_delivers_to_the_others_and_not_to_itself() -> None:
    network = LocalNetwork()
    buses = {name: LocalBus(name, network) for name in ("a", "b", "c")}
    inboxes = {name: Inbox() for name in buses}
    for name, bus in buses.items():
        await bus.start(inboxes[name].on_event, inboxes[name].on_reconnect)

    assert buses["a"].publish(deliver(1))
    assert (await inboxes["b"].next()).event == deliver(1)
    assert (await inboxes["c"].next()).event == deliver(1)
    assert buses["a"].publish(CaseChanged(case_id="k"), nodes=["c"])
    assert (await inboxes["c"].next()).event == CaseChanged(case_id="k")
    await asyncio.sleep(0)  # let any wrongly scheduled delivery run
    assert inboxes["a"].events.empty() and inboxes["b"].events.empty()

    await buses["c"].close()
    assert not buses["c"].publish(deliver(2))
    assert buses["c"].stats.dropped_disconnected == 1


async def test_a_lone_local_bus_accepts_and_delivers_nowhere() -> None:
    bus = LocalBus("solo")
    inbox = Inbox()
    assert not bus.publish(deliver(0))  # not started
    await bus.start(inbox.on_event, inbox.on_reconnect)
    await asyncio.wait_for(bus.wait_connected(), 0.1)
    assert bus.connected
    assert bus.publish(deliver(1)) and bus.stats.published == 1
    assert inbox.events.empty()


# -- Redis ---------------------------------------------------------------------------


async def test_events_reach_the_other_node_in_order_and_never_their_publisher(
    bus_pair: tuple[RedisBus, Inbox, RedisBus, Inbox],
) -> None:
    a, inbox_a, b, inbox_b = bus_pair
    for n in range(50):
        assert a.publish(deliver(n))
    # flush (what a draining node awaits) returns once everything queued was written.
    await asyncio.wait_for(a.flush(), 5)
    assert (a.queued, a.stats.published) == (0, 50)
    assert b.publish(PresenceChanged(account_id="acc-c", online=True))
    received = [await inbox_b.next() for _ in range(50)]
    assert [e.event for e in received] == [deliver(n) for n in range(50)]
    assert {e.node for e in received} == {"node-a"}
    assert (await inbox_a.next()).event == PresenceChanged(account_id="acc-c", online=True)
    # Each node heard its own broadcast come back and dropped it: nothing else is queued.
    await wait_until(
        lambda: a.stats.published == 50 and b.stats.published == 1, "both batches written"
    )
    assert inbox_a.events.empty() and inbox_b.events.empty()
    assert a.stats.received == 1 and b.stats.received == 50


async def test_node_addressed_events_reach_only_those_nodes(settings: RedisSettings) -> None:
    buses = [RedisBus(settings, f"n{i}") for i in range(3)]
    inboxes = [Inbox() for _ in buses]
    for bus, inbox in zip(buses, inboxes, strict=True):
        await bus.start(inbox.on_event, inbox.on_reconnect)
    try:
        assert buses[0].publish(Evict(account_id="acc", session_ids=("s1",)), nodes=["n2"])
        assert buses[0].publish(CaseChanged(case_id="after"))  # a marker to everyone
        assert (await inboxes[2].next()).event == Evict(account_id="acc", session_ids=("s1",))
        assert (await inboxes[2].next()).event == CaseChanged(case_id="after")
        # n1 got only the marker: the addressed event was never sent its way.
        assert (await inboxes[1].next()).event == CaseChanged(case_id="after")
        assert inboxes[1].events.empty()
    finally:
        for bus in buses:
            await bus.close()


async def test_a_full_queue_drops_and_counts_instead_of_growing(settings: RedisSettings) -> None:
    a, b = RedisBus(settings, "a", max_queue=3), RedisBus(settings, "b")
    inbox = Inbox()
    await a.start(Inbox().on_event, Inbox().on_reconnect)
    await b.start(inbox.on_event, inbox.on_reconnect)
    try:
        # No await in between: the writer cannot drain, so only three fit.
        accepted = [a.publish(deliver(n)) for n in range(10)]
        assert accepted == [True] * 3 + [False] * 7
        assert a.stats.dropped_overflow == 7
        assert [(await inbox.next()).event for _ in range(3)] == [deliver(n) for n in range(3)]
        assert a.publish(deliver(99))  # drained: room again
        assert (await inbox.next()).event == deliver(99)
    finally:
        await a.close()
        await b.close()


async def test_an_oversize_event_is_refused_at_publish(
    bus_pair: tuple[RedisBus, Inbox, RedisBus, Inbox],
) -> None:
    a, _, _, _ = bus_pair
    huge = Deliver(accounts=("x",), frames=(b"z" * MAX_ENVELOPE_BYTES,))
    assert not a.publish(huge)
    assert a.stats.dropped_too_big == 1


async def test_garbage_on_the_channel_and_a_failing_handler_do_not_stop_the_bus(
    settings: RedisSettings,
) -> None:
    a, b = RedisBus(settings, "a"), RedisBus(settings, "b")
    seen: list[Envelope] = []
    good = asyncio.Event()

    def picky(envelope: Envelope) -> None:
        seen.append(envelope)
        if envelope.event == CaseChanged(case_id="boom"):
            raise RuntimeError("handler bug")
        good.set()

    await a.start(Inbox().on_event, Inbox().on_reconnect)
    await b.start(picky, Inbox().on_reconnect)
    raw = redis.asyncio.Redis.from_url(settings.url)
    try:
        await raw.publish(f"{settings.prefix}bus", b"\x00not an envelope")
        assert a.publish(CaseChanged(case_id="boom"))
        assert a.publish(CaseChanged(case_id="fine"))
        await asyncio.wait_for(good.wait(), 3)
        assert [e.event for e in seen] == [CaseChanged("boom"), CaseChanged("fine")]
        assert b.stats.invalid == 1 and b.stats.handler_errors == 1 and b.connected
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


async def test_without_redis_publish_fails_fast_and_start_does_not_hang() -> None:
    dead = RedisSettings(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.5)
    bus = RedisBus(dead, "lonely", backoff_base_s=0.01, backoff_cap_s=0.05)
    started = time.monotonic()
    await bus.start(Inbox().on_event, Inbox().on_reconnect)
    assert time.monotonic() - started < 2.0 and not bus.connected
    t0 = time.perf_counter()
    results = [bus.publish(deliver(n)) for n in range(1000)]
    assert time.perf_counter() - t0 < 0.5  # never waits on the network
    assert results == [False] * 1000 and bus.stats.dropped_disconnected == 1000
    await wait_until(lambda: bus.stats.connect_failures >= 3, "more attempts")  # it keeps trying
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bus.wait_connected(), 0.05)
    await bus.close()
    await bus.close()  # idempotent
    assert not bus.publish(deliver(0))


def test_a_url_redis_py_cannot_parse_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        RedisBus(RedisSettings("http://127.0.0.1:6379"), "n")
    with pytest.raises(ValueError):
        RedisBus(RedisSettings("redis://127.0.0.1:6379"), "a:b")  # ':' separates channels


# -- Redis going away ----------------------------------------------------------------


async def _pair_on(server: RedisServer, **kw: float) -> tuple[RedisBus, Inbox, RedisBus, Inbox]:
    settings = RedisSettings(server.url, prefix="t:", connect_timeout_s=0.5)
    a = RedisBus(settings, "a", backoff_base_s=0.02, backoff_cap_s=0.2, **kw)
    b = RedisBus(settings, "b", backoff_base_s=0.02, backoff_cap_s=0.2, **kw)
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a.on_event, inbox_a.on_reconnect)
    await b.start(inbox_b.on_event, inbox_b.on_reconnect)
    assert a.connected and b.connected
    return a, inbox_a, b, inbox_b


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_nodes_reconnect_and_resubscribe_after_redis_restarts(
    tmp_path: Path, how: str
) -> None:
    async with own_redis(tmp_path) as server:
        a, inbox_a, b, inbox_b = await _pair_on(server)
        try:
            assert a.publish(deliver(1))
            assert (await inbox_b.next()).event == deliver(1)

            before_loss = time.time_ns() // 1_000_000
            server.stop() if how == "stop" else server.kill()
            await wait_until(lambda: not a.connected and not b.connected, "both to notice")
            noticed = time.time_ns() // 1_000_000
            # Disconnected: publish refuses at once, counted, never raises.
            assert not a.publish(deliver(2))
            assert a.stats.dropped_disconnected == 1

            await server.start()  # same port, empty Redis: no subscriptions remembered
            await asyncio.wait_for(inbox_a.reconnected.wait(), 5)
            await asyncio.wait_for(inbox_b.reconnected.wait(), 5)
            assert a.connected and b.connected
            assert inbox_a.reconnects == inbox_b.reconnects == 1
            assert a.stats.reconnects == b.stats.reconnects == 1
            # Each says from when events may be missing: its last sign of life from
            # Redis (a pong or a message: at most a ping interval before the loss).
            for inbox in (inbox_a, inbox_b):
                (since,) = inbox.gaps_since
                assert before_loss - 1_500 <= since <= noticed

            # Both resubscribed: events flow both ways again, and the lost one stays lost.
            assert a.publish(deliver(3)) and b.publish(CaseChanged(case_id="c"))
            assert (await inbox_b.next()).event == deliver(3)
            assert (await inbox_a.next()).event == CaseChanged(case_id="c")
        finally:
            await a.close()
            await b.close()


async def test_a_silent_redis_is_noticed_by_pings_and_the_bus_recovers(tmp_path: Path) -> None:
    """SIGSTOP: TCP stays up, nothing answers. Only the idle pings can tell."""
    async with own_redis(tmp_path) as server:
        a, inbox_a, b, inbox_b = await _pair_on(server, ping_interval_s=0.1)
        try:
            server.pause()
            t0 = time.monotonic()
            await wait_until(
                lambda: not a.connected and not b.connected, "both to notice", timeout=3
            )
            assert time.monotonic() - t0 < 2.0  # a few ping intervals, not TCP's minutes
            server.resume()
            await asyncio.wait_for(inbox_a.reconnected.wait(), 5)
            await asyncio.wait_for(inbox_b.reconnected.wait(), 5)
            assert a.publish(deliver(7))
            assert (await inbox_b.next()).event == deliver(7)
        finally:
            server.resume()
            await a.close()
            await b.close()
