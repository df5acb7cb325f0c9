"""The baseline: a raw WebSocket relay with the hub's transport settings and nothing else.

``python -m benchmark.relay --port P [--uvloop]``

Connections name their pair in the path (``/ws/PAIR``). Each text frame is forwarded,
byte for byte, to the other connection of the pair, and the sender gets one fixed
acknowledgement frame as big as the hub's ``msg.ack``, so both servers write the same
frames per message (one ack to the sender, one copy to the peer). It parses nothing,
checks nothing and stores nothing: the upper bound for any hub on this websockets
version, and the denominator of the hub/baseline ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from protocol.limits import MAX_FRAME_BYTES

#: Same size as a hub msg.ack (id, case_id, client_msg_id, seq, 44-char chain hash).
ACK = (
    b'{"type":"relay.ack","id":"L0-p000000-c-000000","case_id":"case_0123456789abcdef0123",'
    b'"client_msg_id":"L0-p000000-c-000000","seq":100000,'
    b'"chain_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","duplicate":false,"v":1}'
)


class Relay:
    def __init__(self) -> None:
        self._waiting: dict[str, ServerConnection] = {}
        self._peers: dict[ServerConnection, ServerConnection] = {}

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        key = ws.request.path.rsplit("/", 1)[-1]
        other = self._waiting.pop(key, None)
        if other is None:
            self._waiting[key] = ws
        else:
            self._peers[ws] = other
            self._peers[other] = ws
        try:
            async for frame in ws:
                peer = self._peers.get(ws)
                if peer is not None:
                    await peer.send(frame)
                await ws.send(ACK, text=True)
        except ConnectionClosed:
            pass
        finally:
            if self._waiting.get(key) is ws:
                del self._waiting[key]
            self._peers.pop(ws, None)


async def run(port: int) -> None:
    relay = Relay()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The hub's settings (chat_server/app.py): no compression, same frame and queue limits.
    async with serve(
        relay.handle,
        "127.0.0.1",
        port,
        compression=None,
        max_size=MAX_FRAME_BYTES,
        max_queue=16,
        write_limit=64 * 1024,
    ):
        print(f"relay listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmark.relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.uvloop:
            import uvloop

            uvloop.run(run(args.port))
        else:
            asyncio.run(run(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
