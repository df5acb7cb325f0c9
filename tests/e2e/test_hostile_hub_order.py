"""Attack 3 of issue 10 against the real hub: a database writer deletes a message and
re-chains, reorders two, or replays one (tests/helpers/dbwriter.py, between two hub
runs). The chain still adds up, so only the order the participants signed can tell:
the client warns (WarningEvent and ``history`` lines naming the seq and kind)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from chat_client import ChatClient, WarningEvent
from tests.helpers import dbwriter
from tests.helpers.clients import (
    PASS_CLIENT,
    next_message,
    register_client,
    register_counselor,
    take_until,
)
from tests.helpers.dbwriter import TURNS
from tests.helpers.hubs import start_hub

ROOT = Path(__file__).resolve().parents[2]


async def conversation(tmp_path: Path) -> tuple[Path, str]:
    """The six-message case of the issue, each turn read by the other side before the
    next is written (so every envelope signs the turn before it); returns (hub dir,
    case id) with the hub stopped and both key stores' cursors saved."""
    hub_dir = tmp_path / "hub"
    async with start_hub(hub_dir) as hub:
        counselor = await register_counselor(hub, tmp_path / "co")
        client = await register_client(hub, tmp_path / "cl")
        case = await client.open_case("anxiety", "en")
        sides = {"client": (client, counselor), "counselor": (counselor, client)}
        for who, text in TURNS:
            writer, reader = sides[who]
            await writer.send(case.case_id, text)
            assert (await next_message(reader)).body == text
        history, problems = await client.history_report(case.case_id)
        assert [m.body for m in history] == [t for _, t in TURNS] and problems == []
        # The last turn is the counselor's, read by the client: its cursor is at seq 6.
        await asyncio.gather(client.close(), counselor.close())
    return hub_dir, case.case_id


async def cli_history(home: Path, url: str, case_id: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHAT_PASSPHRASE": PASS_CLIENT}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat_client", "--home", str(home), "--server", url,
        "history", case_id,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("attack", "kind", "seq"),
    [
        ("delete", "dropped", 4),  # the client's n=2 ("NO ...") is gone; n=3 shows at 4
        ("swap", "reordered", 2),  # seqs 2 and 3 exchanged: seq 2 now signs "after seq 2"
        ("replay", "replayed", 7),  # seq 1 stored again at the end
    ],
)
async def test_hostile_hub_rewritten_history_is_reported(
    tmp_path: Path, attack: str, kind: str, seq: int
) -> None:
    hub_dir, case_id = await conversation(tmp_path)
    db = hub_dir / "chat.db"
    if attack == "delete":
        dbwriter.delete_message(db, case_id, 3)
    elif attack == "swap":
        dbwriter.swap_messages(db, case_id, 2, 3)
    else:
        dbwriter.replay_message(db, case_id, 1)

    async with start_hub(hub_dir) as hub:
        client = await ChatClient.open(hub.url, tmp_path / "cl", PASS_CLIENT)
        try:
            # The resync at connect time checks the case and warns, naming the seq.
            seen = await take_until(
                client,
                lambda e: isinstance(e, WarningEvent) and (e.kind, e.seq) == (kind, seq),
                timeout=15,
            )
            warning = seen[-1]
            assert isinstance(warning, WarningEvent) and warning.case_id == case_id
            assert warning.seq == seq and f"seq {seq}" in warning.text
            _, problems = await client.history_report(case_id)
            assert any((p.kind, p.seq) == (kind, seq) for p in problems), problems
            if attack == "swap":
                # Seq 6, the client's stored cursor, now has another chain hash.
                assert any(
                    (p.kind, p.seq) == ("rewritten", 6) and "seen chain hash changed" in p.detail
                    for p in problems
                ), problems
        finally:
            await client.close()
        rc, out, err = await cli_history(tmp_path / "cl", hub.url, case_id)
        assert rc == 0, err
        assert f"! WARNING history does not match what was signed: seq {seq}: {kind}" in out
    if attack == "delete":
        assert "NO. Do not call anyone." not in out  # really gone, and the gap is named
