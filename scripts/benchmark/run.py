"""The orchestrator: servers up, load generators driven level by level, figures out.

Scenarios, each against its own freshly started server process:

* ``hub`` and ``relay``: N client-counselor pairs (2N connections) at a sweep of paced
  offered rates and at max rate (each sender keeps ``window`` messages unacked);
* ``target``: the hub with 1,000 connections at 5,000 msgs/s offered (the p99 ack target);
* ``idle``: RSS per idle authenticated connection at 10,000 connections;
* ``sync``: a client that missed 10,000 messages catches up (same hub as ``idle``).

Any lost, duplicated, unacked or refused message makes the run fail (exit 1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hdrh.histogram import HdrHistogram

from .servers import CHILDREN, ServerProcess, create_invites, pair_language

__all__ = [
    "Plan",
    "Workers",
    "describe",
    "drive_level",
    "level_sizes",
    "paced_levels",
    "run_all",
    "split_evenly",
]

_M = TypeVar("_M")

SCRIPTS_DIR = Path(__file__).resolve().parent.parent
REPO = SCRIPTS_DIR.parent


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (``--quick`` shrinks all of them)."""

    pairs: int
    rates: tuple[int, ...]
    level_s: float
    max_msgs_per_conn: int
    window: int
    target_pairs: int
    target_rate: int
    target_s: float
    idle_connections: int
    sessions_per_account: int
    sync_messages: int
    body_chars: int
    workers: int
    uvloop: bool
    #: Pause before reading the idle hub's RSS (handshake buffers freed, GC settled).
    settle_s: float = 3.0


class Workers:
    """Load-generator processes, one JSON command and one JSON answer per line."""

    def __init__(self, count: int, uvloop: bool) -> None:
        self.count = count
        self.uvloop = uvloop
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SCRIPTS_DIR), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        )
        cmd = [sys.executable, "-m", "benchmark.loadgen"] + (["--uvloop"] if self.uvloop else [])
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                limit=1 << 26,
            )
            CHILDREN.append(proc)
            self.procs.append(proc)

    async def call(self, index: int, cmd: dict[str, Any]) -> dict[str, Any]:
        proc = self.procs[index]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {index} died (command {cmd['cmd']})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"load generator {index}: {cmd['cmd']}: {reply.get('error')}")
        return reply

    async def each(self, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.call(i, c) for i, c in enumerate(cmds))))

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b'{"cmd": "exit"}\n')
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        self.procs = []


def merge_histograms(encoded: list[str]) -> HdrHistogram:
    total = HdrHistogram(1, 120_000_000, 3)
    for e in encoded:
        total.add(HdrHistogram.decode(base64.b64decode(e)))
    return total


def percentiles_ms(h: HdrHistogram) -> dict[str, float]:
    return {
        f"p{p:g}": round(h.get_value_at_percentile(p) / 1000, 3) for p in (50.0, 99.0, 99.9)
    } | {"max": round(h.get_max_value() / 1000, 3)}


