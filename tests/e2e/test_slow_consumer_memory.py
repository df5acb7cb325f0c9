"""Never-reading clients do not grow the hub's memory for good (issue 13, item 2).

The real hub runs as a child process with its default limits (only the KDF cost is
lowered); its resident set size is read from /proc/PID/status. Each round opens
several sessions that ask for megabytes (syncs of a large case, within the default
rate limit's burst) and never read; the hub must cut each one off at its byte budget
(4008, or an abort when even the close frame cannot get through) and, once they are
gone, be back within a stated bound of where it started. Before the byte budget and the
release at close, three rounds took a hub from 65 to 269 MiB.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from protocol.limits import SEND_QUEUE_BYTES
from tests.helpers.hubs import hub_process
from tests.helpers.slowreaders import abandon, fill_case, never_reading_round, rss_kib
from tests.helpers.waiting import wait_until

ROUNDS = 3
SESSIONS = 4
#: What the hub may hold beyond its start while the never-reading sessions are open:
#: each one's send queue (SEND_QUEUE_BYTES) plus its socket buffer and what is being
#: encoded, with room for the allocator's slack.
PEAK_BOUND_KIB = (SESSIONS * SEND_QUEUE_BYTES) // 1024 + 48 * 1024
#: Where the hub must be once they are gone (freed memory the allocator keeps for reuse).
AFTER_BOUND_KIB = 16 * 1024


async def test_hostile_never_reading_clients_leave_rss_where_it_started(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as hub:
        assert hub.proc is not None
        pid = hub.proc.pid
        filled = await fill_case(hub.url, await hub.invite_counselor())
        synced = await filled.client.sync_all(filled.case_id)  # warm: one read of it all
        assert len(synced) == 100
        start = rss_kib(pid)
        peak = start
        for round_ in range(ROUNDS):
            peers = await never_reading_round(hub.url, filled, SESSIONS)
            want = SESSIONS * (round_ + 1)

            def all_cut(want: int = want) -> bool:
                nonlocal peak
                peak = max(peak, rss_kib(pid))
                return hub.log_file.read_text().count('"session.slow_consumer"') >= want

            await wait_until(all_cut, f"the hub to cut {SESSIONS} slow readers", timeout=20)
            abandon(peers)
            await wait_until(
                lambda want=want: hub.log_file.read_text().count('"session.closed"') >= want,
                "the slow readers' sessions to end",
                timeout=10,
            )
        # The legitimate session still works, and the memory is back.
        assert len(await filled.client.sync_all(filled.case_id)) == 100
        deadline = time.monotonic() + 5
        after = rss_kib(pid)
        while after - start > AFTER_BOUND_KIB and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            after = rss_kib(pid)
        report = f"start {start} KiB, peak {peak} KiB, after {after} KiB"
        assert peak - start <= PEAK_BOUND_KIB, report
        assert after - start <= AFTER_BOUND_KIB, report
