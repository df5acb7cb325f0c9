"""Fixtures for client tests against the real hub (tests/helpers/hubs.py) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.clients import Pair, register_client, register_counselor
from tests.helpers.hubs import RunningHub, start_hub


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    async with start_hub(tmp_path / "hub") as running:
        yield running


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