def split_evenly(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


async def drive_level(
    workers: Workers,
    measure: Callable[[], _M],
    *,
    kind: str,
    index: int,
    name: str,
    offered: int,
    connections: int,
    msgs_per_conn: int,
    window: int,
) -> tuple[dict[str, Any], _M, _M]:
    """Run level ``index`` on every load generator: its outcome (counts, faults,
    exactly-once verdict, throughput, latencies), and ``measure()`` before and after."""
    rate_per_conn = offered / connections if offered else 0.0
    expected_s = msgs_per_conn / rate_per_conn if rate_per_conn else 30.0
    before = measure()
    start_at = time.monotonic() + 0.3
    cmd = {
        "cmd": "run_level",
        "level": index,
        "target": kind,
        "rate_per_conn": rate_per_conn,
        "window": window,
        "start_at": start_at,
        "timeout_s": expected_s + 60,
    }
    parts = await workers.each([cmd] * workers.count)
    after = measure()
    total = {k: sum(p[k] for p in parts) for k in ("expected", "sent", "acked", "delivered")}
    faults = {
        k: sum(p[k] for p in parts)
        for k in ("duplicates", "unexpected", "bad_acks", "bad_seq_pairs", "errors")
    }
    closed = [c for p in parts for c in p["closed"]]
    end = max(p["end"] for p in parts)
    elapsed = max(1e-9, end - start_at)
    complete = (
        total["sent"] == total["expected"]
        and total["acked"] == total["expected"]
        and total["delivered"] == total["expected"]
        and not any(faults.values())
        and not closed
    )
    ack = merge_histograms([p["ack_hist"] for p in parts])
    e2e = merge_histograms([p["e2e_hist"] for p in parts])
    outcome = {
        "name": name,
        "offered_msgs_per_s": offered or None,
        "messages": total["expected"],
        **total,
        **faults,
        "closed_connections": closed[:10],
        "complete": complete,
        "elapsed_s": round(elapsed, 3),
        "delivered_msgs_per_s": round(total["delivered"] / elapsed, 1),
        "ack_latency_ms": percentiles_ms(ack),
        "e2e_latency_ms": percentiles_ms(e2e),
    }
    return outcome, before, after


def describe(kind: str, result: dict[str, Any], cpu_us_per_msg: float) -> str:
    """One progress line for a level's result."""
    ack, e2e = result["ack_latency_ms"], result["e2e_latency_ms"]
    faults = {k: result[k] for k in ("sent", "acked", "delivered", "duplicates", "errors")}
    return (
        f"  {kind:5} {result['name']:>9}: {result['delivered_msgs_per_s']:>9.0f} msgs/s "
        f"delivered, ack p50/p99/p99.9 {ack['p50']}/{ack['p99']}/{ack['p99.9']} ms, "
        f"e2e p99 {e2e['p99']} ms, {cpu_us_per_msg} CPU µs/msg, "
        f"{'complete' if result['complete'] else 'INCOMPLETE ' + json.dumps(faults)}"
    )


async def _level(
    server: ServerProcess,
    workers: Workers,
    *,
    kind: str,
    index: int,
    name: str,
    offered: int,
    connections: int,
    msgs_per_conn: int,
    window: int,
) -> dict[str, Any]:
    result, before, after = await drive_level(
        workers,
        server.stats,
        kind=kind,
        index=index,
        name=name,
        offered=offered,
        connections=connections,
        msgs_per_conn=msgs_per_conn,
        window=window,
    )
    cpu_s = after.cpu_s - before.cpu_s
    result["server_cpu_us_per_msg"] = round(cpu_s * 1e6 / max(1, result["sent"]), 1)
    result["server_cpu_util"] = round(cpu_s / result["elapsed_s"], 3)
    result["server_rss_mib"] = round(after.rss_bytes / 2**20, 1)
    say(describe(kind, result, result["server_cpu_us_per_msg"]))
    return result


def level_sizes(levels: list[tuple[str, int, float]], connections: int) -> list[int]:
    """Messages per connection of each level: (name, offered msgs/s or 0 for max rate,
    seconds, or messages per connection at max rate)."""
    return [
        math.ceil(offered * span / connections) if offered else int(span)
        for _name, offered, span in levels
    ]


async def traffic(
    kind: str, tag: str, workdir: Path, plan: Plan, pairs: int, levels: list[tuple[str, int, float]]
) -> dict[str, Any]:
    """``levels``: (name, offered msgs/s or 0 for max rate, seconds or msgs/conn at max)."""
    connections = 2 * pairs
    sizes = level_sizes(levels, connections)
    server = ServerProcess(kind, workdir / f"{kind}-{tag}", uvloop=plan.uvloop)
    invites: list[str] = [""] * pairs
    if kind == "hub":
        invites = await create_invites(server.db_path, server.workdir, tag, pairs)
    await server.start()
    workers = Workers(min(plan.workers, pairs), plan.uvloop)
    try:
        await workers.start()
        say(
            f"{kind}: {connections} connections, setting up and pre-encrypting "
            f"{sum(sizes) * connections} messages"
        )
        indices = list(range(pairs))
        url = server.url
        setups = await workers.each(
            [
                {
                    "cmd": "setup",
                    "target": kind,
                    "url": url,
                    "tag": tag,
                    "pairs": part,
                    "invites": [invites[i] for i in part],
                    "languages": [pair_language(tag, i) for i in part],
                    "levels": sizes,
                    "body_chars": plan.body_chars,
                }
                for part in split_evenly(indices, workers.count)
            ]
        )
        say(f"{kind}: set up in {max(s['setup_s'] for s in setups):.1f} s")
        results = []
        for i, (name, offered, _span) in enumerate(levels):
            window = plan.window if not offered else 256
            results.append(
                await _level(
                    server,
                    workers,
                    kind=kind,
                    index=i,
                    name=name,
                    offered=offered,
                    connections=connections,
                    msgs_per_conn=sizes[i],
                    window=window,
                )
            )
        await workers.each([{"cmd": "close"}] * workers.count)
        stats = server.stats()
        return {
            "pairs": pairs,
            "connections": connections,
            "frame_bytes": max(s["frame_bytes"] for s in setups),
            "window_at_max_rate": plan.window,
            "levels": results,
            "server_rss_peak_mib": round(stats.hwm_bytes / 2**20, 1),
        }
    finally:
        await workers.stop()
        await server.stop()


async def idle_and_sync(workdir: Path, plan: Plan) -> tuple[dict[str, Any], dict[str, Any]]:
    server = ServerProcess("hub", workdir / "hub-idle", uvloop=plan.uvloop)
    invites = await create_invites(server.db_path, server.workdir, "y", 1)
    await server.start()
    accounts = math.ceil(plan.idle_connections / plan.sessions_per_account)
    workers = Workers(min(plan.workers, accounts), plan.uvloop)
    try:
        await workers.start()
        say(f"idle: registering {accounts} accounts")
        await workers.each(
            [
                {"cmd": "idle_accounts", "url": server.url, "tag": "i", "accounts": part}
                for part in split_evenly(list(range(accounts)), workers.count)
            ]
        )
        await asyncio.sleep(plan.settle_s / 3)
        before = server.stats()
        say(f"idle: opening {accounts * plan.sessions_per_account} authenticated connections")
        per_account = plan.sessions_per_account
        done = await workers.each(
            [{"cmd": "idle_connect", "url": server.url, "per_account": per_account}] * workers.count
        )
        connected = sum(d["connected"] for d in done)
        await asyncio.sleep(plan.settle_s)
        after = server.stats()
        still = sum(d["open"] for d in await workers.each([{"cmd": "idle_check"}] * workers.count))
        per_conn = (after.rss_bytes - before.rss_bytes) / max(1, connected)
        idle = {
            "connections": connected,
            "accounts": accounts,
            "sessions_per_account": per_account,
            "still_open": still,
            "connect_s": round(max(d["connect_s"] for d in done), 2),
            "rss_before_mib": round(before.rss_bytes / 2**20, 1),
            "rss_after_mib": round(after.rss_bytes / 2**20, 1),
            "rss_per_connection_kib": round(per_conn / 1024, 2),
            "complete": still == connected == accounts * per_account,
        }
        say(
            f"idle: {connected} connections, {idle['rss_per_connection_kib']} KiB RSS each "
            f"({idle['rss_before_mib']} -> {idle['rss_after_mib']} MiB)"
        )
        await workers.each([{"cmd": "idle_close"}] * workers.count)
        say(f"sync: a client misses {plan.sync_messages} messages, then catches up")
        sync = await workers.call(
            0,
            {
                "cmd": "sync",
                "url": server.url,
                "tag": "y",
                "invite": invites[0],
                "language": pair_language("y", 0),
                "messages": plan.sync_messages,
                "body_chars": plan.body_chars,
            },
        )
        sync.pop("ok", None)
        sync["complete"] = bool(
            sync["exactly_once"]
            and sync["in_order"]
            and sync["chain_ok"]
            and sync["stored"] == sync["received"] == plan.sync_messages
            and sync["welcome_last_seq"] == plan.sync_messages
        )
        say(
            f"sync: {sync['received']} messages in {sync['sync_s'] * 1000:.0f} ms "
            f"({sync['requests']} requests); "
            f"verify+decrypt {sync['verify_decrypt_s'] * 1000:.0f} ms"
        )
        return idle, sync
    finally:
        await workers.stop()
        await server.stop()


def paced_levels(plan: Plan) -> list[tuple[str, int, float]]:
    levels: list[tuple[str, int, float]] = [(f"{r}/s", r, plan.level_s) for r in plan.rates]
    levels.append(("max", 0, plan.max_msgs_per_conn))
    return levels


async def run_all(workdir: Path, plan: Plan) -> dict[str, Any]:
    started = time.monotonic()
    levels = paced_levels(plan)
    hub = await traffic("hub", "a", workdir, plan, plan.pairs, levels)
    relay = await traffic("relay", "b", workdir, plan, plan.pairs, levels)
    say(f"target: hub with {2 * plan.target_pairs} connections at {plan.target_rate} msgs/s")
    target = await traffic(
        "hub",
        "t",
        workdir,
        plan,
        plan.target_pairs,
        [(f"{plan.target_rate}/s", plan.target_rate, plan.target_s)],
    )
    idle, sync = await idle_and_sync(workdir, plan)
    hub_max = hub["levels"][-1]["delivered_msgs_per_s"]
    relay_max = relay["levels"][-1]["delivered_msgs_per_s"]
    t = target["levels"][0]
    summary = {
        "hub_max_msgs_per_s": hub_max,
        "relay_max_msgs_per_s": relay_max,
        "ratio_hub_over_relay": round(hub_max / relay_max, 3) if relay_max else None,
        "target_connections": 2 * plan.target_pairs,
        "target_offered_msgs_per_s": plan.target_rate,
        "target_ack_p99_ms": t["ack_latency_ms"]["p99"],
        "idle_rss_per_connection_kib": idle["rss_per_connection_kib"],
        "idle_connections": idle["connections"],
        "sync_messages": plan.sync_messages,
        "sync_s": round(sync["sync_s"], 4),
    }
    summary["targets_met"] = {
        "throughput_ratio_ge_0.4": (summary["ratio_hub_over_relay"] or 0) >= 0.4,
        "ack_p99_le_50ms_at_5k_1000conns": summary["target_ack_p99_ms"] <= 50,
        "idle_rss_le_32KiB": summary["idle_rss_per_connection_kib"] <= 32,
        "sync_10k_lt_1s": summary["sync_s"] < 1.0,
    }
    failures = [
        f"{name} {lv['name']}"
        for name, sc in (("hub", hub), ("relay", relay), ("target", target))
        for lv in sc["levels"]
        if not lv["complete"]
    ]
    if not idle["complete"]:
        failures.append("idle")
    if not sync["complete"]:
        failures.append("sync")
    return {
        "scenarios": {"hub": hub, "relay": relay, "target": target},
        "idle": idle,
        "sync": sync,
        "summary": summary,
        "complete": not failures,
        "failures": failures,
        "duration_s": round(time.monotonic() - started, 1),
    }
