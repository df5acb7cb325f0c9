"""Reliability: drops, restarts and lost acks lose nothing and duplicate nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chat_client import ChatClient, ConnectionEvent, Event, MessageEvent
from tests.helpers.clients import PASS_CLIENT, PASS_COUNSELOR, Pair, take, take_until
from tests.helpers.hubs import TEST_KDF, hub_process
from tests.helpers.waiting import within


def drop_network(client: ChatClient) -> None:
    """Kill the TCP connection under the client without a close frame (code 1006)."""
    link = client._link
    assert link is not None
    link._ws.transport.abort()


def assert_exact(messages: list[int], n: int) -> None:
    assert messages == list(range(1, n + 1)), messages


async def test_network_drop_mid_conversation(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "c1")
    await counselor.send(case.case_id, "k2")
    assert [m.seq for m in await take(client, 2)] == [1, 2]
    assert [m.seq for m in await take(counselor, 2)] == [1, 2]

    drop_network(client)
    # While the client is away: the counselor writes, and the client's own sends wait.
    counselor_sends = [counselor.send(case.case_id, f"k{i}") for i in range(5)]
    client_sends = [client.send(case.case_id, f"c{i}") for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*counselor_sends, *client_sends), 15)
    seqs = sorted(s.seq for s in results)
    assert_exact([1, 2, *seqs], 10)

    got = await take(client, 8)
    assert_exact([1, 2] + [m.seq for m in got], 10)
    assert all(m.verified for m in got)
    other = await take(counselor, 8)
    assert_exact([1, 2] + [m.seq for m in other], 10)
    history = await client.history(case.case_id)
    assert_exact([m.seq for m in history], 10)
    assert sorted(m.body or "" for m in history) == sorted(
        ["c1", "k2", *(f"k{i}" for i in range(5)), *(f"c{i}" for i in range(3))]
    )


async def test_lost_ack_is_resent_with_same_frame_and_answered_duplicate(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    link = client._link
    assert link is not None
    original = link._dispatch
    dropped: list[str] = []

    def lose_first_ack(data: str | bytes) -> None:
        text = data if isinstance(data, str) else data.decode()
        if '"msg.ack"' in text and not dropped:
            dropped.append(text)
            link._ws.transport.abort()  # the server stored it; we never hear back
            return
        original(data)

    link._dispatch = lose_first_ack  # type: ignore[method-assign]
    sent = await asyncio.wait_for(client.send(case.case_id, "only once"), 15)
    assert dropped, "the ack was not intercepted"
    assert (sent.seq, sent.duplicate) == (1, True)
    assert sent.client_msg_id in dropped[0]
    [seen] = await take(counselor, 1)
    assert (seen.seq, seen.body, seen.client_msg_id) == (1, "only once", sent.client_msg_id)
    await client.send(case.case_id, "next")
    assert [m.body for m in await client.history(case.case_id)] == ["only once", "next"]


async def test_server_restart_mid_stream(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    states: list[str] = []
    under_way = asyncio.Event()  # the first 10 messages are acked
    dropped = asyncio.Event()  # the client saw the restart close its connection

    async def watch_client() -> None:
        async for event in client.events():
            if isinstance(event, ConnectionEvent) and event.state == "disconnected":
                dropped.set()
                return

    async def sender() -> list[int]:
        seqs = []
        for i in range(40):
            if i == 10:  # the other 30 are sent from the moment the hub goes away
                under_way.set()
                await within(dropped.wait(), 10, "the client to see the hub restart")
            seqs.append((await client.send(case.case_id, f"msg {i}")).seq)
        return seqs

    watcher = asyncio.create_task(watch_client())
    task = asyncio.create_task(sender())
    await within(under_way.wait(), 10, "the first 10 messages to be acked")
    await pair.hub.restart()  # graceful: close 1001, resumable
    seqs = await within(task, 30, "all 40 sends to be acked")
    await within(watcher, 1, "the client's disconnect event")
    assert sorted(seqs) == list(range(1, 41)) and seqs == sorted(seqs)

    got: list[int] = []

    async def consume() -> None:
        async for event in counselor.events():
            if isinstance(event, ConnectionEvent):
                states.append(event.state)
            elif isinstance(event, MessageEvent):
                assert event.message.verified
                got.append(event.message.seq)
                if len(got) == 40:
                    return

    await asyncio.wait_for(consume(), 15)
    assert got == list(range(1, 41))
    assert "disconnected" in states and "reconnecting" in states
    assert states[-1] == "connected"


async def test_burst_beyond_rate_limit_is_all_delivered_in_order(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    n = 260  # more than the burst of 200 frames: some sends are rate limited and retried
    results = await asyncio.wait_for(
        asyncio.gather(*(client.send(case.case_id, f"#{i}") for i in range(n))), 60
    )
    assert sorted(r.seq for r in results) == list(range(1, n + 1))
    got = await take(counselor, n, timeout=30)
    assert [m.seq for m in got] == list(range(1, n + 1))
    assert all(m.verified for m in got)


async def test_process_kill_and_restart(tmp_path: Path) -> None:
    """SIGKILL the hub process mid-conversation; after it comes back on the same port,
    both clients resume and every message gets through exactly once."""
    async with hub_process(tmp_path / "hub") as hub:
        code = await hub.invite_counselor("Dr K", "en", "anxiety")
        counselor = await ChatClient.register(
            hub.url, "dr-k", PASS_COUNSELOR, home=tmp_path / "k", invite=code, **TEST_KDF
        )
        client = await ChatClient.register(
            hub.url, "erin", PASS_CLIENT, home=tmp_path / "e", **TEST_KDF
        )
        try:
            case = await client.open_case("anxiety", "en")
            await asyncio.wait_for(client.send(case.case_id, "before"), 10)
            hub.kill()
            pending = asyncio.create_task(client.send(case.case_id, "during the outage"))
            # The client has lost the hub and then failed to reach it again: the send
            # must still be waiting, not answered, dropped or failed.
            states: list[str] = []

            def failed_retry(event: Event) -> bool:
                if isinstance(event, ConnectionEvent):
                    states.append(event.state)
                # disconnected, reconnecting (a pause), then reconnecting after a refusal
                down = states[states.index("disconnected") :] if "disconnected" in states else []
                return down.count("reconnecting") == 2

            seen = await take_until(client, failed_retry, timeout=20)
            assert not pending.done()
            await hub.start()
            sent = await asyncio.wait_for(pending, 30)
            assert sent.seq == 2
            await asyncio.wait_for(counselor.send(case.case_id, "after"), 10)
            got = await take(counselor, 2, timeout=20)
            assert [(m.seq, m.body) for m in got] == [(1, "before"), (2, "during the outage")]
            mine = [e.message for e in seen if isinstance(e, MessageEvent)]
            mine += await take(client, 3 - len(mine), timeout=20)
            assert [m.body for m in mine] == ["before", "during the outage", "after"]
        finally:
            await client.close()
            await counselor.close()
