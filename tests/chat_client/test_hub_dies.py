"""When the hub dies under the SDK, no exception is left unretrieved (issue 13, item 10).

The hub here is a hostile test double: a websockets server that takes one frame, stops
reading (so the client's large sends block on a full socket) and then drops the
connection. The link's reader fails every pending request while their frames are still
being sent, and each request raises the send's error instead; the futures the reader
failed must not make asyncio log "Future exception was never retrieved" when freed.
(The same with the real hub killed mid-load: tests/e2e/test_storage_faults.py.)
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chat_client.connection import Link, LinkClosed
from protocol import frames as f


async def test_hostile_hub_dying_mid_send_leaves_no_unretrieved_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    reading_stopped = asyncio.Event()
    connections: list[ServerConnection] = []

    async def hub_double(ws: ServerConnection) -> None:
        connections.append(ws)
        await ws.recv()
        ws.transport.pause_reading()  # a hub that hangs: the client's sends back up
        reading_stopped.set()
        await ws.wait_closed()  # until the test drops the connection

    async with serve(hub_double, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = await Link.open(
            f"ws://127.0.0.1:{port}/ws", on_event=lambda _: None, on_close=lambda _: None
        )
        reader = asyncio.create_task(link.run())
        first = asyncio.create_task(link.request(f.Ping))
        await reading_stopped.wait()
        big = {"case_id": "c", "epoch": 1, "client_msg_id": "x", "nonce": bytes(24)}
        sends = [
            asyncio.create_task(link.request(f.MsgSend, **big, ciphertext=bytes(40_000)))
            for _ in range(300)
        ]
        await asyncio.sleep(0.3)  # many are blocked on the full socket now
        connections[0].transport.abort()  # the hub dies
        results = await asyncio.gather(first, *sends, return_exceptions=True)
        assert all(isinstance(r, LinkClosed) for r in results)
        await reader
        del results, sends, first
        gc.collect()
        await asyncio.sleep(0.05)
    unretrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not unretrieved, unretrieved[:2]
