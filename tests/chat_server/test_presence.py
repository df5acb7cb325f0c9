"""chat_server/presence.py: counselors and sessions across nodes, with expiry, on the
real Redis; a node that is SIGKILLed really is a separate process that dies."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_server.presence import (
    LocalPresence,
    Presence,
    RedisPresence,
    SessionPlace,
    SessionRef,
)
from chat_server.redis_client import RedisSettings
from tests.helpers.redis_server import own_redis
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(redis_url: str, redis_prefix: str) -> RedisSettings:
    return RedisSettings(redis_url, prefix=f"{redis_prefix}{random.getrandbits(32):x}:")


@pytest.fixture(params=["local", "redis"])
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[Presence]:
    """One node's presence, both implementations: they keep the same contract."""
    made: Presence
    if request.param == "local":
        made = LocalPresence("n1")
    else:
        made = RedisPresence(request.getfixturevalue("settings"), "n1")
    await made.start()
    try:
        yield made
    finally:
        await made.close()


# -- the contract, on one node --------------------------------------------------------


async def test_counselors_come_and_go_with_set_semantics(presence: Presence) -> None:
    assert await presence.online_counselors() == frozenset()
    await presence.counselor_online("c1")
    await presence.counselor_online("c1")
    await presence.counselor_online("c2")
    assert await presence.online_counselors() == {"c1", "c2"}
    await presence.counselor_offline("c1")
    await presence.counselor_offline("c1")
    assert await presence.online_counselors() == {"c2"}
    assert presence.stats.degraded == 0


async def test_counselors_arriving_at_once_are_all_seen_by_the_other_nodes(
    settings: RedisSettings,
) -> None:
    here, there = RedisPresence(settings, "n1"), RedisPresence(settings, "n2")
    await here.start()
    try:
        # Each arrival rewrites n1's whole share: none may be overtaken by an older view.
        await asyncio.gather(*(here.counselor_online(f"c{i}") for i in range(40)))
        assert await there.online_counselors() == {f"c{i}" for i in range(40)}
        await asyncio.gather(*(here.counselor_offline(f"c{i}") for i in range(0, 40, 2)))
        assert await there.online_counselors() == {f"c{i}" for i in range(1, 40, 2)}
    finally:
        await here.close()
        await there.close()


async def test_the_session_cap_evicts_the_oldest_never_the_newest(presence: Presence) -> None:
    assert await presence.session_opened("acc", "s1", cap=2) == SessionPlace(1, ())
    assert await presence.session_opened("acc", "s2", cap=2) == SessionPlace(2, ())
    assert await presence.session_opened("acc", "s3", cap=2) == SessionPlace(
        2, (SessionRef("n1", "s1"),)
    )
    # A lower cap evicts several, oldest first.
    assert await presence.session_opened("acc", "s4", cap=1) == SessionPlace(
        1, (SessionRef("n1", "s2"), SessionRef("n1", "s3"))
    )
    assert await presence.session_count("acc") == 1
    await presence.session_closed("acc", "s4")
    await presence.session_closed("acc", "never-opened")
    assert await presence.session_count("acc") == 0
    assert await presence.session_count("someone-else") == 0


# -- across nodes ------------------------------------------------------------------


async def test_two_nodes_see_each_others_counselors_and_share_the_cap(
    settings: RedisSettings,
) -> None:
    a, b = RedisPresence(settings, "a"), RedisPresence(settings, "b")
    await a.start()
    await b.start()
    try:
        await a.counselor_online("c-a")
        await b.counselor_online("c-b")
        await b.counselor_online("c-both")
        await a.counselor_online("c-both")
        assert (
            await a.online_counselors()
            == await b.online_counselors()
            == {
                "c-a",
                "c-b",
                "c-both",
            }
        )
        # Offline on one node only: still online through the other.
        await a.counselor_offline("c-both")
        assert await b.online_counselors() == {"c-a", "c-b", "c-both"}

        assert (await a.session_opened("acc", "s1", cap=3)).count == 1
        assert (await a.session_opened("acc", "s2", cap=3)).count == 2
        assert (await b.session_opened("acc", "s3", cap=3)).count == 3
        place = await b.session_opened("acc", "s4", cap=3)
        assert place == SessionPlace(3, (SessionRef("a", "s1"),))  # the oldest, on node a
        assert await a.session_count("acc") == 3
        await a.session_closed("acc", "s1")  # node a closes the evicted session
        await b.session_closed("acc", "s3")
        assert await a.session_count("acc") == 2

        # A graceful close takes a node's share away at once, not after the TTL.
        await b.close()
        assert await a.online_counselors() == {"c-a"}
        assert await a.session_count("acc") == 1
    finally:
        await a.close()
        await b.close()


