"""The cluster comparison: ``scripts/bench --db postgresql://... --nodes N``.

The same load (client-counselor pairs at paced rates, then at max rate) against three
setups, each freshly started on 127.0.0.1:

* ``sqlite-1``: one node on SQLite (what a small practice runs);
* ``postgresql-1``: one node on PostgreSQL, no Redis;
* ``postgresql-N``: N nodes on PostgreSQL and Redis behind HAProxy (TLS, ``wss://``).
  Each pair's client and counselor are placed on different nodes, so every delivery
  crosses nodes through Redis (placement by a URL parameter and HAProxy ``use-server``
  rules added to the rendered ``deploy/haproxy.cfg`` for the benchmark only). One more
  node, the *observer*, holds no session: its CPU is what any node pays for the
  cluster's broadcast alone.

Per level: delivered msgs/s, ack latency (send → ``msg.ack``) and delivery latency
(send → ``msg.new`` at the other participant, on the other node in the cluster setup),
the CPU µs per message of each process group (hub nodes, the PostgreSQL backends of the
benchmark's database, PostgreSQL's shared auxiliary processes, Redis, HAProxy, the load
generators), the machine's busy share, and commits from the nodes' ``/metrics``. The
PostgreSQL database (created from ``--db``, an admin URL, and dropped afterwards) and the
``redis-server`` are the benchmark's own. Exactly once is checked as in the main run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.haproxy import Backend, HAProxy, render_config
from localcluster.postgres import scratch_database
from localcluster.tls import make_local_pki
from prometheus_client.parser import text_string_to_metric_families

from .run import (
    Plan,
    Workers,
    describe,
    drive_level,
    level_sizes,
    paced_levels,
    say,
    split_evenly,
)
from .servers import CHILDREN, ServerProcess, create_invites, free_port, pair_language, proc_stats

__all__ = [
    "CLUSTER_FULL",
    "CLUSTER_QUICK",
    "Snapshot",
    "postgres_delta",
    "project",
    "run_cluster_comparison",
]

CLUSTER_FULL = Plan(
    pairs=200,
    rates=(500, 1000, 2000),
    level_s=5.0,
    max_msgs_per_conn=100,
    window=32,
    target_pairs=0,
    target_rate=0,
    target_s=0,
    idle_connections=0,
    sessions_per_account=0,
    sync_messages=0,
    body_chars=120,
    workers=2,
    uvloop=False,
)
CLUSTER_QUICK = Plan(
    **{
        **CLUSTER_FULL.__dict__,
        "pairs": 4,
        "rates": (200,),
        "level_s": 0.5,
        "max_msgs_per_conn": 15,
    }
)

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setup:
    name: str
    label: str
    postgresql: bool
    nodes: int

    @property
    def cluster(self) -> bool:
        return self.nodes > 1


def setups(nodes: int) -> list[Setup]:
    return [
        Setup("sqlite-1", "1 node, SQLite", postgresql=False, nodes=1),
        Setup("postgresql-1", "1 node, PostgreSQL", postgresql=True, nodes=1),
        Setup(
            f"postgresql-{nodes}",
            f"{nodes} nodes, PostgreSQL + Redis, behind HAProxy (TLS)",
            postgresql=True,
            nodes=nodes,
        ),
    ]


# -- CPU accounting ------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    try:
        return proc_stats(pid).cpu_s
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _postgres_cpu(database: str) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each PostgreSQL process, by pid, as ``postgres`` (a backend
    serving ``database``) or ``postgres_aux`` (the postmaster, WAL writer, checkpointer,
    background writer, ...: shared with every other user of the server). Backends of
    other databases (other users of the same server) are left out."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        words = cmdline.split()
        pid = int(entry.name)
        if not words:
            continue
        if words[0] != "postgres:":
            if words[0].endswith("/bin/postgres"):  # the postmaster
                found[pid] = ("postgres_aux", _cpu_s(pid))
            continue
        words = words[1:]
        if words and words[0].endswith(":"):  # "15/main:", the cluster's name
            words = words[1:]
        # A backend: "USER DATABASE HOST(PORT) STATE"; else an auxiliary process.
        if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
            if words[1] == database:
                found[pid] = ("postgres", _cpu_s(pid))
        else:
            found[pid] = ("postgres_aux", _cpu_s(pid))
    return found


def postgres_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each PostgreSQL group spent between two readings: processes seen at
    the end count from the first reading (or from their start); a backend that ended
    meanwhile is not counted (its time is lost with it), so a delta is never negative."""
    spent = {"postgres": 0.0, "postgres_aux": 0.0}
    for pid, (group, cpu) in after.items():
        start = before.get(pid, (group, 0.0))[1]
        spent[group] += max(0.0, cpu - start)
    return spent


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return (total - idle) / _TICKS, total / _TICKS


