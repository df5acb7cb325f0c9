"""Fixtures of the end-to-end tests, built on tests/helpers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.helpers.cluster import fresh_database
from tests.helpers.haproxy import Backend, RunningProxy, StartProxy, run_haproxy


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[StartProxy]:
    """Start HAProxy (TLS with a CA made for the test, free ports) in front of given
    backends: ``proxy = await haproxy([Backend("n1", "127.0.0.1", port)])``. Every
    proxy started is stopped when the test ends."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(backends: Sequence[Backend]) -> RunningProxy:
            nonlocal count
            count += 1
            return await stack.enter_async_context(
                run_haproxy(tmp_path / f"proxy{count}", backends)
            )

        yield start


@pytest.fixture
async def cluster_db(pg_admin_url: str) -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own (the cluster tests kill nodes, whose
    connections and rows must not reach other tests); dropped afterwards."""
    async with fresh_database(pg_admin_url) as url:
        yield url
