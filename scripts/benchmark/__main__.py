"""``scripts/bench [--quick] [--uvloop] [--out DIR] [--update-docs]``: run the benchmark.
``scripts/bench --db postgresql://... [--nodes N]``: the cluster comparison instead.
``scripts/bench --abuse-auth [--quick]``: login latency under hostile load (abuse_auth.py).

Starts the hub and the baseline relay as child processes on 127.0.0.1, drives them with
load-generator processes, checks that every message was delivered exactly once, and
writes JSON and PNG plots to ``--out`` (default ``bench-results/``, ignored by git).
With ``--db`` (a PostgreSQL admin URL: the run creates and drops its own database) it
compares one node on SQLite, one on PostgreSQL and N on PostgreSQL and Redis behind
HAProxy instead (``benchmark/cluster.py``).
Only a full run with ``--update-docs`` writes the committed results: docs/bench/ and the
generated parts of docs/PERFORMANCE.md. Exit status 1 when any message was lost,
duplicated or refused, or the run did not finish in time; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .cluster import CLUSTER_FULL, CLUSTER_QUICK, run_cluster_comparison
from .report import plot, plot_cluster, update_cluster_md, update_performance_md, write_json
from .run import REPO, Plan, run_all, say
from .servers import kill_children, raise_nofile

FULL = Plan(
    pairs=200,
    rates=(1000, 2500, 5000, 7500),
    level_s=5.0,
    max_msgs_per_conn=100,
    window=32,
    target_pairs=500,
    target_rate=5000,
    target_s=8.0,
    idle_connections=10_000,
    sessions_per_account=8,
    sync_messages=10_000,
    body_chars=120,
    workers=2,
    uvloop=False,
)
QUICK = Plan(
    pairs=4,
    rates=(100, 300),
    level_s=0.5,
    max_msgs_per_conn=15,
    window=8,
    target_pairs=6,
    target_rate=200,
    target_s=0.5,
    idle_connections=40,
    sessions_per_account=8,
    sync_messages=600,
    body_chars=120,
    workers=2,
    uvloop=False,
    settle_s=0.6,
)


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB RAM, "
        f"Linux {platform.release()}"
    )


def _versions(uvloop: bool, cluster: bool = False) -> str:
    names = ["websockets", "msgspec", "SQLAlchemy", "aiosqlite", "PyNaCl"]
    if cluster:
        names += ["asyncpg", "redis"]
    if uvloop:
        names.append("uvloop")
    parts = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}"]
    parts += [f"{n} {metadata.version(n)}" for n in names]
    if cluster:
        parts += [_tool_version(*c) for c in _SERVERS]
    return ", ".join(parts)


#: The servers of the cluster comparison, and how to ask each for its version.
_SERVERS = (("postgres", "--version"), ("redis-server", "--version"), ("haproxy", "-v"))


def _tool_version(binary: str, flag: str) -> str:
    """``NAME VERSION`` as the program prints it (first line), or ``NAME ?``."""
    path = shutil.which(binary) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}"))), None
    )
    if path is None:
        return f"{binary} ?"
    out = subprocess.run([path, flag], capture_output=True, text=True, timeout=10, check=False)
    words = out.stdout.split()
    version = next(
        (w.removeprefix("v=") for w in words if w[:1].isdigit() or w.startswith("v=")), "?"
    )
    return f"{binary} {version}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--uvloop", action="store_true", help="hub, relay and load on uvloop")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="raw results")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also write docs/bench/ and docs/PERFORMANCE.md (full runs only)",
    )
    parser.add_argument("--pairs", type=int, help="client-counselor pairs (default 200)")
    parser.add_argument("--workers", type=int, help="load-generator processes (default 2)")
    parser.add_argument(
        "--rates", help="comma-separated paced offered rates, msgs/s (default 1000,...)"
    )
    parser.add_argument("--time-limit", type=float, help="abort after this many seconds")
    parser.add_argument(
        "--db",
        metavar="URL",
        help="PostgreSQL admin URL (postgresql://user@host/db): run the cluster comparison "
        "(1 node SQLite, 1 node PostgreSQL, --nodes nodes behind HAProxy) instead",
    )
    parser.add_argument(
        "--nodes", type=int, default=2, help="nodes of the cluster setup (with --db; default 2)"
    )
    return parser


def plan_of(args: argparse.Namespace) -> Plan:
    if args.db:
        plan = CLUSTER_QUICK if args.quick else CLUSTER_FULL
    else:
        plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {"uvloop": args.uvloop}
    if args.pairs:
        changes["pairs"] = args.pairs
    if args.workers:
        changes["workers"] = args.workers
    if args.rates:
        changes["rates"] = tuple(int(r) for r in args.rates.split(","))
    return Plan(**{**plan.__dict__, **changes})


async def _main(args: argparse.Namespace, plan: Plan, workdir: Path) -> dict[str, Any]:
    limit = args.time_limit or (180.0 if args.quick else 900.0)
    if args.db:
        run = run_cluster_comparison(workdir, plan, args.db, args.nodes)
    else:
        run = run_all(workdir, plan)
    return await asyncio.wait_for(run, limit)


def _interrupt(signum: int, _frame: object) -> None:
    # Kill the children first: whatever the orchestrator is awaiting then fails at once,
    # so Ctrl-C and SIGTERM stop the whole run promptly and leave no process behind.
    kill_children()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if "--abuse-auth" in (sys.argv[1:] if argv is None else argv):
        from . import abuse_auth  # a benchmark of its own (docs/PERFORMANCE.md)

        return abuse_auth.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick and args.update_docs:
        parser.error("--update-docs needs a full run: quick figures are not for docs/")
    if args.db and not args.db.startswith(("postgresql", "postgres:")):
        parser.error("--db must be a PostgreSQL URL (postgresql://user@host/db)")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (the comparison has 1-node setups already)")
    plan = plan_of(args)
    raise_nofile()
    atexit.register(kill_children)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    loop = "uvloop" if plan.uvloop else "asyncio"
    command = "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    say(f"{command.strip()}: {loop}, {plan.pairs} pairs, {plan.workers} load processes")
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
            results = asyncio.run(_main(args, plan, Path(tmp)))
    except (TimeoutError, RuntimeError) as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        kill_children()
    results["meta"] = {
        "loop": loop,
        "quick": args.quick,
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "machine": _machine(),
        "versions": _versions(plan.uvloop, cluster=bool(args.db)),
        "plan": plan.__dict__,
        "note": "every process of the run (hub nodes, databases, HAProxy, load generators) "
        "shares the machine's cores",
    }
    suffix = loop + ("-quick" if args.quick else "")
    kind, draw = ("cluster", plot_cluster) if args.db else ("results", plot)
    write_json(results, args.out / f"{kind}-{suffix}.json")
    pictures = draw(results, args.out, suffix)
    if args.update_docs:
        docs = REPO / "docs"
        write_json(results, docs / "bench" / f"{kind}-{suffix}.json")
        draw(results, docs / "bench", suffix)
        update = update_cluster_md if args.db else update_performance_md
        update(docs / "PERFORMANCE.md", docs / "bench")
    summary = results["summary"]
    say(json.dumps(summary, indent=2))
    say(f"results: {args.out / f'{kind}-{suffix}.json'}, plots: {', '.join(map(str, pictures))}")
    if not results["complete"]:
        say(f"FAILED: incomplete delivery in {', '.join(results['failures'])}")
        return 1
    say("complete: every message delivered exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
