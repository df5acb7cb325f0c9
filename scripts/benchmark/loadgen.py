"""One load-generator process: ``python -m benchmark.loadgen [--uvloop]``.

The orchestrator (``benchmark.run``) starts one or more of these and drives them with
one JSON command per line on stdin; each answers with one JSON line on stdout. Both
sides of every pair live in the same process, so a message's intended send time and its
arrival at the peer are read from the same clock without shared state (CLOCK_MONOTONIC
is system-wide, so levels also start in step across processes).

Latency is measured from the *intended* send time of a paced schedule, not from when
the sender got around to it, so a stalled server is charged for the messages it kept
waiting (no coordinated omission). At max rate it is measured from the actual send.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from protocol import chain, opening
from protocol import frames as f

from .peers import (
    INCOMING,
    Peer,
    PeerError,
    RelayIdentity,
    encrypt_frames,
    open_ws,
    setup_pair,
)
from .servers import raise_nofile

#: Latencies are recorded in microseconds, from 1 µs to 120 s, 3 significant digits.
HIST_MAX_US = 120_000_000


def new_hist() -> HdrHistogram:
    return HdrHistogram(1, HIST_MAX_US, 3)


def _us(seconds: float) -> int:
    return min(HIST_MAX_US, max(1, int(seconds * 1e6)))


@dataclass
class Level:
    """Book-keeping of one timed phase in this process."""

    expected: int
    need_delivery: bool = True
    intended: dict[str, float] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    duplicates: int = 0
    unexpected: int = 0
    bad_acks: int = 0
    errors: int = 0
    last_event: float = 0.0
    ack_hist: HdrHistogram = field(default_factory=new_hist)
    e2e_hist: HdrHistogram = field(default_factory=new_hist)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def check_done(self) -> None:
        delivered = len(self.delivered) if self.need_delivery else self.expected
        if len(self.acked) >= self.expected and delivered >= self.expected:
            self.done.set()


@dataclass
class Conn:
    ws: ClientConnection
    name: str
    frames: list[list[bytes]]  # per level
    cmids: list[list[str]]
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    fifo: deque[str] = field(default_factory=deque)  # relay acks come back in send order
    seqs: list[int] = field(default_factory=list)
    closed: str | None = None


class Worker:
    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.level: Level | None = None
        self.readers: list[asyncio.Task[None]] = []
        self.idle_peers: list[Peer] = []
        self.idle_ws: list[ClientConnection] = []

    # -- setup -------------------------------------------------------------------

    async def setup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        target, url, tag = cmd["target"], cmd["url"], cmd["tag"]
        levels: list[int] = cmd["levels"]  # messages per connection, per level
        body_chars: int = cmd["body_chars"]
        # A cluster: each pair's client and counselor on the nodes named here (URLs
        # through the load balancer), trusting the benchmark's own CA.
        placed: dict[int, tuple[str, str]] = {i: (c, k) for i, c, k in cmd.get("placement", [])}
        tls = ssl.create_default_context(cafile=cmd["ca_file"]) if cmd.get("ca_file") else None
        started = time.monotonic()
        gate = asyncio.Semaphore(16)

        async def one(index: int, invite: str, language: str) -> list[Conn]:
            async with gate:
                if target == "hub":
                    client_url, counselor_url = placed.get(index, (url, url))
                    pair = await setup_pair(
                        client_url,
                        tag,
                        index,
                        invite,
                        language,
                        counselor_url=counselor_url,
                        tls=tls,
                    )
                    sides = [("c", pair.client), ("k", pair.counselor)]
                    case_id, key = pair.case_id, pair.key
                    made = [(s, p.ws, p.identity, p.account_id) for s, p in sides]
                else:
                    fake = RelayIdentity()
                    case_id, key = fake.case_id, fake.key
                    made = []
                    for s in ("c", "k"):
                        ws = await open_ws(f"{url}/{tag}{index}")
                        made.append((s, ws, fake.identity, f"acc_relay{s}{index:08d}"))
            conns = []
            for side, ws, identity, account_id in made:
                assert identity is not None
                cmids = [
                    [f"L{lv}-p{index:06d}-{side}-{k:06d}" for k in range(n)]
                    for lv, n in enumerate(levels)
                ]
                frames = [
                    encrypt_frames(
                        identity,
                        key=key,
                        case_id=case_id,
                        sender_id=account_id,
                        cmids=c,
                        body_chars=body_chars,
                    )
                    for c in cmids
                ]
                conns.append(Conn(ws, f"{side}{index}", frames, cmids))
            return conns

        results = await asyncio.gather(
            *(
                one(i, inv, lang)
                for i, inv, lang in zip(cmd["pairs"], cmd["invites"], cmd["languages"], strict=True)
            )
        )
        self.conns = [c for pair in results for c in pair]
        self.readers = [asyncio.create_task(self._reader(c)) for c in self.conns]
        frame_bytes = [len(fr) for c in self.conns[:2] for lv in c.frames for fr in lv[:1]]
        return {
            "connections": len(self.conns),
            "setup_s": time.monotonic() - started,
            "frame_bytes": max(frame_bytes, default=0),
        }

    # -- timed phase -------------------------------------------------------------

    async def _reader(self, conn: Conn) -> None:
        ws = conn.ws
        try:
            while True:
                raw = await ws.recv(decode=False)
                now = time.monotonic()
                lvl = self.level
                if lvl is None:
                    continue
                m = INCOMING.decode(raw)
                kind = m.type
                if kind == "msg.ack" or kind == "relay.ack":
                    cmid = m.id if kind == "msg.ack" else conn.fifo.popleft()
                    sent = lvl.intended.get(cmid or "")
                    if sent is None or cmid in lvl.acked or m.duplicate:
                        lvl.bad_acks += 1
                        continue
                    lvl.acked.add(cmid)  # type: ignore[arg-type]
                    lvl.ack_hist.record_value(_us(now - sent))
                    if kind == "msg.ack":
                        conn.seqs.append(m.seq)
                    conn.window.release()
                elif kind == "msg.new" or kind == "msg.send":
                    cmid = m.message.client_msg_id if m.message is not None else m.client_msg_id
                    sent = lvl.intended.get(cmid or "")
                    if sent is None:
                        lvl.unexpected += 1
                        continue
                    if cmid in lvl.delivered:
                        lvl.duplicates += 1
                        continue
                    lvl.delivered.add(cmid)  # type: ignore[arg-type]
                    lvl.e2e_hist.record_value(_us(now - sent))
                elif kind == "error":
                    lvl.errors += 1
                    continue
                else:
                    continue  # events from set-up (case.assigned, case.key.new)
                lvl.last_event = now
                lvl.check_done()
        except ConnectionClosed as exc:
            conn.closed = f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}"
            if self.level is not None:
                self.level.done.set()  # nothing more will arrive: stop waiting

    async def _sender(
        self, conn: Conn, index: int, lvl: Level, rate: float, t0: float, relay: bool
    ) -> None:
        interval = 1.0 / rate if rate > 0 else 0.0
        due = t0 + random.random() * interval  # spread the pairs over one interval
        ws = conn.ws
        for frame, cmid in zip(conn.frames[index], conn.cmids[index], strict=True):
            if interval:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                intended = due
                due += interval
            await conn.window.acquire()
            if not interval:
                intended = time.monotonic()
            lvl.intended[cmid] = intended
            if relay:
                conn.fifo.append(cmid)
            try:
                await ws.send(frame, text=True)
            except ConnectionClosed:
                return

    async def run_level(self, cmd: dict[str, Any]) -> dict[str, Any]:
        index: int = cmd["level"]
        rate: float = cmd["rate_per_conn"]
        relay: bool = cmd["target"] == "relay"
        expected = sum(len(c.cmids[index]) for c in self.conns)
        lvl = Level(expected, need_delivery=cmd.get("deliveries", True))
        for c in self.conns:
            c.window = asyncio.Semaphore(cmd["window"])
            c.seqs = []
            c.fifo.clear()
        self.level = lvl
        t0: float = cmd["start_at"]
        delay = t0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        senders = [
            asyncio.create_task(self._sender(c, index, lvl, rate, t0, relay)) for c in self.conns
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lvl.done.wait(), cmd["timeout_s"])
        for s in senders:
            s.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        self.level = None
        bad_seqs = 0
        if not relay:
            # Each pair's messages of this level hold one gap-free block of its case's seqs.
            by_pair: dict[str, list[int]] = {}
            for c in self.conns:
                by_pair.setdefault(c.name[1:], []).extend(c.seqs)
            for seqs in by_pair.values():
                if seqs and (len(set(seqs)) != len(seqs) or max(seqs) - min(seqs) + 1 != len(seqs)):
                    bad_seqs += 1
        return {
            "expected": expected,
            "sent": len(lvl.intended),
            "acked": len(lvl.acked),
            "delivered": len(lvl.delivered),
            "duplicates": lvl.duplicates,
            "unexpected": lvl.unexpected,
            "bad_acks": lvl.bad_acks,
            "bad_seq_pairs": bad_seqs,
            "errors": lvl.errors,
            "closed": [c.closed for c in self.conns if c.closed],
            "start": t0,
            "end": lvl.last_event,
            "ack_hist": base64.b64encode(lvl.ack_hist.encode()).decode(),
            "e2e_hist": base64.b64encode(lvl.e2e_hist.encode()).decode(),
        }

    async def close_all(self) -> dict[str, Any]:
        for r in self.readers:
            r.cancel()
        await asyncio.gather(*(c.ws.close() for c in self.conns), return_exceptions=True)
        self.conns, self.readers = [], []
        return {}

    # -- idle connections --------------------------------------------------------

    async def idle_accounts(self, cmd: dict[str, Any]) -> dict[str, Any]:
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> Peer:
            async with gate:
                peer = Peer(await open_ws(cmd["url"]))
                await peer.register(f"i{cmd['tag']}{i}")
                await peer.ws.close()
                return peer

        self.idle_peers = list(await asyncio.gather(*(one(i) for i in cmd["accounts"])))
        return {"accounts": len(self.idle_peers)}

    async def idle_connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        gate = asyncio.Semaphore(cmd.get("concurrency", 64))

        async def one(peer: Peer) -> ClientConnection:
            async with gate:
                session = peer.clone(await open_ws(cmd["url"]))
                await session.authenticate()
                return session.ws

        started = time.monotonic()
        jobs = [one(p) for p in self.idle_peers for _ in range(cmd["per_account"])]
        self.idle_ws = list(await asyncio.gather(*jobs))
        return {"connected": len(self.idle_ws), "connect_s": time.monotonic() - started}

    async def idle_check(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """How many idle sessions are still open (the hub must not have dropped any)."""
        from websockets.protocol import State

        return {"open": sum(1 for ws in self.idle_ws if ws.state is State.OPEN)}

    async def idle_close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        gate = asyncio.Semaphore(256)

        async def one(ws: ClientConnection) -> None:
            async with gate:
                await ws.close()

        await asyncio.gather(*(one(ws) for ws in self.idle_ws), return_exceptions=True)
        self.idle_ws = []
        return {}

    # -- catch-up sync -----------------------------------------------------------

    async def sync(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """A counselor sends N messages while its client is offline; time the catch-up."""
        n: int = cmd["messages"]
        pair = await setup_pair(cmd["url"], cmd["tag"], 0, cmd["invite"], cmd["language"])
        await pair.client.ws.close()
        counselor = pair.counselor
        assert counselor.identity is not None
        cmids = [f"S-{k:07d}" for k in range(n)]
        frames = encrypt_frames(
            counselor.identity,
            key=pair.key,
            case_id=pair.case_id,
            sender_id=counselor.account_id,
            cmids=cmids,
            body_chars=cmd["body_chars"],
        )
        conn = Conn(counselor.ws, "k0", [frames], [cmids])
        self.conns = [conn]
        self.readers = [asyncio.create_task(self._reader(conn))]
        lvl = await self.run_level(
            {
                "level": 0,
                "rate_per_conn": 0,
                "target": "hub",
                "window": 256,
                "start_at": 0,
                "timeout_s": 120,
                "deliveries": False,  # the client is offline: nobody receives them live
            }
        )
        stored = lvl["acked"]
        await self.close_all()

        t_connect = time.monotonic()
        client = pair.client.clone(await open_ws(cmd["url"]))
        welcome = await client.authenticate()
        last_seq = next((c.last_seq for c in welcome.cases if c.case_id == pair.case_id), 0)
        t_sync = time.monotonic()
        records: list[f.MessageRecord] = []
        after, requests = 0, 0
        while True:
            res = await client.request(
                f.Sync(id=f"y{requests}", case_id=pair.case_id, after_seq=after)
            )
            requests += 1
            records.extend(res.messages)
            if res.messages:
                after = res.messages[-1].seq
            if not res.has_more:
                break
        t_done = time.monotonic()
        # What a real client does next: check the hash chain and decrypt every message.
        head = chain.GENESIS
        ok_chain = True
        for r in records:
            head = chain.chain_hash(
                head,
                case_id=r.case_id,
                seq=r.seq,
                epoch=r.epoch,
                sender_id=r.sender_id,
                client_msg_id=r.client_msg_id,
                nonce=r.nonce,
                ciphertext=r.ciphertext,
            )
            ok_chain = ok_chain and head == r.chain_hash
            opening.decrypt_message(
                pair.key,
                counselor.identity.sign_pk,
                case_id=r.case_id,
                epoch=r.epoch,
                sender_id=r.sender_id,
                client_msg_id=r.client_msg_id,
                nonce=r.nonce,
                ciphertext=r.ciphertext,
            )
        t_verified = time.monotonic()
        await client.ws.close()
        seqs = [r.seq for r in records]
        got = [r.client_msg_id for r in records]
        return {
            "messages": n,
            "stored": stored,
            "welcome_last_seq": last_seq,
            "received": len(records),
            "exactly_once": sorted(got) == sorted(cmids) and len(set(got)) == len(got),
            "in_order": seqs == list(range(1, n + 1)),
            "chain_ok": ok_chain,
            "requests": requests,
            "connect_auth_s": t_sync - t_connect,
            "sync_s": t_done - t_sync,
            "verify_decrypt_s": t_verified - t_done,
        }


async def serve_commands() -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    handlers = {
        "setup": worker.setup,
        "run_level": worker.run_level,
        "close": lambda _cmd: worker.close_all(),
        "idle_accounts": worker.idle_accounts,
        "idle_connect": worker.idle_connect,
        "idle_check": worker.idle_check,
        "idle_close": worker.idle_close,
        "sync": worker.sync,
    }
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        try:
            reply = await handlers[cmd["cmd"]](cmd)
            reply["ok"] = True
        except (PeerError, OSError, ConnectionClosed, TimeoutError, AssertionError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmark.loadgen")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve_commands())
    else:
        asyncio.run(serve_commands())
    return 0


if __name__ == "__main__":
    sys.exit(main())
