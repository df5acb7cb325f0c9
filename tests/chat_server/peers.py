"""A recording stand-in for a connection, for tests of the hub without sockets."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec

from protocol import codec
from protocol import frames as f

__all__ = ["RecordingPeer"]

_T = TypeVar("_T", bound=msgspec.Struct)


class RecordingPeer:
    """A :class:`~chat_server.context.Peer` that keeps what it is sent, decoded."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.frames: list[f.ServerFrame] = []
        self.closed: tuple[int, str] | None = None
        self._arrived = asyncio.Event()

    def push(self, frame: msgspec.Struct) -> None:
        self.push_raw(codec.encode(frame))

    def push_raw(self, data: bytes) -> None:
        # Through the real codec, as a client would read it.
        self.frames.append(codec.decode_server(data))
        self._arrived.set()

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def of(self, kind: type[_T]) -> list[_T]:
        return [x for x in self.frames if isinstance(x, kind)]

    async def next(self, kind: type[_T], timeout: float = 5.0) -> _T:
        """Wait until a frame of ``kind`` has arrived (event-driven, no polling sleep)."""
        async with asyncio.timeout(timeout):
            while not self.of(kind):
                self._arrived.clear()
                await self._arrived.wait()
        return self.of(kind)[0]
