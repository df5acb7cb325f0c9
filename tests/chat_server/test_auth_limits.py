"""Bounds on unauthenticated work (issue 13, item 5), each against the real hub.

Every test peer connects from 127.0.0.1 unless it binds 127.0.0.2 (another address on
the loopback network), which shows that the per-address bounds are per address.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from protocol import crypto
from protocol import frames as f
from protocol.errors import CloseCode
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import RawClient, rid

OTHER_ADDRESS: dict[str, Any] = {"local_addr": ("127.0.0.2", 0)}
#: A server-side hash that takes a while (~0.1-0.5 s here), so requests overlap it.
SLOW_HASH = {"hash_opslimit": 4, "hash_memlimit": 64 * 1024 * 1024}


def _gate(hub: RunningHub) -> Any:
    assert hub.server.hub is not None
    return hub.server.hub.guard.argon2


def _register_frame(handle: str, invite: str | None = None, opslimit: int = 1) -> f.Register:
    identity = crypto.Identity.generate()
    salt = crypto.new_salt()
    keys = crypto.derive_login_keys("pw", salt, 1, 8192)
    return f.Register(
        id=rid(),
        handle=handle,
        salt=salt,
        opslimit=opslimit,
        memlimit=8192,
        auth_key=keys.auth_key,
        sign_pk=identity.sign_pk,
        box_pk=identity.box_pk,
        box_sig=crypto.sign_box_key(identity),
        wrapped_keys=crypto.wrap_identity(identity, keys.wrap_key),
        invite=invite,
    )


def _wrong_login(handle: str) -> f.Login:
    return f.Login(id=rid(), handle=handle, auth_key=b"\x01" * 32)


def _code(frame: f.ServerFrame) -> str:
    assert isinstance(frame, f.ErrorFrame), frame
    return frame.code


async def test_register_runs_cheap_checks_before_any_argon2(tmp_path: Path) -> None:
    async with start_hub(tmp_path) as hub:
        peer = await RawClient.connect(hub.url)
        await peer.register("takenhandle")
        granted = _gate(hub).granted
        assert _code(await peer.request(_register_frame("takenhandle"))) == "conflict"
        bad_invite = _register_frame("newcounselor", invite="inv-not-a-real-code")
        assert _code(await peer.request(bad_invite)) == "auth_failed"
        assert _code(await peer.request(_register_frame("newone", opslimit=2))) == "invalid"
        assert _gate(hub).granted == granted  # none of them hashed anything
        assert isinstance(await peer.request(_register_frame("newone")), f.Registered)
        assert _gate(hub).granted == granted + 1
        await peer.close()


async def test_argon2_work_per_address_is_bounded(tmp_path: Path) -> None:
    """One address gets ``argon2_per_ip`` hashes at once; more are ``busy`` with a
    retry_after, and another address is not affected."""
    async with start_hub(tmp_path, argon2_per_ip=1, **SLOW_HASH) as hub:
        peers = [await RawClient.connect(hub.url) for _ in range(4)]
        for peer in peers:
            await peer.send(_wrong_login("someone"))
        other = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        other_reply = await other.request(_wrong_login("someone"), timeout=20)
        replies = [await peer.recv(timeout=20) for peer in peers]
        codes = sorted(_code(r) for r in replies)
        assert codes.count("auth_failed") >= 1 and "busy" in codes, codes
        busy = next(r for r in replies if isinstance(r, f.ErrorFrame) and r.code == "busy")
        assert busy.retry_after_ms is not None and busy.retry_after_ms > 0
        assert _code(other_reply) == "auth_failed"  # its own slot, not busy
        for peer in [*peers, other]:
            await peer.close()


async def test_argon2_work_in_all_is_bounded(tmp_path: Path) -> None:
    async with start_hub(
        tmp_path, argon2_concurrency=1, argon2_queue=0, argon2_per_ip=8, **SLOW_HASH
    ) as hub:
        first = await RawClient.connect(hub.url)
        second = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        await first.send(_wrong_login("someone"))
        while _gate(hub).granted == 0:  # the first one holds the only slot
            await asyncio.sleep(0.001)
        reply = await second.request(_wrong_login("someone"), timeout=20)
        assert _code(reply) == "busy" and isinstance(reply, f.ErrorFrame)
        assert reply.retry_after_ms
        assert _code(await first.recv(timeout=20)) == "auth_failed"
        assert hub.server.hub is not None
        scraped = hub.server.hub.metrics.render()[0].decode()
        assert "chat_hashes_busy_total 1.0" in scraped
        assert "chat_hashes_total 1.0" in scraped
        assert "chat_guests_open 2.0" in scraped
        await first.close()
        await second.close()


async def test_failed_logins_per_handle_back_off(tmp_path: Path) -> None:
    async with start_hub(tmp_path, login_fail_handle_rate=(0.01, 3)) as hub:
        victim = await RawClient.connect(hub.url)
        await victim.register("victimhandle")
        attacker = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        codes = [_code(await attacker.request(_wrong_login("victimhandle"))) for _ in range(3)]
        assert codes == ["auth_failed"] * 3
        granted = _gate(hub).granted
        throttled = await attacker.request(_wrong_login("victimhandle"))
        assert _code(throttled) == "rate_limited" and isinstance(throttled, f.ErrorFrame)
        assert throttled.retry_after_ms is not None and throttled.retry_after_ms >= 90_000
        assert _gate(hub).granted == granted  # refused before hashing
        # Unknown handles are throttled alike (no hint whether the handle exists).
        for _ in range(3):
            await attacker.request(_wrong_login("nosuchhandle"))
        assert _code(await attacker.request(_wrong_login("nosuchhandle"))) == "rate_limited"
        # The right passphrase waits too: the handle is throttled, from any address.
        with pytest.raises(AssertionError, match="rate_limited"):
            await victim.login()
        for peer in (victim, attacker):
            await peer.close()


async def test_failed_logins_per_address_back_off(tmp_path: Path) -> None:
    async with start_hub(tmp_path, login_fail_ip_rate=(0.01, 4)) as hub:
        user = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        await user.register("someuser")
        attacker = await RawClient.connect(hub.url)
        codes = [_code(await attacker.request(_wrong_login(f"guess{i}"))) for i in range(5)]
        assert codes == ["auth_failed"] * 4 + ["rate_limited"]
        await user.login()  # another address still logs in
        # Successful logins never fill the bucket.
        for _ in range(6):
            await user.login()
        for peer in (user, attacker):
            await peer.close()


async def test_registrations_per_address_are_throttled(tmp_path: Path) -> None:
    async with start_hub(tmp_path, register_ip_rate=(0.01, 2)) as hub:
        peer = await RawClient.connect(hub.url)
        assert isinstance(await peer.request(_register_frame("first1")), f.Registered)
        assert isinstance(await peer.request(_register_frame("second2")), f.Registered)
        refused = await peer.request(_register_frame("third3"))
        assert _code(refused) == "rate_limited" and isinstance(refused, f.ErrorFrame)
        assert refused.retry_after_ms and refused.retry_after_ms > 50_000
        # Trying taken handles spends the bucket too: register cannot list handles.
        assert _code(await peer.request(_register_frame("first1"))) == "rate_limited"
        other = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        assert _code(await other.request(_register_frame("first1"))) == "conflict"
        assert isinstance(await other.request(_register_frame("third3")), f.Registered)
        for p in (peer, other):
            await p.close()


async def _closed_with(peer: RawClient) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(peer.ws.recv(), 5)
    return peer.ws.close_code


async def test_unauthenticated_connections_are_capped_per_address_and_in_all(
    tmp_path: Path,
) -> None:
    async with start_hub(tmp_path, max_guests_per_ip=3, max_guests=5) as hub:
        guests = [await RawClient.connect(hub.url) for _ in range(3)]
        for g in guests:  # all three are served
            assert isinstance(await g.request(f.Ping(id=rid())), f.Pong)
        fourth = await RawClient.connect(hub.url)
        assert await _closed_with(fourth) == CloseCode.TRY_AGAIN
        # Another address has its own allowance, up to the total of 5.
        others = [await RawClient.connect(hub.url, **OTHER_ADDRESS) for _ in range(2)]
        for g in others:
            assert isinstance(await g.request(f.Ping(id=rid())), f.Pong)
        sixth = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        assert await _closed_with(sixth) == CloseCode.TRY_AGAIN
        # A connection that authenticates no longer counts; one that closes neither.
        await guests[0].register("nowknown")
        await guests[0].authenticate()
        await guests[1].close()
        await asyncio.sleep(0.1)
        again = [await RawClient.connect(hub.url) for _ in range(2)]
        for g in again:
            assert isinstance(await g.request(f.Ping(id=rid())), f.Pong)
        for g in [*guests, *others, *again]:
            await g.close()


async def test_failed_login_buckets_hold_across_nodes_in_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    shared: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_prefix": f"{redis_prefix}auth:",
        "login_fail_handle_rate": (0.01, 2),
        "data_key": b"k" * 32,
    }
    async with (
        start_hub(tmp_path / "a", node_id="a", **shared) as node_a,
        start_hub(tmp_path / "b", node_id="b", **shared) as node_b,
    ):
        on_a = await RawClient.connect(node_a.url)
        on_b = await RawClient.connect(node_b.url)
        assert _code(await on_a.request(_wrong_login("sharedhandle"))) == "auth_failed"
        assert _code(await on_b.request(_wrong_login("sharedhandle"))) == "auth_failed"
        assert _code(await on_a.request(_wrong_login("sharedhandle"))) == "rate_limited"
        assert _code(await on_b.request(_wrong_login("sharedhandle"))) == "rate_limited"
        await on_a.close()
        await on_b.close()


def test_the_client_address_behind_a_trusted_proxy() -> None:
    from chat_server.guard import client_address

    proxy = ("10.0.0.5", 40000)
    assert client_address(("192.0.2.7", 1), None, ()) == "192.0.2.7"
    # A proxy's X-Forwarded-For counts only when the proxy is trusted, and only its last
    # hop (what the proxy saw; earlier hops are the client's own claim).
    assert client_address(proxy, "1.1.1.1, 198.51.100.9", ("10.0.0.5",)) == "198.51.100.9"
    assert client_address(proxy, "198.51.100.9", ()) == "10.0.0.5"
    assert client_address(("192.0.2.7", 1), "6.6.6.6", ("10.0.0.5",)) == "192.0.2.7"
    assert client_address(None, None, ()) == "unknown"


async def test_freed_hash_slots_go_to_waiting_addresses_in_turn() -> None:
    """One address with a queue of requests does not make another wait behind all of
    them: the next slot goes to the next address in turn; a cancelled waiter gives up
    its place; refusals past the bounds are ``busy``."""
    from chat_server.guard import WorkGate
    from protocol.errors import Busy

    gate = WorkGate(total=1, per_ip=3, queue=4)
    order: list[str] = []
    release = asyncio.Event()

    async def hash_for(ip: str, tag: str) -> None:
        async with gate.slot(ip):
            order.append(tag)
            await release.wait()

    first = asyncio.create_task(hash_for("a", "a1"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(hash_for("a", f"a{i}")) for i in (2, 3)]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(hash_for("b", "b1")))
    gone = asyncio.create_task(hash_for("c", "c1"))
    await asyncio.sleep(0)
    with pytest.raises(Busy):  # a's third at once
        async with gate.slot("a"):
            pass
    with pytest.raises(Busy):  # four waiting already
        async with gate.slot("d"):
            pass
    gone.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["a1", "a2", "b1", "a3"]
    assert gate.granted == 4 and gate.refused == 2 and gate.held_by("a") == 0
    async with gate.slot("e"):  # everything was given back
        assert gate.held_by("e") == 1


async def test_the_sdk_waits_out_busy_and_logs_in(tmp_path: Path) -> None:
    """A login answered ``busy`` is tried again after the hub's retry_after_ms."""
    from chat_client import ChatClient

    async with start_hub(
        tmp_path / "hub", argon2_concurrency=1, argon2_queue=0, **SLOW_HASH
    ) as hub:
        sdk = await ChatClient.register(
            hub.url, "patient", "plum-orbit-canyon-47", home=tmp_path / "a"
        )
        await sdk.close()
        hog = await RawClient.connect(hub.url, **OTHER_ADDRESS)
        granted = _gate(hub).granted
        await hog.send(_wrong_login("someone"))
        while _gate(hub).granted == granted:  # the hog holds the only slot
            await asyncio.sleep(0.001)
        refused = _gate(hub).refused
        client = await ChatClient.login(
            hub.url, "patient", "plum-orbit-canyon-47", home=tmp_path / "b"
        )
        assert _gate(hub).refused > refused  # it was told busy at least once, and waited
        await client.close()
        await hog.close()


async def test_refused_strangers_wait_for_their_answer(tmp_path: Path) -> None:
    """The tarpit: a throttled login, and a stranger's frame over the session's rate,
    are answered only after ``tarpit_s`` (the connection reads nothing meanwhile)."""
    async with start_hub(
        tmp_path, tarpit_s=0.4, login_fail_handle_rate=(0.01, 1), rate_per_s=0.01, rate_burst=4
    ) as hub:
        peer = await RawClient.connect(hub.url)
        loop = asyncio.get_running_loop()
        assert _code(await peer.request(_wrong_login("tarpitted"))) == "auth_failed"
        started = loop.time()
        assert _code(await peer.request(_wrong_login("tarpitted"))) == "rate_limited"
        assert loop.time() - started >= 0.35
        assert isinstance(await peer.request(f.Ping(id=rid())), f.Pong)
        assert isinstance(await peer.request(f.Ping(id=rid())), f.Pong)  # the 4th frame
        started = loop.time()
        assert _code(await peer.request(f.Ping(id=rid()))) == "rate_limited"
        assert loop.time() - started >= 0.35
        await peer.close()
