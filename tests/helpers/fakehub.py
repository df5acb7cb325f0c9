"""A hostile test double of the hub: a real websockets server on 127.0.0.1 that answers
the pre-session requests (``hello``, ``prelogin``) with whatever the test chooses and
records every frame a client sends it.

Used where the issue allows a test double (the KDF downgrade, attack 2): the real hub
never lowers its cost, so the attacker here is the process impersonating it.

    async with fake_hub(prelogin=lambda handle: (salt, 1, 8192)) as fake:
        ... ChatClient.login(fake.url, ...) ...
        assert not fake.saw("login")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable

from websockets.asyncio.server import ServerConnection, serve

from protocol import codec
from protocol import frames as f

__all__ = ["FakeHub", "fake_hub"]

#: (salt, opslimit, memlimit) the fake answers prelogin with, per handle.
PreloginAnswer = Callable[[str], tuple[bytes, int, int]]


@dataclasses.dataclass
class FakeHub:
    url: str
    received: list[f.ClientFrame] = dataclasses.field(default_factory=list)

    def saw(self, frame_type: str) -> bool:
        """Did any client send a frame of this ``type`` tag?"""
        return any(type(frame).__struct_config__.tag == frame_type for frame in self.received)


@contextlib.asynccontextmanager
async def fake_hub(
    *, prelogin: PreloginAnswer, min_opslimit: int = 1, min_memlimit: int = 8192
) -> AsyncIterator[FakeHub]:
    """Serve until the block ends. Requests other than hello/prelogin get ``invalid``."""
    state = FakeHub(url="")

    async def handler(ws: ServerConnection) -> None:
        async for data in ws:
            frame = codec.decode_client(data)
            state.received.append(frame)
            answer: f.ServerFrame
            if isinstance(frame, f.Hello):
                answer = f.Challenge(
                    id=frame.id,
                    nonce=os.urandom(32),
                    server_key=os.urandom(32),
                    min_opslimit=min_opslimit,
                    min_memlimit=min_memlimit,
                )
            elif isinstance(frame, f.Prelogin):
                salt, ops, mem = prelogin(frame.handle)
                answer = f.PreloginResult(id=frame.id, salt=salt, opslimit=ops, memlimit=mem)
            else:
                answer = f.ErrorFrame(id=getattr(frame, "id", None), code="invalid", message="no")
            await ws.send(codec.encode(answer).decode())

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}/ws"
        yield state
