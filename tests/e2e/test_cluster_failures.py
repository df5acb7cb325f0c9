"""A cluster losing a part while people talk: Redis, a whole node, PostgreSQL connections.

Real ``chat-server serve`` processes on a PostgreSQL database of the test's own, a
Redis key prefix of its own (its own ``redis-server`` when the test stops Redis), and
HAProxy with TLS in front (tests/helpers/cluster.py, tests/helpers/haproxy.py). In
each, whatever was acknowledged must reach the other participant exactly once and
nothing may be acknowledged that was not stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from chat_client import CaseAssignedEvent, ChatClient, ConnectionEvent, Event, MessageEvent
from chat_client.models import Message
from protocol import frames as f
from protocol.chain import verify_chain
from tests.helpers.clients import take_event, take_until
from tests.helpers.cluster import Cluster, Node, people, run_cluster
from tests.helpers.haproxy import StartProxy
from tests.helpers.rawclient import RawClient, pair, resend, rid
from tests.helpers.redis_server import own_redis
from tests.helpers.waiting import wait_until, within

#: Load tests send faster than the production per-session flood limit allows.
FAST = ("--rate-per-s", "2000", "--rate-burst", "2000")


async def _messages(
    who: ChatClient, count: int, timeout: float
) -> tuple[list[Message], list[Event]]:
    """The next ``count`` messages from others, and every event seen meanwhile."""
    got: list[Message] = []

    def enough(event: Event) -> bool:
        if isinstance(event, MessageEvent) and event.message.sender_id != who.account_id:
            got.append(event.message)
        return len(got) >= count

    seen = await take_until(who, enough, timeout=timeout)
    return got, seen


async def _bus(node: Node) -> float:
    return await node.metric("chat_bus_connected")


async def test_redis_stopped_mid_conversation_and_restarted(
    tmp_path: Path, cluster_db: str, haproxy: StartProxy
) -> None:
    async with (
        own_redis(tmp_path) as redis,
        run_cluster(tmp_path, cluster_db, redis.url) as cluster,
    ):
        a, b = cluster.nodes
        proxy = await haproxy([a.backend, b.backend])
        await proxy.wait_status("a", "UP")
        await proxy.wait_status("b", "UP")
        async with people(cluster, proxy, tmp_path) as (counselor, client):
            case = await client.open_case("anxiety", "en")
            await take_event(counselor, CaseAssignedEvent)
            placed = [await a.metric("chat_sessions_open"), await b.metric("chat_sessions_open")]
            assert placed == [1.0, 1.0], "the two people must be on different nodes"
            await client.send(case.case_id, "before")
            assert [m.body for m in (await _messages(counselor, 1, 10))[0]] == ["before"]

            redis.stop()
            await wait_until(lambda: _all_down(a, b), "both nodes notice Redis is gone")
            # Sends are still acknowledged after their commit; the node stays in service.
            sent = [await client.send(case.case_id, f"during {i}") for i in range(30)]
            assert [s.seq for s in sent] == list(range(2, 32))
            assert not any(s.duplicate for s in sent)
            status, body = await a.get("healthz")
            assert (status, body) == (200, b"ok\ndb ok\nredis down\n")

            await redis.start()  # empty, on the same port: the nodes find it by themselves
            got, seen = await _messages(counselor, 30, 20)
            assert [(m.seq, m.body) for m in got] == [
                (s.seq, f"during {i}") for i, s in enumerate(sent)
            ]
            # Delivered by the catch-up over the same WebSocket, not by reconnecting.
            assert not [e for e in seen if isinstance(e, ConnectionEvent)]
            # Both nodes reconnected by themselves, each caught its sessions up.
            await wait_until(lambda: _recovered(a, b), "both nodes back on Redis, caught up")

            # Live delivery goes on, both ways, and nothing came twice.
            await counselor.send(case.case_id, "after")
            assert [m.body for m in (await _messages(client, 1, 10))[0]] == ["after"]
            await client.send(case.case_id, "and after")
            last, _ = await _messages(counselor, 1, 10)
            assert [(m.seq, m.body) for m in last] == [(33, "and after")]
            history = await counselor.history(case.case_id)
            assert [m.seq for m in history] == list(range(1, 34))
            assert all(m.verified for m in history)


async def _recovered(*nodes: Node) -> bool:
    for node in nodes:
        values = await node.metrics()
        if not (
            values.get("chat_bus_connected") == 1
            and values.get("chat_bus_reconnects_total", 0) >= 1
            and values.get("chat_catchups_total", 0) >= 1
        ):
            return False
    return True


async def _all_down(*nodes: Node) -> bool:
    return [await _bus(n) for n in nodes] == [0.0] * len(nodes)


async def test_a_node_killed_under_load(
    tmp_path: Path, cluster_db: str, redis_url: str, haproxy: StartProxy
) -> None:
    serve = (*FAST, "--presence-ttl", "3")
    async with run_cluster(
        tmp_path, cluster_db, redis_url, start=["a"], serve_args=serve
    ) as cluster:
        a, b = cluster.nodes
        proxy = await haproxy([a.backend, b.backend])
        await proxy.wait_status("a", "UP")
        async with people(cluster, proxy, tmp_path) as (counselor, client):
            case = await client.open_case("anxiety", "en")
            await take_event(counselor, CaseAssignedEvent)
            # A French-speaking counselor on node A who will not come back.
            gone = await RawClient.connect(a.url)
            await gone.register("dr-gone", invite=await cluster.invite_counselor(("fr",)))
            await gone.authenticate()
            await b.start()
            await proxy.wait_status("b", "UP")

            per_side = 150
            acked: list[int] = []

            async def talk(who: ChatClient, tag: str) -> list[str]:
                ids = []
                for i in range(per_side):
                    sent = await who.send(case.case_id, f"{tag} {i}")
                    acked.append(sent.seq)
                    ids.append(sent.client_msg_id)
                return ids

            talking = asyncio.gather(talk(client, "c"), talk(counselor, "k"))
            await wait_until(lambda: len(acked) >= 60, "load under way")
            a.kill()  # SIGKILL, mid-load: both people were on it
            from_client, from_counselor = await within(talking, 60, "every send acknowledged")
            # Both came back through HAProxy, on node B, and every acknowledged message
            # reached the other exactly once (the SDK reports each (case, seq) once).
            for reader, ids in ((counselor, from_client), (client, from_counselor)):
                got, _ = await _messages(reader, per_side, 30)
                assert sorted(m.client_msg_id for m in got) == sorted(ids)
            assert await b.metric("chat_sessions_open") >= 2
            history = await client.history(case.case_id)
            assert [m.seq for m in history] == list(range(1, 2 * per_side + 1))
            assert all(m.verified for m in history)

            # The dead node's counselor leaves presence within its TTL, so a new French
            # case waits instead of going to them, and goes to the next counselor who
            # comes online.
            await wait_until(
                lambda: _offline(cluster, gone.account_id), "presence expiry", timeout=15
            )
            asker = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
            await asker.register("calm-fr")
            await asker.authenticate()
            opened = await asker.request(f.CaseOpen(id=rid(), topic="grief", language="fr"))
            assert isinstance(opened, f.CaseOpened) and opened.case.state == "waiting"
            other = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
            await other.register("dr-other", invite=await cluster.invite_counselor(("fr",)))
            await other.authenticate()
            assigned = await other.event(f.CaseAssigned, timeout=10)
            assert (assigned.case.case_id, assigned.case.counselor_id) == (
                opened.case.case_id,
                other.account_id,
            )
            await asker.close()
            await other.close()


async def _offline(cluster: Cluster, account_id: str) -> bool:
    return account_id not in await cluster.online_counselors()


async def test_postgresql_connections_dropped_mid_load(
    tmp_path: Path, cluster_db: str, redis_url: str, haproxy: StartProxy
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url, serve_args=FAST) as cluster:
        a, b = cluster.nodes
        proxy = await haproxy([a.backend, b.backend])
        await proxy.wait_status("a", "UP")
        await proxy.wait_status("b", "UP")
        client, counselor, case, key = await pair(
            proxy.wss_url, await cluster.invite_counselor(), ssl=proxy.client_ssl()
        )
        placed = [await a.metric("chat_sessions_open"), await b.metric("chat_sessions_open")]
        assert placed == [1.0, 1.0], "client and counselor must be on different nodes"

        admin = make_url(cluster_db).set(drivername="postgresql")
        database = admin.database
        terminate = await asyncpg.connect(admin.set(database="postgres").render_as_string(False))
        frames = [client.encrypt(key, case.case_id, f"m{i}") for i in range(300)]
        final: dict[str, f.MsgAck] = {}
        refusals: set[tuple[str, str]] = set()
        terminations = 0
        try:
            pending = list(frames)
            for window in range(200):  # bounded: ends long before this
                if not pending:
                    break
                batch, pending = pending[:20], pending[20:]
                for frame in batch:
                    await client.send(frame)
                if window % 3 == 0:  # while that window's commit is in flight
                    terminations += await terminate.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid()",
                        database,
                    )
                answers = await client.answers([frame.id for frame in batch])
                for frame in batch:
                    answer = answers[frame.id]
                    if isinstance(answer, f.MsgAck):
                        final[frame.client_msg_id] = answer
                    else:
                        assert isinstance(answer, f.ErrorFrame), answer
                        refusals.add((answer.code, answer.message))
                        pending.append(resend(frame))  # the same message, a new request id
        finally:
            await terminate.close()

        # Backends were killed under load; any send they hit was refused with the typed,
        # retryable error (whether one is hit depends on timing: the single-node test in
        # test_storage_faults.py kills every 10 ms and requires refusals); every message
        # was acknowledged in the end, never twice with two seqs.
        assert terminations > 0 and {code for code, _ in refusals} <= {"unavailable"}
        assert len(final) == len(frames)
        seqs = sorted(ack.seq for ack in final.values())
        assert seqs == list(range(1, len(frames) + 1))
        # No false ack: what was acknowledged is what is stored, and the other node
        # delivered each message to the counselor.
        stored = await counselor.sync_all(case.case_id)
        assert {m.client_msg_id: m.seq for m in stored} == {
            cmid: ack.seq for cmid, ack in final.items()
        }
        assert verify_chain(stored) == []
        got = {e.message.client_msg_id for e in counselor.events if isinstance(e, f.MsgNew)}
        assert got <= set(final)
        await client.close()
        await counselor.close()
