"""Stand-ins for tests of the hub's parts without sockets: a recording peer where a
connection would be, and account records that need no keys."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec

from protocol import codec
from protocol import frames as f
from storage.records import AccountRecord, Role

__all__ = ["RecordingPeer", "account"]

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


def account(
    account_id: str,
    role: Role = "client",
    languages: tuple[str, ...] = (),
    specialties: tuple[str, ...] = (),
) -> AccountRecord:
    """An account record with placeholder keys (for code that never checks a signature)."""
    return AccountRecord(
        id=account_id,
        handle=f"h-{account_id}",
        role=role,
        salt=bytes(16),
        opslimit=1,
        memlimit=8192,
        auth_hash="x",
        sign_pk=bytes(32),
        box_pk=bytes(32),
        wrapped_keys=bytes(104),
        languages=languages,
        specialties=specialties,
    )
