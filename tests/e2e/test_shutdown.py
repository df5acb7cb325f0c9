"""SIGTERM: the hub stops accepting, finishes commits, and tells sessions to reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from protocol import frames as f
from protocol.errors import CloseCode
from tests.helpers.hubs import hub_process
from tests.helpers.rawclient import RawClient, pair, rid


async def test_sigterm_is_graceful_and_resumable(tmp_path: Path) -> None:
    async with hub_process(tmp_path) as hub:
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        # A burst in flight when the signal arrives: whatever was acked must be stored.
        sends = [client.encrypt(key, case.case_id, f"m{i}") for i in range(50)]
        for frame in sends:
            await client.send(frame)
        # The signal goes once the hub has acked the first send, with the rest in flight,
        # so the check below always has acks to check.
        first = await client.event(f.MsgAck, timeout=10)
        acked: list[int] = [first.seq]
        exit_code = await asyncio.to_thread(hub.terminate)
        try:
            while True:
                frame = await client.recv(timeout=5)
                if isinstance(frame, f.MsgAck):
                    acked.append(frame.seq)
        except ConnectionClosed:
            pass
        assert exit_code == 0
        assert client.ws.close_code == CloseCode.GOING_AWAY

        await hub.start()
        back = await RawClient.connect(hub.url)
        back.identity, back.account_id, back.token = (
            counselor.identity,
            counselor.account_id,
            counselor.token,
        )
        await back.authenticate()
        synced = await back.request(f.Sync(id=rid(), case_id=case.case_id))
        assert isinstance(synced, f.SyncResult)
        stored = [m.seq for m in synced.messages]
        assert stored == list(range(1, len(stored) + 1))
        assert acked, "nothing was acked: the subset check below would prove nothing"
        assert set(acked) <= set(stored)
