"""A session's memory is bounded in bytes and given back at close (issue 13, item 2).

The send queue of a reader that does not read is cut at ``send_queue_bytes`` (not only
at ``send_queue_frames``), and once the session has ended nothing of it (its queue, its
tasks) waits for a garbage collection: reference counting alone frees it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_server.session import Session
from protocol import frames as f
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import pair
from tests.helpers.waiting import wait_until

BUDGET = 256 * 1024


def _events(hub: RunningHub, name: str) -> list[dict[str, object]]:
    found = []
    for line in hub.log_file.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == name:
            found.append(entry)
    return found


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees memory while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_hostile_slow_consumer_is_cut_at_its_byte_budget_and_freed_at_close(
    tmp_path: Path, no_gc: None
) -> None:
    async with start_hub(
        tmp_path, send_queue_bytes=BUDGET, rate_per_s=10_000, rate_burst=10_000
    ) as hub:
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        sessions = {
            o.session_id: weakref.ref(o) for o in gc.get_objects() if isinstance(o, Session)
        }
        assert len(sessions) == 2
        # The counselor stops reading; the client sends 8 KB messages, fanned out to it.
        body = "x" * 7900
        for _ in range(150):  # 20 at a time; the kernel's socket buffers take megabytes
            batch = [client.encrypt(key, case.case_id, body) for _ in range(20)]
            acks = await client.pipeline(batch)
            assert all(isinstance(ack, f.MsgAck) for ack in acks.values())
            if _events(hub, "session.slow_consumer"):
                break
        else:
            pytest.fail("the hub kept buffering for a reader that does not read")
        (slow,) = _events(hub, "session.slow_consumer")
        # Cut by bytes, far below the frame budget (1024 frames of ~11 KB: 11 MB).
        assert isinstance(slow["queued_bytes"], int) and slow["queued_bytes"] <= BUDGET
        assert isinstance(slow["queued_frames"], int) and slow["queued_frames"] < 64
        session_id = slow["session"]
        assert isinstance(session_id, str) and session_id in sessions

        # The session ends (the hub aborts the clogged socket within close_timeout_s)...
        await wait_until(
            lambda: any(e["session"] == session_id for e in _events(hub, "session.closed")),
            "the slow consumer's session to end",
            timeout=3 * hub.config.close_timeout_s,
        )
        await asyncio.sleep(0.1)  # the handler task returns after its last log line
        # ... and nothing of it is left: no cycle keeps it (or its queue) for a collection.
        leftover = sessions[session_id]()
        if leftover is not None:
            holders = [type(r).__name__ for r in gc.get_referrers(leftover)]
            pytest.fail(f"the closed session is still referenced by {holders}")
        # The other side is unaffected.
        ack = await client.request(client.encrypt(key, case.case_id, "still here"))
        assert isinstance(ack, f.MsgAck)
        counselor.ws.transport.abort()  # its socket is clogged with what it never read
