"""chat_server/redis_client.py, and the client decision it stands for (docs/DECISIONS.md):
redis-py's ``redis.asyncio`` speaks TLS (``rediss://``) to a real TLS-only Redis, parses
every URL form an operator may give, and ships Sentinel and Cluster clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from chat_server.bus import CaseChanged, Envelope, RedisBus
from chat_server.redis_client import RedisSettings, make_client
from scripts.localcluster.tls import make_local_pki
from tests.helpers.redis_server import own_redis


def test_every_url_form_an_operator_may_give_is_understood() -> None:
    forms = {
        "redis://127.0.0.1:6379/0": Connection,
        "redis://:secret@redis.internal:6380/2": Connection,
        "rediss://redis.internal:6380/0?ssl_ca_certs=/etc/ssl/ca.pem": SSLConnection,
        "unix:///run/redis/redis.sock?db=1": UnixDomainSocketConnection,
    }
    for url, connection_class in forms.items():
        client = make_client(RedisSettings(url))
        pool = client.connection_pool
        assert pool.connection_class is connection_class, url
        # Fail fast: no retries inside redis-py, short timeouts from our settings.
        assert pool.connection_kwargs["socket_timeout"] == RedisSettings(url).command_timeout_s
        assert pool.connection_kwargs["retry"].get_retries() == 0
    assert make_client(RedisSettings("redis://h:1/3")).connection_pool.connection_kwargs["db"] == 3
    with pytest.raises(ValueError):
        make_client(RedisSettings("tcp://127.0.0.1:6379"))


def test_the_client_ships_sentinel_and_cluster_support() -> None:
    """What would change for Sentinel or Cluster (docs/DEPLOYMENT.md) is a client
    constructor, not a library: both exist in the pinned package."""
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

    assert callable(Sentinel([("127.0.0.1", 26379)]).master_for)
    assert hasattr(RedisCluster, "from_url")


async def test_the_bus_runs_over_tls_to_a_tls_only_redis(tmp_path: Path) -> None:
    pki = make_local_pki(tmp_path / "tls")
    async with own_redis(tmp_path, tls=pki) as server:
        assert server.url.startswith("rediss://")
        settings = RedisSettings(server.url, prefix="tls:")
        a, b = RedisBus(settings, "a"), RedisBus(settings, "b")
        got: asyncio.Queue[Envelope] = asyncio.Queue()
        await a.start(lambda e: None, lambda: None)
        await b.start(got.put_nowait, lambda: None)
        try:
            assert a.connected and b.connected
            assert a.publish(CaseChanged(case_id="over-tls"))
            envelope = await asyncio.wait_for(got.get(), 3)
            assert envelope.event == CaseChanged(case_id="over-tls")
        finally:
            await a.close()
            await b.close()


async def test_tls_with_an_untrusted_certificate_never_connects(tmp_path: Path) -> None:
    server_pki = make_local_pki(tmp_path / "server-tls")
    other_ca = make_local_pki(tmp_path / "other-ca").ca_file
    async with own_redis(tmp_path, tls=server_pki) as server:
        url = server.url.replace(str(server_pki.ca_file), str(other_ca))
        bus = RedisBus(RedisSettings(url, connect_timeout_s=0.5), "a")
        await bus.start(lambda e: None, lambda: None)
        try:
            assert not bus.connected and bus.stats.connect_failures >= 1
        finally:
            await bus.close()
