"""The order a client signs, against the real hub: prev_seq/prev_hash name the last record
it saw, and n continues across processes and devices (derived from synced history)."""

from __future__ import annotations

from pathlib import Path

from chat_client import ChatClient
from tests.helpers.clients import PASS_CLIENT, Pair, next_message


async def envelopes(client: ChatClient, case_id: str) -> list[tuple[int, str, int, int]]:
    messages, problems = await client.history_report(case_id)
    assert problems == []
    out = []
    for m in messages:
        assert m.envelope is not None, m
        out.append((m.seq, m.sender_id, m.envelope.prev_seq, m.envelope.n))
    return out


async def test_n_and_prev_continue_across_processes_and_devices(pair: Pair, tmp_path: Path) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "one")
    await next_message(counselor)
    await counselor.send(case.case_id, "two")
    await next_message(client)
    await client.close()

    # The same home in a new process: its counter is read back from the history.
    again = await ChatClient.open(pair.hub.url, tmp_path / "client", PASS_CLIENT)
    try:
        await again.send(case.case_id, "three")
    finally:
        await again.close()
    # Another device (a fresh home, logged in with the passphrase) continues it too.
    other = await ChatClient.login(
        pair.hub.url, "alice", PASS_CLIENT, home=tmp_path / "second-device"
    )
    try:
        await other.send(case.case_id, "four")
        me, dr = other.account_id, counselor.account_id
        assert await envelopes(other, case.case_id) == [
            (1, me, 0, 1),
            (2, dr, 1, 1),
            (3, me, 2, 2),
            (4, me, 3, 3),
        ]
    finally:
        await other.close()
