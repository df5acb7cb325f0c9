"""Clients that ask for a lot and never read the answers (issue 13, item 2).

Shared by the RSS test (tests/e2e/test_slow_consumer_memory.py) and the abuse benchmark
(scripts/abuse_wire.py): a case filled with large messages, then sessions of its client
that each send ``syncs`` sync requests for the whole case (within the default rate
limit's burst) and read nothing, so the hub has megabytes to send to each of them and a
socket that takes none of it. The hub must cut each one off at its byte budget and give
the memory back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from protocol import frames as f
from tests.helpers.rawclient import RawClient, pair, rid

__all__ = ["FilledCase", "abandon", "fill_case", "never_reading_round", "rss_kib"]


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (/proc/PID/status, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class FilledCase:
    client: RawClient
    counselor: RawClient
    case_id: str


async def fill_case(url: str, invite: str, messages: int = 100, chars: int = 4000) -> FilledCase:
    """A client and a counselor with one case holding ``messages`` bodies of ``chars``:
    a sync of the whole case is ~``messages * chars * 1.4`` bytes."""
    client, counselor, case, key = await pair(url, invite)
    for start in range(0, messages, 20):
        batch = [
            client.encrypt(key, case.case_id, "m" * chars)
            for _ in range(start, min(messages, start + 20))
        ]
        acks = await client.pipeline(batch)
        assert all(isinstance(a, f.MsgAck) for a in acks.values()), acks
    return FilledCase(client, counselor, case.case_id)


async def never_reading_round(
    url: str, filled: FilledCase, sessions: int, syncs: int = 120
) -> list[RawClient]:
    """Open ``sessions`` sessions of the client, each sending ``syncs`` syncs of the whole
    case without reading; returns them (close them with :func:`abandon`)."""
    peers = [await filled.client.session_of_same_account(url) for _ in range(sessions)]

    async def flood(peer: RawClient) -> None:
        with contextlib.suppress(ConnectionClosed):  # the hub may cut it off meanwhile
            for _ in range(syncs):
                await peer.send(f.Sync(id=rid(), case_id=filled.case_id, after_seq=0))

    await asyncio.gather(*(flood(p) for p in peers))
    return peers


def abandon(peers: list[RawClient]) -> None:
    """Drop the never-reading connections without a closing handshake (their sockets
    are clogged with what they never read)."""
    for peer in peers:
        peer.ws.transport.abort()
