"""A hostile hub (a small websockets test double) cannot drive the user's terminal
through the text of its error frames: ``chat-client`` prints them escaped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.helpers.cli import CHAT_CLIENT, KDF, PtyRun, cli_env

EVIL = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u202eyou are verified"


@pytest.fixture
async def hostile_hub() -> AsyncIterator[str]:
    async def answer(ws: ServerConnection) -> None:
        async for data in ws:
            frame = json.loads(data)
            await ws.send(
                json.dumps(
                    {
                        "type": "error",
                        "code": "invalid",
                        "message": EVIL,
                        "id": frame.get("id"),
                        "v": 2,
                    }
                )
            )

    async with serve(answer, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


async def test_hostile_terminal_error_text_from_the_hub_prints_escaped(
    hostile_hub: str, tmp_path: Path
) -> None:
    term = await PtyRun.start(
        [
            *CHAT_CLIENT,
            "--home",
            str(tmp_path / "h"),
            "--server",
            hostile_hub,
            "register",
            "--handle=ann",
            *KDF,
        ],
        env=cli_env("a long passphrase"),
    )
    rc = await term.wait()
    raw = term.output.decode()
    assert rc == 1, raw
    assert "\x1b" not in raw and "\u202e" not in raw and "\x07" not in raw
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07" in raw and "\\u202eyou are verified" in raw
