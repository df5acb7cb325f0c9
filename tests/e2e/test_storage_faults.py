"""Faults below the hub (issue 13, item 10): the database goes away under load.

* PostgreSQL backends terminated mid-load (``pg_terminate_backend``): every send is
  answered with an ack or the typed, retryable ``unavailable``, never a false ack and
  never a 1011; the hub recovers by itself and the retries (same client_msg_id) land.
* SQLite on a full filesystem (a small tmpfs the test mounts; skipped where mounting is
  not permitted): typed ``unavailable`` errors while it is full, recovery once space is
  back, nothing acked missing.
* The SDK, when the hub dies under it, never leaves an exception nobody retrieved
  ("Future exception was never retrieved", "Task exception was never retrieved").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from chat_client import ChatClient
from protocol import frames as f
from tests.helpers.cluster import fresh_database
from tests.helpers.hubs import TEST_KDF, hub_process, start_hub
from tests.helpers.rawclient import RawClient, pair, resend, rid


async def _send_all(
    client: RawClient, frames: list[f.MsgSend]
) -> tuple[dict[str, f.MsgAck], list[f.MsgSend]]:
    """Pipeline ``frames``: the acks by client_msg_id, and the frames refused as
    ``unavailable`` (anything else fails the test)."""
    answers = await client.pipeline(frames, timeout=30)
    acked: dict[str, f.MsgAck] = {}
    refused: list[f.MsgSend] = []
    for frame in frames:
        answer = answers[frame.id]
        if isinstance(answer, f.MsgAck):
            acked[frame.client_msg_id] = answer
        else:
            assert isinstance(answer, f.ErrorFrame), answer
            assert answer.code == "unavailable", answer
            refused.append(frame)
    return acked, refused


async def _retry_until_stored(
    client: RawClient, refused: list[f.MsgSend], acked: dict[str, f.MsgAck], seconds: float
) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while refused:
        assert asyncio.get_running_loop().time() < deadline, f"{len(refused)} never stored"
        more, refused = await _send_all(client, [resend(m) for m in refused])
        acked.update(more)
        if refused:
            await asyncio.sleep(0.2)


async def _check_history(
    client: RawClient, case_id: str, acked: dict[str, f.MsgAck], sent: list[f.MsgSend]
) -> None:
    """Every message stored once, each ack naming its real seq: no false ack."""
    records = await client.sync_all(case_id)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    by_cmid = {r.client_msg_id: r for r in records}
    assert len(by_cmid) == len(records)
    assert set(by_cmid) == {m.client_msg_id for m in sent}
    for cmid, ack in acked.items():
        assert by_cmid[cmid].seq == ack.seq and by_cmid[cmid].chain_hash == ack.chain_hash


# -- PostgreSQL: backends terminated mid-load ------------------------------------------


async def _terminate_backends(admin_url: str, database: str) -> int:
    import asyncpg

    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    return len(rows)


async def test_hostile_postgres_backends_terminated_mid_load(
    tmp_path: Path, pg_admin_url: str
) -> None:
    async with (
        fresh_database(pg_admin_url) as db_url,
        start_hub(tmp_path, db_url=db_url, rate_per_s=10_000, rate_burst=10_000) as hub,
    ):
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        database = make_url(db_url).database
        assert database is not None
        sent: list[f.MsgSend] = []
        acked: dict[str, f.MsgAck] = {}
        refused: list[f.MsgSend] = []
        killed = 0

        loading = True
        reads_refused = 0

        async def load() -> None:
            nonlocal loading, reads_refused
            for _ in range(15):
                batch = [client.encrypt(key, case.case_id, "x" * 200) for _ in range(20)]
                sent.extend(batch)
                more, failed = await _send_all(client, batch)
                acked.update(more)
                refused.extend(failed)
                # Reads too: each gets its answer or the same typed error.
                for read in (f.Sync(id=rid(), case_id=case.case_id), f.CaseList(id=rid())):
                    answer = await counselor.request(read)
                    if isinstance(answer, f.ErrorFrame):
                        assert answer.code == "unavailable", answer
                        reads_refused += 1
                    else:
                        assert isinstance(answer, f.SyncResult | f.CaseListResult), answer
            loading = False

        async def kill() -> None:
            nonlocal killed
            while loading:
                killed += await _terminate_backends(pg_admin_url, database)
                await asyncio.sleep(0.01)

        await asyncio.gather(load(), kill())
        assert killed > 0 and refused, (killed, len(refused))
        # The hub recovers by itself: the refused messages go in on retry.
        await _retry_until_stored(client, refused, acked, seconds=20)
        assert len(acked) == len(sent)
        await _check_history(client, case.case_id, acked, sent)
        assert client.ws.close_code is None and counselor.ws.close_code is None
        log = hub.log_file.read_text()
        assert "session.internal_error" not in log


# -- SQLite on a full filesystem --------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs mounted for this test (root only; skipped where not permitted)."""
    where = tmp_path / "fs"
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(where: Path) -> Path:
    """Write a file until the filesystem is full; return it (delete it to free space)."""
    filler = where / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(chunk)
            fh.flush()
    with contextlib.suppress(OSError), filler.open("ab") as fh:  # the last few bytes
        while True:
            fh.write(b"\0" * 512)
            fh.flush()
    assert shutil.disk_usage(where).free < 64 * 1024
    return filler


