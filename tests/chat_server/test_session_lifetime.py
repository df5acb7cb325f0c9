"""Session lifetime (issue 13, item 7): a session ends when its token expires (4002,
and the SDK logs in again by itself), ``logout{all}`` ends every session of the account
on every node (4004), and expired tokens are purged on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from chat_client import ChatClient, SessionEnded
from chat_server.credentials import token_hash
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import CloseCode
from tests.helpers.clients import register_client, register_counselor, take
from tests.helpers.hubs import start_hub
from tests.helpers.rawclient import RawClient, rid


async def _closed_with(peer: RawClient, timeout: float = 5.0) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(peer.ws.recv(), timeout)
    return peer.ws.close_code


async def test_a_session_ends_when_its_token_expires(tmp_path: Path) -> None:
    async with start_hub(tmp_path, token_ttl_s=2) as hub:
        peer = await RawClient.connect(hub.url)
        await peer.register("shortlived")
        await peer.authenticate()
        assert isinstance(await peer.request(f.Ping(id=rid())), f.Pong)
        started = asyncio.get_running_loop().time()
        assert await _closed_with(peer) == CloseCode.SESSION_EXPIRED
        assert peer.ws.close_reason == "session expired: log in again"
        assert asyncio.get_running_loop().time() - started < 4  # at expiry, not later
        # The expired token opens no new session.
        again = await RawClient.connect(hub.url)
        again.identity, again.account_id, again.token = peer.identity, peer.account_id, peer.token
        with pytest.raises(AssertionError, match="auth_failed"):
            await again.authenticate()
        await again.close()


async def test_the_sdk_logs_in_again_after_its_session_expired(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub", token_ttl_s=2) as hub:
        counselor = await register_counselor(hub, tmp_path / "counselor")
        client = await register_client(hub, tmp_path / "client")
        try:
            case = await client.open_case("anxiety", "en")
            await asyncio.sleep(2.5)  # both sessions expired and were renewed by login
            await client.send(case.case_id, "still here")
            [message] = await take(counselor, 1)
            assert (message.body, message.verified) == ("still here", True)
        finally:
            await client.close()
            await counselor.close()
        closes = [
            json.loads(line)
            for line in hub.log_file.read_text().splitlines()
            if '"session.closed"' in line
        ]
        assert sum(1 for c in closes if c.get("code") == CloseCode.SESSION_EXPIRED) >= 2


async def test_logout_all_ends_every_session_on_every_node(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    shared = {"db_url": pg_url, "redis_url": redis_url, "redis_prefix": f"{redis_prefix}lo:"}
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            start_hub(tmp_path, node_id="a", log_file=tmp_path / "a.log", **shared)
        )
        b = await stack.enter_async_context(
            start_hub(tmp_path, node_id="b", log_file=tmp_path / "b.log", **shared)
        )
        assert a.server.hub is not None and b.server.hub is not None
        await asyncio.wait_for(b.server.hub.bus.wait_connected(), 10)
        await asyncio.wait_for(a.server.hub.bus.wait_connected(), 10)
        first = await RawClient.connect(a.url)
        await first.register(f"everywhere{secrets.token_hex(3)}")
        await first.authenticate()
        here = await first.session_of_same_account(a.url)
        there = await first.session_of_same_account(b.url)
        assert isinstance(await first.request(f.Logout(id=rid(), all=True)), f.Ok)
        assert await _closed_with(first) == CloseCode.NORMAL
        assert await _closed_with(here) == CloseCode.SIGNED_OUT
        assert await _closed_with(there) == CloseCode.SIGNED_OUT
        # Every token of the account is gone: no session comes back with one.
        with pytest.raises(AssertionError, match="auth_failed"):
            await first.reconnect(b.url)


async def test_the_sdk_stops_when_signed_out_everywhere(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub") as hub:
        laptop = await register_client(hub, tmp_path / "client")
        phone = await ChatClient.open(None, tmp_path / "client", "client passphrase")
        try:
            await laptop.logout(everywhere=True)
            with pytest.raises(SessionEnded) as ended:
                async with asyncio.timeout(5):
                    async for _ in phone.events():
                        pass
            assert ended.value.code == CloseCode.SIGNED_OUT
        finally:
            await phone.close()


async def test_expired_tokens_are_purged_periodically(tmp_path: Path) -> None:
    async with start_hub(tmp_path, token_purge_interval_s=0.05) as hub:
        peer = await RawClient.connect(hub.url)
        await peer.register("purgeme")
        db = hub.server.db
        assert db is not None and hub.server.hub is not None
        await db.accounts.add_token(token_hash("old-token"), peer.account_id, now_ms() - 1)
        for _ in range(100):
            if hub.server.hub.tokens_purged >= 1:
                break
            await asyncio.sleep(0.05)
        assert hub.server.hub.tokens_purged == 1
        assert await db.accounts.token_valid(token_hash(peer.token), peer.account_id, now_ms())
        await peer.close()
