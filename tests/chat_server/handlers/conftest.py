"""The ``world`` fixture: the real hub services over a real SQLite file, no socket
(tests/helpers/usecases.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_server.hub import Hub
from storage.engine import open_database, sqlite_url
from tests.helpers.hubs import test_config
from tests.helpers.usecases import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = test_config(tmp_path)
    db = await open_database(sqlite_url(tmp_path / "chat.db"), config.resolved_data_key())
    hub = Hub(config, db, config.server_key())
    await hub.start()
    try:
        yield World(hub)
    finally:
        await hub.shutdown()
        await db.close()