async def test_hostile_sqlite_full_disk_gives_typed_errors_and_recovers(
    tmp_path: Path, small_fs: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{small_fs / 'chat.db'}"
    async with start_hub(tmp_path, db_url=db_url, rate_per_s=10_000, rate_burst=10_000) as hub:
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        filler = _fill(small_fs)
        sent: list[f.MsgSend] = []
        acked: dict[str, f.MsgAck] = {}
        refused: list[f.MsgSend] = []
        for _ in range(40):  # until the database needs space it cannot get
            batch = [client.encrypt(key, case.case_id, "y" * 7000) for _ in range(10)]
            sent.extend(batch)
            more, failed = await _send_all(client, batch)
            acked.update(more)
            refused.extend(failed)
            if refused:
                break
        assert refused, "the full filesystem never refused a write"
        # Other requests get the typed error too, or their answer; the session stays.
        answer = await client.request(f.CaseOpen(id=rid(), topic="anxiety", language="en"))
        assert isinstance(answer, f.CaseOpened) or (
            isinstance(answer, f.ErrorFrame) and answer.code in ("unavailable", "limit_exceeded")
        ), answer
        assert isinstance(await client.request(f.Ping(id=rid())), f.Pong)

        os.unlink(filler)  # space is back: the same messages go in
        await _retry_until_stored(client, refused, acked, seconds=20)
        assert len(acked) == len(sent)
        await _check_history(client, case.case_id, acked, sent)
        assert client.ws.close_code is None
        assert "session.internal_error" not in hub.log_file.read_text()
        await counselor.close()


# -- the SDK when the hub dies ----------------------------------------------------------


async def test_sdk_leaves_no_unretrieved_exception_when_the_hub_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with hub_process(tmp_path / "hub") as hub:
        code = await hub.invite_counselor()
        counselor = await ChatClient.register(
            hub.url,
            "dying-counselor",
            "plum-orbit-canyon-47",
            home=tmp_path / "c",
            invite=code,
            **TEST_KDF,
        )
        client = await ChatClient.register(
            hub.url, "dying-client", "plum-orbit-canyon-48", home=tmp_path / "a", **TEST_KDF
        )
        case = await client.open_case("anxiety", "en")
        sends = [asyncio.ensure_future(client.send(case.case_id, f"m{i}")) for i in range(30)]
        await asyncio.sleep(0.01)
        hub.kill()  # mid-load: some sends are in flight
        await asyncio.sleep(1.5)  # the SDK notices, fails what it must, tries to reconnect
        await asyncio.wait_for(asyncio.gather(client.close(), counselor.close()), 20)
        # The sends the SDK could not finish end with an error once it is closed.
        done = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 20)
        assert any(isinstance(r, BaseException) for r in done) or len(done) == 30
        del sends, done
        gc.collect()  # unretrieved exceptions are reported when their future is freed
        await asyncio.sleep(0.1)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not [m for m in messages if "never retrieved" in m], messages