@dataclass(frozen=True)
class Snapshot:
    """Cumulative figures at one moment: per group, and PostgreSQL's per process."""

    totals: dict[str, float]
    postgres: dict[int, tuple[str, float]]

    def since(self, before: Snapshot) -> dict[str, float]:
        delta = {k: v - before.totals[k] for k, v in self.totals.items()}
        delta.update(postgres_delta(before.postgres, self.postgres))
        return delta


@dataclass
class Stack:
    """What runs for one setup: hub nodes, the observer, Redis, HAProxy."""

    setup: Setup
    nodes: list[ServerProcess]
    observer: ServerProcess | None
    redis_pid: int | None
    haproxy: HAProxy | None
    database: str | None
    #: Where pair i's client connects (i modulo the list); its counselor: the next one.
    client_urls: list[str]
    ca_file: str | None
    invites: list[str]

    def snapshot(self, loadgen_pids: list[int]) -> Snapshot:
        """Cumulative CPU seconds of every process group, and the nodes' commits."""
        proxy = self.haproxy.proc if self.haproxy is not None else None
        cpu = {
            "nodes": sum(_cpu_s(n.pid) for n in self.nodes),
            "observer": _cpu_s(self.observer.pid) if self.observer else 0.0,
            "redis": _cpu_s(self.redis_pid) if self.redis_pid else 0.0,
            "haproxy": _cpu_s(proxy.pid) if proxy is not None else 0.0,
            "loadgen": sum(_cpu_s(pid) for pid in loadgen_pids),
        }
        cpu["machine_busy"], cpu["machine_total"] = _machine_busy_s()
        cpu["commits"] = cpu["committed"] = 0.0
        for node in self.nodes:
            values = _node_metrics(node.port)
            cpu["commits"] += values.get("chat_commits_total", 0.0)
            cpu["committed"] += values.get("chat_messages_committed_total", 0.0)
        postgres = _postgres_cpu(self.database) if self.database is not None else {}
        return Snapshot(cpu, postgres)

    def placement(self, pairs: list[int]) -> list[tuple[int, str, str]]:
        urls = self.client_urls
        return [(i, urls[i % len(urls)], urls[(i + 1) % len(urls)]) for i in pairs]


def _node_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


# -- infrastructure ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _redis(workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """The benchmark's own redis-server (persistence off, as docs/DEPLOYMENT.md says)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (scripts/setup-services installs it)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at set-up
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    CHILDREN.append(proc)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.025)
        else:
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def _placement_config(text: str, names: list[str]) -> str:
    """``deploy/haproxy.cfg`` as rendered, plus one ``use-server`` rule per node keyed on
    the ``node`` URL parameter, so the benchmark decides where each connection goes."""
    rules = "".join(f"    use-server {n} if {{ urlp(node) -m str {n} }}\n" for n in names)
    marker = "    balance leastconn\n"
    assert marker in text
    return text.replace(marker, marker + rules)