_DOOMED_NODE = """
import asyncio, sys
from chat_server.presence import RedisPresence
from chat_server.redis_client import RedisSettings

async def main():
    url, prefix, ttl, beat = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    node = RedisPresence(RedisSettings(url, prefix=prefix), "doomed", ttl_s=ttl, heartbeat_s=beat)
    await node.start()
    await node.counselor_online("c-doomed")
    await node.session_opened("acc-doomed", "s1", 5)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_nodes_counselors_and_sessions_expire_within_the_ttl(
    settings: RedisSettings,
) -> None:
    ttl, beat = 0.5, 0.1
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED_NODE, settings.url, settings.prefix, str(ttl), str(beat),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    observer = RedisPresence(settings, "observer", ttl_s=ttl, heartbeat_s=beat)
    await observer.start()
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"
        assert await observer.online_counselors() == {"c-doomed"}
        # The heartbeat keeps a live node's entries well past one TTL.
        await asyncio.sleep(3 * ttl)
        assert await observer.online_counselors() == {"c-doomed"}
        assert await observer.session_count("acc-doomed") == 1

        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        async def gone() -> bool:
            return (
                await observer.online_counselors() == frozenset()
                and await observer.session_count("acc-doomed") == 0
            )

        killed = time.monotonic()
        await wait_until(gone, "the killed node's entries to expire", timeout=5)
        took = time.monotonic() - killed
        assert took <= ttl + 0.3, took  # within the TTL (plus polling slack)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await observer.close()


# -- Redis going away ---------------------------------------------------------------


async def test_without_redis_each_node_answers_for_itself_and_heals_after(
    tmp_path: Path,
) -> None:
    async with own_redis(tmp_path) as server:
        settings = RedisSettings(server.url, prefix="p:", connect_timeout_s=0.3)
        a = RedisPresence(settings, "a", ttl_s=30, heartbeat_s=10)
        b = RedisPresence(settings, "b", ttl_s=30, heartbeat_s=10)
        await a.start()
        await b.start()
        try:
            await a.counselor_online("c-a")
            assert (await a.session_opened("acc", "s1", cap=2)).count == 1

            server.kill()
            # Nothing raises; answers cover this node only and are counted as degraded.
            await a.counselor_online("c-a2")
            assert await a.online_counselors() == {"c-a", "c-a2"}
            assert await b.online_counselors() == frozenset()
            assert await a.session_opened("acc", "s2", cap=2) == SessionPlace(2, ())
            assert await a.session_count("acc") == 2
            assert not await a.heartbeat()
            assert a.stats.degraded >= 4 and a.stats.heartbeat_failures == 1

            await server.start()  # empty: no persistence
            assert await b.online_counselors() == frozenset()
            assert await a.heartbeat()  # one heartbeat makes Redis whole again
            assert await b.online_counselors() == {"c-a", "c-a2"}
            assert await b.session_count("acc") == 2
            place = await b.session_opened("acc", "s3", cap=2)
            assert place.evict == (SessionRef("a", "s1"),)
        finally:
            await a.close()
            await b.close()


def test_node_ids_and_timings_are_checked() -> None:
    settings = RedisSettings("redis://127.0.0.1:1/0")
    for bad in ("", "a|b", "a:b"):
        with pytest.raises(ValueError):
            RedisPresence(settings, bad)
    with pytest.raises(ValueError):
        RedisPresence(settings, "n", ttl_s=1, heartbeat_s=1)
