"""Two real hubs behind a real HAProxy that terminates TLS (deploy/haproxy.cfg).

Both hubs share one SQLite file, so an account made through one is known to the other;
clients only ever talk to HAProxy, over ``wss://`` with a CA file made for this test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_server.app import HubServer
from tests.helpers.haproxy import Backend, RunningProxy, StartProxy
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import RawClient


async def _same_account(proxy: RunningProxy, client: RawClient) -> RawClient:
    """A new connection through the proxy, authenticated as ``client``'s account."""
    other = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
    other.identity, other.account_id, other.token = client.identity, client.account_id, client.token
    await other.authenticate()
    return other


async def _start_again(hub: RunningHub, port: int) -> None:
    """Start a stopped hub again on its old port (HAProxy knows it by that port)."""
    hub.config = dataclasses.replace(hub.config, port=port)
    hub.server = HubServer(hub.config)
    await hub.server.start()


@contextlib.asynccontextmanager
async def _cluster(
    tmp_path: Path, haproxy: StartProxy
) -> AsyncIterator[tuple[list[RunningHub], RunningProxy]]:
    async with contextlib.AsyncExitStack() as stack:
        hubs: list[RunningHub] = [
            await stack.enter_async_context(start_hub(tmp_path)) for _ in range(2)
        ]
        backends = [Backend(f"n{i}", "127.0.0.1", hub.server.port) for i, hub in enumerate(hubs)]
        proxy = await haproxy(backends)
        await proxy.wait_status("n0", "UP")
        await proxy.wait_status("n1", "UP")
        yield hubs, proxy


async def test_clients_connect_with_wss_and_health_checks_pass_through(
    tmp_path: Path, haproxy: StartProxy
) -> None:
    async with _cluster(tmp_path, haproxy) as (_, proxy):
        assert await proxy.get("/healthz") == (200, b"ok\ndb ok\nredis off\n")
        status, _ = await proxy.get("/metrics")  # per-node metrics are never public
        assert status == 404

        client = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
        await client.register(f"calm-river-{secrets.token_hex(3)}")
        welcome = await client.authenticate()
        assert welcome.account_id == client.account_id
        await client.close()

        # The TLS is real: a client that does not trust our CA never gets through.
        with pytest.raises(ssl.SSLCertVerificationError):
            await RawClient.connect(proxy.wss_url, ssl=ssl.create_default_context())


async def test_a_stopped_node_gets_no_new_connections(tmp_path: Path, haproxy: StartProxy) -> None:
    async with _cluster(tmp_path, haproxy) as (hubs, proxy):
        client = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
        await client.register(f"client-{secrets.token_hex(3)}")
        await client.authenticate()

        # Node 0 goes away. New connections work at once (a refused connection is
        # redispatched to the other node), and the health check marks it down.
        port0 = hubs[0].server.port
        await hubs[0].stop()
        sessions = [await _same_account(proxy, client) for _ in range(3)]
        await proxy.wait_status("n0", "DOWN")

        # Back again: HAProxy sees it; now node 1 goes away, and node 0 takes over.
        await _start_again(hubs[0], port0)
        await proxy.wait_status("n0", "UP")
        await hubs[1].stop()
        sessions += [await _same_account(proxy, client) for _ in range(3)]
        await proxy.wait_status("n1", "DOWN")
        assert await proxy.get("/healthz") == (200, b"ok\ndb ok\nredis off\n")
        for session in sessions:
            await session.close()