@contextlib.asynccontextmanager
async def _stack(setup: Setup, workdir: Path, plan: Plan, admin_url: str) -> AsyncIterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at set-up
    async with contextlib.AsyncExitStack() as stack:
        db_url: str | None = None
        database: str | None = None
        if setup.postgresql:
            db_url, database = await stack.enter_async_context(
                scratch_database(admin_url, "chat_bench")
            )
        redis_pid: int | None = None
        common: tuple[str, ...] = ()
        if setup.cluster:
            redis_url, redis_pid = await stack.enter_async_context(_redis(workdir / "redis"))
            common = ("--redis", redis_url, "--redis-prefix", "bench:")
        state = workdir / "state"
        state.mkdir(exist_ok=True)
        names = [f"node{i + 1}" for i in range(setup.nodes)]
        if setup.cluster:
            names.append("observer")
        servers = [
            ServerProcess(
                "hub",
                workdir / name,
                uvloop=plan.uvloop,
                db_url=db_url,
                state_dir=state,
                extra=(*common, "--node-id", name) if setup.cluster else (),
            )
            for name in names
        ]
        stack.push_async_callback(_stop_all, servers)
        # The invites also migrate the schema, once, before any node starts.
        servers[0].workdir.mkdir(parents=True, exist_ok=True)
        invites = await create_invites(db_url or servers[0].db_path, state, "c", plan.pairs)
        await asyncio.gather(*(s.start() for s in servers))
        nodes = servers[: setup.nodes]
        proxy: HAProxy | None = None
        ca_file: str | None = None
        client_urls = [nodes[0].url]
        if setup.cluster:
            pki = make_local_pki(workdir / "tls")
            port, stats = free_port(), free_port()
            config = render_config(
                [Backend(n, "127.0.0.1", s.port) for n, s in zip(names, nodes, strict=False)],
                bind=f"127.0.0.1:{port}",
                cert_file=pki.bundle_file,
                stats_bind=f"127.0.0.1:{stats}",
            )
            proxy = HAProxy(_placement_config(config, names[: setup.nodes]), workdir / "haproxy")
            proxy.start()
            assert proxy.proc is not None
            CHILDREN.append(proxy.proc)
            stack.push_async_callback(proxy.stop)
            await asyncio.wait_for(proxy.wait_listening("127.0.0.1", port), 10)
            client_urls = [f"wss://127.0.0.1:{port}/ws?node={n}" for n in names[: setup.nodes]]
            ca_file = str(pki.ca_file)
        yield Stack(
            setup=setup,
            nodes=nodes,
            observer=servers[-1] if setup.cluster else None,
            redis_pid=redis_pid,
            haproxy=proxy,
            database=database,
            client_urls=client_urls,
            ca_file=ca_file,
            invites=invites,
        )


async def _stop_all(servers: list[ServerProcess]) -> None:
    await asyncio.gather(*(s.stop() for s in servers))


# -- running -------------------------------------------------------------------------

#: Process groups whose CPU is reported per message, in the order of the tables.
GROUPS = ("nodes", "observer", "postgres", "postgres_aux", "redis", "haproxy", "loadgen")


async def _run_setup(setup: Setup, workdir: Path, plan: Plan, admin_url: str) -> dict[str, Any]:
    levels = paced_levels(plan)
    connections = 2 * plan.pairs
    sizes = level_sizes(levels, connections)
    say(f"{setup.name}: {setup.label}")
    async with _stack(setup, workdir / setup.name, plan, admin_url) as stack:
        workers = Workers(min(plan.workers, plan.pairs), plan.uvloop)
        try:
            await workers.start()
            pids = [p.pid for p in workers.procs]
            indices = list(range(plan.pairs))
            setups = await workers.each(
                [
                    {
                        "cmd": "setup",
                        "target": "hub",
                        "url": stack.client_urls[0],
                        "placement": stack.placement(part) if setup.cluster else [],
                        "ca_file": stack.ca_file,
                        "tag": "c",
                        "pairs": part,
                        "invites": [stack.invites[i] for i in part],
                        "languages": [pair_language("c", i) for i in part],
                        "levels": sizes,
                        "body_chars": plan.body_chars,
                    }
                    for part in split_evenly(indices, workers.count)
                ]
            )
            say(f"{setup.name}: {connections} connections set up in "
                f"{max(s['setup_s'] for s in setups):.1f} s")  # fmt: skip
            results = []
            for i, (name, offered, _span) in enumerate(levels):
                result, before, after = await drive_level(
                    workers,
                    lambda: stack.snapshot(pids),
                    kind="hub",
                    index=i,
                    name=name,
                    offered=offered,
                    connections=connections,
                    msgs_per_conn=sizes[i],
                    window=plan.window if not offered else 256,
                )
                _account(result, before, after, setup.nodes)
                say(describe(setup.name[:5], result, result["cpu_us_per_msg"]["nodes"]))
                results.append(result)
            await workers.each([{"cmd": "close"}] * workers.count)
        finally:
            await workers.stop()
    return {
        "name": setup.name,
        "label": setup.label,
        "nodes": setup.nodes,
        "postgresql": setup.postgresql,
        "cluster": setup.cluster,
        "pairs": plan.pairs,
        "connections": connections,
        "levels": results,
    }


