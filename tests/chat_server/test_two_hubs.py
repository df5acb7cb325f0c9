"""Two hub processes on one PostgreSQL database: no hub acts on a case state that
another hub changed (docs/DECISIONS.md 29, "the casebook").

Two ``HubServer`` instances share the database and the state directory (one data key),
as two processes behind a load balancer would; real clients talk to both. They run
without Redis (no bus between them), so what is tested here is only what each hub
reads from the database; events across nodes are tested with real processes and Redis
in tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import frames as f
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import pair, rid


@pytest.fixture
async def hubs(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            start_hub(tmp_path, db_url=pg_url, log_file=tmp_path / "hub-a.log")
        )
        b = await stack.enter_async_context(
            start_hub(tmp_path, db_url=pg_url, log_file=tmp_path / "hub-b.log")
        )
        yield a, b


async def _case_row(hub: RunningHub, case_id: str) -> tuple[str, int]:
    assert hub.server.db is not None
    case = await hub.server.db.cases.get(case_id)
    assert case is not None
    return case.state, case.last_seq


async def test_a_close_on_hub_a_refuses_sends_keys_and_typing_on_hub_b(
    hubs: tuple[RunningHub, RunningHub],
) -> None:
    a, b = hubs
    client, counselor, case, key = await pair(a.url, await a.invite_counselor())
    on_b = await client.session_of_same_account(b.url)
    assert counselor.identity is not None
    # Hub B knows the case and has accepted a message for it before the close.
    ack = await on_b.request(client.encrypt(key, case.case_id, "before the close"))
    assert isinstance(ack, f.MsgAck) and ack.seq == 1

    assert isinstance(await counselor.request(f.CaseClose(id=rid(), case_id=case.case_id)), f.Ok)
    assert await _case_row(a, case.case_id) == ("closed", 1)

    refused = await on_b.request(client.encrypt(key, case.case_id, "after the close"))
    assert isinstance(refused, f.ErrorFrame), refused
    assert (refused.code, refused.message) == ("forbidden", "case is closed")
    typing = await on_b.request(f.Typing(id=rid(), case_id=case.case_id, active=True))
    assert isinstance(typing, f.ErrorFrame) and typing.code == "forbidden"
    with pytest.raises(AssertionError, match="forbidden"):  # deposit_key asserts an ok
        await on_b.deposit_key(case, counselor.identity.box_pk, epoch=2)
    # Closing again through hub B is answered, and changes nothing.
    assert isinstance(await on_b.request(f.CaseClose(id=rid(), case_id=case.case_id)), f.Ok)
    assert await _case_row(b, case.case_id) == ("closed", 1)
    # Reads still work on both hubs after the close.
    synced = await on_b.request(f.Sync(id=rid(), case_id=case.case_id))
    assert isinstance(synced, f.SyncResult) and [m.seq for m in synced.messages] == [1]


async def test_a_send_racing_a_close_is_never_acked_after_the_close(
    hubs: tuple[RunningHub, RunningHub],
) -> None:
    a, b = hubs
    client, counselor, case, key = await pair(a.url, await a.invite_counselor())
    on_b = await client.session_of_same_account(b.url)
    sends = [client.encrypt(key, case.case_id, f"racing {i}") for i in range(120)]
    late = client.encrypt(key, case.case_id, "after the close committed")
    answers: dict[str, f.ServerFrame] = {}
    first_ack = asyncio.Event()

    async def read() -> None:
        while len(answers) < len(sends) + 1:
            frame = await on_b.recv(timeout=10)
            if isinstance(frame, f.MsgAck | f.ErrorFrame) and frame.id is not None:
                answers[frame.id] = frame
                if isinstance(frame, f.MsgAck):
                    first_ack.set()

    async def stream() -> None:
        # Pipelined: never waits for an answer, so hub B keeps committing while the
        # close commits on hub A.
        for frame in sends:
            await on_b.send(frame)
            await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    writer = asyncio.create_task(stream())
    await first_ack.wait()  # hub B has acked at least one before the close is sent
    closed = await counselor.request(f.CaseClose(id=rid(), case_id=case.case_id))
    assert isinstance(closed, f.Ok)
    await writer
    await on_b.send(late)  # certainly after the close committed
    await reader

    in_order = [answers[s.id] for s in [*sends, late]]
    acked = [x for x in in_order if isinstance(x, f.MsgAck)]
    refused = [x for x in in_order if not isinstance(x, f.MsgAck)]
    assert acked and refused
    # Answers come in commit order: once the close committed, nothing is acked again.
    assert in_order == [*acked, *refused]
    assert all(
        isinstance(x, f.ErrorFrame) and (x.code, x.message) == ("forbidden", "case is closed")
        for x in refused
    )
    assert [x.seq for x in acked] == list(range(1, len(acked) + 1))
    # Exactly the acked messages are stored; the case's chain ends at the last ack.
    assert await _case_row(a, case.case_id) == ("closed", len(acked))
    assert a.server.db is not None
    stored = await a.server.db.messages.range(case.case_id, 0, 1000)
    assert [(m.seq, m.client_msg_id) for m in stored] == [(x.seq, x.client_msg_id) for x in acked]
