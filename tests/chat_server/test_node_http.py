"""A node's operator surface (chat_server/app.py): ``/healthz`` says whether a load
balancer should send it connections, ``/metrics`` counts what it did."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from protocol import frames as f
from tests.helpers.cluster import fresh_database
from tests.helpers.hubs import RunningHub, free_port, start_hub
from tests.helpers.rawclient import pair, rid
from tests.helpers.waiting import wait_until


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def _health(hub: RunningHub) -> tuple[int, bytes]:
    return await asyncio.to_thread(_get, hub.http_url + "healthz")


async def _samples(hub: RunningHub) -> dict[str, float]:
    status, body = await asyncio.to_thread(_get, hub.http_url + "metrics")
    assert status == 200
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def test_a_lost_redis_only_degrades_and_a_lost_database_is_unhealthy(
    tmp_path: Path, pg_admin_url: str
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    async with (
        fresh_database(pg_admin_url) as db_url,
        start_hub(tmp_path, db_url=db_url, redis_url=nowhere) as hub,
    ):
        # Redis away: the node still stores, acks and delivers locally, so it stays in
        # service (every node would fail the check at once otherwise).
        assert await _health(hub) == (200, b"ok\ndb ok\nredis down\n")
        samples = await _samples(hub)
        assert samples["chat_bus_connected"] == 0
        assert samples["chat_bus_connect_failures_total"] >= 1
        # The database away: nothing can be stored, so no new connections, please.
        url = make_url(db_url)
        admin = await asyncpg.connect(
            url.set(drivername="postgresql", database="postgres").render_as_string(False)
        )
        try:
            await admin.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
        finally:
            await admin.close()

        async def refused() -> bool:  # probe answers are reused for half a second
            return await _health(hub) == (503, b"unavailable\ndb down\nredis down\n")

        await wait_until(refused, "503 from the health check")


async def test_metrics_count_what_the_node_did(hub: RunningHub) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    answers = await client.pipeline([client.encrypt(key, case.case_id, f"m{i}") for i in range(5)])
    assert all(isinstance(x, f.MsgAck) for x in answers.values())
    refused = await client.request(f.CaseKeys(id=rid(), case_id="case_nope"))
    assert isinstance(refused, f.ErrorFrame) and refused.code == "forbidden"
    await counselor.event(f.MsgNew)
    samples = await _samples(hub)
    assert samples["chat_sessions_open"] == 2
    assert samples["chat_connections_open"] == 2
    assert samples["chat_frames_received_total{type=msg.send}"] == 5
    assert samples["chat_frames_sent_total{type=msg.ack}"] == 5
    assert samples["chat_frames_sent_total{type=msg.new}"] == 5
    assert samples["chat_errors_total{code=forbidden}"] == 1
    assert samples["chat_messages_committed_total"] == 5
    assert 1 <= samples["chat_commits_total"] <= 5
    assert samples["chat_commit_batch_size_count"] == samples["chat_commits_total"]
    assert samples["target_info{node=" + hub.server.hub.node_id + "}"] == 1  # type: ignore[union-attr]

    await client.request(f.Logout(id=rid()))
    await client.ws.wait_closed()
    await counselor.close()
    samples = await _samples(hub)
    assert samples["chat_closes_total{code=1000}"] == 1
    assert samples["chat_sessions_open"] == 0 and samples["chat_sessions_total"] == 2