def _account(result: dict[str, Any], before: Snapshot, after: Snapshot, nodes: int) -> None:
    """Add the level's CPU per message and shares, and its commits, to ``result``."""
    delta = after.since(before)
    messages = max(1, result["sent"])
    elapsed = result["elapsed_s"]
    total = max(1e-9, delta["machine_total"])
    result["cpu_us_per_msg"] = {g: round(delta[g] * 1e6 / messages, 1) for g in GROUPS}
    # Each node's share of the sends is equal by construction: per node and per message.
    result["cpu_us_per_msg_per_node"] = round(delta["nodes"] * 1e6 / messages / nodes, 1)
    result["cpu_share"] = {g: round(delta[g] / total, 3) for g in GROUPS}
    result["machine_busy"] = round(delta["machine_busy"] / total, 3)
    result["commits_per_s"] = round(delta["commits"] / elapsed, 1)
    result["msgs_per_commit"] = round(delta["committed"] / max(1.0, delta["commits"]), 1)


def _summary(setups_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Max-rate figures per setup, and the coefficients of the scaling model."""
    rows = {}
    for sc in setups_run:
        top = sc["levels"][-1]
        rows[sc["name"]] = {
            "max_msgs_per_s": top["delivered_msgs_per_s"],
            "nodes_cpu_us_per_msg": top["cpu_us_per_msg"]["nodes"],
            "msgs_per_commit": top["msgs_per_commit"],
            "commits_per_s": top["commits_per_s"],
        }
    cluster = setups_run[-1]
    top = cluster["levels"][-1]
    per_msg = top["cpu_us_per_msg"]
    model = {
        # Hub CPU per message over the whole cluster (the sending node stores and acks,
        # the receiving node pushes), and what every node pays per cluster message for
        # the broadcast alone (the observer holds no session).
        "hub_us_per_msg": per_msg["nodes"],
        "broadcast_us_per_msg_per_node": per_msg["observer"],
        "postgres_us_per_msg": round(per_msg["postgres"] + per_msg["postgres_aux"], 1),
        "redis_us_per_msg": per_msg["redis"],
        "haproxy_us_per_msg": per_msg["haproxy"],
        "msgs_per_commit": top["msgs_per_commit"],
    }
    model["projection"] = project(model)
    return {"setups": rows, "model": model}


def project(
    model: dict[str, Any], counts: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
) -> list[dict[str, Any]]:
    """Cluster throughput for N single-core nodes, each bound by what saturates first.

    A node runs one event loop (one core). For a cluster rate R spread over N nodes,
    a node spends R/N * hub µs (its share of sends and deliveries) plus R * broadcast µs
    (every Deliver envelope reaches every node), so R <= 1e6 / (hub/N + broadcast).
    Redis is one thread: R <= 1e6 / redis µs (its per-message cost grows with the number
    of subscribers; measured here with N + 1). PostgreSQL is bounded per core of the
    database server: R <= cores * 1e6 / postgres µs (8 cores assumed)."""
    hub, bcast = model["hub_us_per_msg"], model["broadcast_us_per_msg_per_node"]
    redis, pg = model["redis_us_per_msg"], model["postgres_us_per_msg"]
    rows = []
    for n in counts:
        limits = {
            "nodes": 1e6 / (hub / n + (bcast if n > 1 else 0.0)) if hub else math.inf,
            "redis": 1e6 / redis if redis and n > 1 else math.inf,
            "postgres (8 cores)": 8e6 / pg if pg else math.inf,
        }
        first = min(limits, key=lambda k: limits[k])
        rows.append(
            {
                "nodes": n,
                "msgs_per_s": round(limits[first]),
                "limited_by": first,
                "limits": {k: (round(v) if v != math.inf else None) for k, v in limits.items()},
            }
        )
    return rows


async def run_cluster_comparison(
    workdir: Path, plan: Plan, admin_url: str, nodes: int
) -> dict[str, Any]:
    started = time.monotonic()
    done = [await _run_setup(s, workdir, plan, admin_url) for s in setups(nodes)]
    failures = [
        f"{sc['name']} {lv['name']}" for sc in done for lv in sc["levels"] if not lv["complete"]
    ]
    return {
        "kind": "cluster",
        "setups": done,
        "summary": _summary(done),
        "complete": not failures,
        "failures": failures,
        "duration_s": round(time.monotonic() - started, 1),
    }
