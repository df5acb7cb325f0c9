"""``scripts/abuse-wire [--quick] [--out FILE]``: what hostile wire traffic costs the hub.

Runs the real hub (``chat-server serve``, default limits, SQLite, test KDF cost) as a
child process on 127.0.0.1 and measures, in one run (docs/PERFORMANCE.md, "Hostile wire
input"):

1. **Memory under never-reading clients.** K sessions ask for megabytes (syncs of a
   large case, within the default rate limit's burst) and read nothing; the hub's
   resident set size (``/proc/PID/status`` VmRSS) at the start, at its peak while they
   are connected, and after they are cut off (4008 / abort), for several K.
2. **Garbage absorbed, others' latency.** Legitimate pairs send paced messages and time
   each ``msg.send`` → ``msg.ack``; first alone (the baseline), then while garbage
   workers (separate processes) pour malformed frames (invalid UTF-8, 1,000-level
   nesting, random bytes, text and binary frames, a ping between them so the sessions
   stay open) at the hub as fast as it answers. Reported: garbage frames answered per
   second, and the legitimate p50 / p99 in both phases.

Nothing leaves 127.0.0.1. Exit status 1 if the hub closed a session with 1011, logged an
exception, or lost a legitimate message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from protocol import codec  # noqa: E402
from protocol import frames as f  # noqa: E402
from tests.helpers.hubs import HubProcess, free_port  # noqa: E402
from tests.helpers.rawclient import RawClient, pair, rid  # noqa: E402
from tests.helpers.slowreaders import (  # noqa: E402
    FilledCase,
    abandon,
    fill_case,
    never_reading_round,
    rss_kib,
)

GARBAGE: list[bytes] = [
    b'{"v":1,"type":"ping","id":"a\xff"}',
    b"[" * 1000 + b"]" * 1000,
    b'{"v":1,"type":"ping","id":"n","x":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    b"\x00\xff\xfe garbage",
    b'{"v":1,"type":"msg.send","id":"g"',
]


@dataclass
class MemoryRow:
    sessions: int
    start_mib: float
    peak_mib: float
    after_mib: float
    cut: int


@dataclass
class LatencyPhase:
    name: str
    acked: int
    p50_ms: float
    p99_ms: float
    garbage_frames_per_s: float = 0.0
    #: The hub's CPU use during the phase (1.0: one core).
    hub_cpu: float = 0.0


@dataclass
class Report:
    machine: str
    memory: list[MemoryRow] = field(default_factory=list)
    latency: list[LatencyPhase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def say(text: str) -> None:
    print(f"[abuse-wire] {text}", file=sys.stderr, flush=True)


# -- 1. memory -------------------------------------------------------------------------


async def measure_memory(tmp: Path, levels: tuple[int, ...], report: Report) -> None:
    hub = HubProcess(tmp / "mem", free_port())
    await hub.start()
    try:
        assert hub.proc is not None
        pid = hub.proc.pid
        # One case per 6 never-readers: an account has at most 8 sessions.
        cases: list[FilledCase] = []
        for level in levels:
            while len(cases) * 6 < level:
                cases.append(await fill_case(hub.url, await hub.invite_counselor()))
        for filled in cases:
            await filled.client.sync_all(filled.case_id)  # warm
        cut_before = 0
        for level in levels:
            start = rss_kib(pid)
            peak = start
            peers = []
            for i, filled in enumerate(cases):
                share = min(6, level - i * 6)
                if share > 0:
                    peers += await never_reading_round(hub.url, filled, share)
            deadline = time.monotonic() + 30
            cut = 0
            while time.monotonic() < deadline:
                peak = max(peak, rss_kib(pid))
                cut = hub.log_file.read_text().count('"session.slow_consumer"') - cut_before
                if cut >= level:
                    break
                await asyncio.sleep(0.05)
            abandon(peers)
            await asyncio.sleep(2.0)  # sessions end, the trimmer runs
            after = rss_kib(pid)
            cut_before += cut
            row = MemoryRow(level, start / 1024, peak / 1024, after / 1024, cut)
            say(f"memory: {row}")
            report.memory.append(row)
            if cut < level:
                report.problems.append(f"only {cut} of {level} never-readers were cut off")
        _check_log(hub.log_file, report)
    finally:
        hub.kill()


# -- 2. garbage versus latency ---------------------------------------------------------


async def _legit_pair(url: str, invite: str) -> tuple[RawClient, RawClient, str, bytes]:
    client, counselor, case, key = await pair(url, invite)
    return client, counselor, case.case_id, key


async def _paced_sends(
    client: RawClient, case_id: str, key: bytes, rate: float, seconds: float
) -> list[float]:
    """Send at ``rate`` per second for ``seconds``; the send→ack latencies (ms)."""
    latencies: list[float] = []
    interval = 1.0 / rate
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        frame = client.encrypt(key, case_id, "x" * 120)
        started = time.perf_counter()
        answer = await client.request(frame, timeout=10)
        if not isinstance(answer, f.MsgAck):
            raise RuntimeError(f"legitimate send refused: {answer}")
        latencies.append((time.perf_counter() - started) * 1000)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return latencies


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latency_phase(
    pairs: list[tuple[RawClient, RawClient, str, bytes]], rate: float, seconds: float
) -> list[float]:
    async def drain(counselor: RawClient) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            while True:
                await counselor.ws.recv()

    readers = [asyncio.create_task(drain(c)) for _, c, _, _ in pairs]
    try:
        runs = await asyncio.gather(
            *(_paced_sends(client, case, key, rate, seconds) for client, _, case, key in pairs)
        )
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return [x for run in runs for x in run]


async def garbage_worker(url: str, connections: int, seconds: float, rate: float) -> dict[str, int]:
    """Offer ``rate`` garbage frames per second in all through ``connections`` sessions
    (a ping after each, so that they are not closed for malformed frames in a row);
    count what the hub answered."""
    answered = 0
    sent = 0
    closes: dict[str, int] = {}
    end = time.monotonic() + seconds
    rng = random.Random(7)

    async def one() -> None:
        nonlocal answered, sent
        while time.monotonic() < end:
            try:
                async with connect(url, compression=None, max_size=2**20) as ws:

                    async def read() -> None:
                        nonlocal answered
                        async for _ in ws:
                            answered += 1

                    reader = asyncio.create_task(read())
                    batch = 16
                    interval = batch / (rate / connections)
                    next_at = time.monotonic()
                    try:
                        while time.monotonic() < end:
                            for _ in range(batch // 2):
                                data = rng.choice(GARBAGE)
                                await ws.send(data, text=rng.random() < 0.5)
                                await ws.send(codec.encode(f.Ping(id=rid())), text=True)
                                sent += 2
                            next_at += interval
                            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    finally:
                        await ws.close()
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                            await reader
            except ConnectionClosed as exc:
                code = str(exc.rcvd.code if exc.rcvd else 1006)
                closes[code] = closes.get(code, 0) + 1

    await asyncio.gather(*(one() for _ in range(connections)))
    return {"answered": answered, "sent": sent, **{f"close_{k}": v for k, v in closes.items()}}


async def measure_garbage(
    tmp: Path,
    pairs_n: int,
    rate: float,
    seconds: float,
    garbage_rates: tuple[float, ...],
    report: Report,
) -> None:
    hub = HubProcess(tmp / "garbage", free_port())
    await hub.start()
    try:
        assert hub.proc is not None
        pid = hub.proc.pid
        pairs = [await _legit_pair(hub.url, await hub.invite_counselor()) for _ in range(pairs_n)]
        say(f"legitimate load: {pairs_n} pairs at {rate:g} msg/s each, {seconds:g} s a phase")
        # Baselines between the garbage phases: the machine's other load drifts, so each
        # garbage level is compared with the baseline measured right before it.
        for offered in (0.0, *(x for r in garbage_rates for x in (r, 0.0))):
            worker = None
            if offered:
                say(f"garbage: {offered:g} frames/s offered over 8 connections")
                worker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--garbage-worker",
                    hub.url,
                    str(seconds + 1),
                    str(offered),
                    stdout=asyncio.subprocess.PIPE,
                    cwd=REPO,
                )
                await asyncio.sleep(0.5)  # the worker is connected and pouring
            cpu_before, wall_before = _cpu_s(pid), time.monotonic()
            latencies = await _latency_phase(pairs, rate, seconds)
            cpu = (_cpu_s(pid) - cpu_before) / (time.monotonic() - wall_before)
            answered = 0.0
            if worker is not None:
                out, _ = await asyncio.wait_for(worker.communicate(), 60)
                counts = json.loads(out)
                say(f"garbage worker: {counts}")
                answered = counts["answered"] / (seconds + 1)
                if "close_1011" in counts:
                    report.problems.append("the hub closed a garbage session with 1011")
            report.latency.append(
                LatencyPhase(
                    f"{offered:,.0f} garbage frames/s offered" if offered else "no garbage",
                    len(latencies),
                    _percentile(latencies, 0.5),
                    _percentile(latencies, 0.99),
                    garbage_frames_per_s=answered,
                    hub_cpu=cpu,
                )
            )
        _check_log(hub.log_file, report)
    finally:
        hub.kill()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_log(log: Path, report: Report) -> None:
    text = log.read_text()
    if '"exc_type"' in text or '"session.internal_error"' in text:
        report.problems.append(f"the hub logged an exception ({log})")


# -- output ----------------------------------------------------------------------------


def markdown(report: Report) -> str:
    lines = [
        f"Machine: {report.machine}.",
        "",
        "| never-reading sessions | RSS at start | peak | after they are cut off | cut off |",
        "|---:|---:|---:|---:|---:|",
    ]
    for m in report.memory:
        lines.append(
            f"| {m.sessions} | {m.start_mib:.0f} MiB | {m.peak_mib:.0f} MiB | "
            f"{m.after_mib:.0f} MiB | {m.cut} |"
        )
    lines += [
        "",
        "| phase | legitimate sends | p50 send→ack | p99 send→ack "
        "| garbage frames answered/s | hub CPU |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in report.latency:
        lines.append(
            f"| {p.name} | {p.acked} | {p.p50_ms:.1f} ms | {p.p99_ms:.1f} ms | "
            f"{p.garbage_frames_per_s:,.0f} | {p.hub_cpu:.0%} |"
        )
    return "\n".join(lines)


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


async def run(args: argparse.Namespace) -> int:
    report = Report(machine=_machine())
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="abuse-wire-") as tmp:
        await measure_memory(Path(tmp), (2,) if quick else (4, 8, 16), report)
        await measure_garbage(
            Path(tmp),
            pairs_n=2 if quick else 4,
            rate=20.0 if quick else 40.0,
            seconds=1.5 if quick else 6.0,
            garbage_rates=(2000.0,) if quick else (1000.0, 4000.0, 16000.0),
            report=report,
        )
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    for problem in report.problems:
        say(f"PROBLEM: {problem}")
    return 1 if report.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    parser.add_argument(
        "--garbage-worker", nargs=3, metavar=("URL", "SECONDS", "RATE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.garbage_worker:
        url, seconds, rate = args.garbage_worker
        counts = asyncio.run(garbage_worker(url, 8, float(seconds), float(rate)))
        print(json.dumps(counts))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
