"""Fixtures for client tests against the real hub (tests/hubtools.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chat_client import ChatClient, Event, Message, MessageEvent
from protocol.frames import CaseInfo

try:
    from tests.hubtools import TEST_KDF, RunningHub, start_hub
except ImportError:  # the server is not importable yet: network tests are skipped
    start_hub = None  # type: ignore[assignment]
    TEST_KDF = {"opslimit": 1, "memlimit": 8192}

PASS_CLIENT = "client passphrase"
PASS_COUNSELOR = "counselor passphrase"


@dataclasses.dataclass
class Pair:
    hub: RunningHub
    tmp_path: Path
    client: ChatClient
    counselor: ChatClient
    case: CaseInfo


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    if start_hub is None:
        pytest.skip("chat_server is not importable")
    async with start_hub(tmp_path / "hub") as running:
        yield running


async def register_counselor(hub: RunningHub, home: Path, handle: str = "dr-who") -> ChatClient:
    code = await hub.invite_counselor(handle, ("en",), ("anxiety",))
    return await ChatClient.register(
        hub.url, handle, PASS_COUNSELOR, home=home, invite=code, **TEST_KDF
    )


async def register_client(hub: RunningHub, home: Path, handle: str = "alice") -> ChatClient:
    return await ChatClient.register(hub.url, handle, PASS_CLIENT, home=home, **TEST_KDF)


@pytest.fixture
async def pair(hub: RunningHub, tmp_path: Path) -> AsyncIterator[Pair]:
    counselor = await register_counselor(hub, tmp_path / "counselor")
    client = await register_client(hub, tmp_path / "client")
    case = await client.open_case("anxiety", "en")
    assert case.state == "assigned" and case.counselor_id == counselor.account_id
    try:
        yield Pair(hub, tmp_path, client, counselor, case)
    finally:
        await client.close()
        await counselor.close()


async def take(client: ChatClient, n: int, *, timeout: float = 10.0) -> list[Message]:
    """The next ``n`` messages from ``client.events()`` (other events are skipped)."""
    got: list[Message] = []

    async def run() -> None:
        async for event in client.events():
            if isinstance(event, MessageEvent):
                got.append(event.message)
                if len(got) >= n:
                    return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"got {len(got)} of {n} messages: {got}") from None
    return got


async def take_event(client: ChatClient, kind: type[Any], *, timeout: float = 10.0) -> Event:
    async def run() -> Event:
        async for event in client.events():
            if isinstance(event, kind):
                return event
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(run(), timeout)
