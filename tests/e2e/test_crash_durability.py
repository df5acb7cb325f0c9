"""Nothing acknowledged is ever lost: SIGKILL the hub between acked sends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chat_client import ChatClient
from tests.helpers.hubs import TEST_KDF, hub_process


async def test_every_acked_message_survives_sigkill(tmp_path: Path) -> None:
    async with hub_process(tmp_path / "hub") as hub:
        code = await hub.invite_counselor("Dr Crash", "en", "anxiety")
        counselor = await ChatClient.register(
            hub.url,
            "crash-counselor",
            "crash pass 1x",
            home=tmp_path / "c",
            invite=code,
            **TEST_KDF,
        )
        client = await ChatClient.register(
            hub.url, "crash-client", "crash pass 2x", home=tmp_path / "a", **TEST_KDF
        )
        case = await client.open_case("anxiety", "en")
        # Many concurrent sends, so they share group commits; every one is acked.
        acked = await asyncio.gather(
            *(client.send(case.case_id, f"message {i}") for i in range(120))
        )
        assert sorted(s.seq for s in acked) == list(range(1, 121))
        await asyncio.gather(client.close(), counselor.close())

        hub.kill()  # SIGKILL: no shutdown hook, no final flush
        await hub.start()

        reader = await ChatClient.open(hub.url, tmp_path / "c", "crash pass 1x")
        try:
            history = await asyncio.wait_for(reader.history(case.case_id), 20)
        finally:
            await reader.close()
        assert [m.seq for m in history] == list(range(1, 121))
        assert all(m.verified for m in history)
        by_seq = {s.seq: s.client_msg_id for s in acked}
        assert [m.client_msg_id for m in history] == [by_seq[i] for i in range(1, 121)]
        assert sorted(m.body or "" for m in history) == sorted(f"message {i}" for i in range(120))
