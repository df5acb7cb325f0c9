"""``scripts/cluster``: N hub nodes behind HAProxy with TLS, on the local PostgreSQL and
Redis, for trying several nodes by hand. Ctrl-C stops everything.

    scripts/cluster                       2 nodes, https://localhost:8443/
    scripts/cluster --nodes 3 --db postgresql+asyncpg://postgres@127.0.0.1/chat_cluster
    scripts/cluster -- --kdf test     anything after -- goes to every chat-server serve

Everything it makes lives in ``--dir`` (default ``./var/cluster``): the throwaway CA
and certificate (``tls/``, kept across runs so a client's trust survives a restart),
the nodes' shared key files (``state/``; in production the data key comes from a secret
store, docs/DEPLOYMENT.md), one log per node and HAProxy's configuration and log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .haproxy import Backend, HAProxy, render_config
from .postgres import ensure_database
from .tls import LocalPKI, make_local_pki

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/chat_cluster"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2, help="hub processes (default 2)")
    p.add_argument(
        "--db",
        default=os.environ.get("CHAT_DB_URL", DEFAULT_DB),
        help=f"PostgreSQL URL shared by the nodes; created if missing (default {DEFAULT_DB})",
    )
    p.add_argument(
        "--redis",
        default=os.environ.get("CHAT_REDIS_URL", DEFAULT_REDIS),
        help=f"Redis URL (default {DEFAULT_REDIS})",
    )
    p.add_argument("--port", type=int, default=8443, help="HTTPS/WSS port (0: any free port)")
    p.add_argument(
        "--first-node-port", type=int, default=8801, help="node i listens on this + i (0: any)"
    )
    p.add_argument(
        "--stats-port", type=int, default=8404, help="HAProxy's /stats and /metrics (0: any)"
    )
    p.add_argument("--dir", type=Path, default=ROOT / "var" / "cluster", help="working files")
    p.add_argument("--new-cert", action="store_true", help="make a new CA and certificate")
    p.add_argument("serve_args", nargs="*", help="after --: extra chat-server serve arguments")
    return p


def _chat_server() -> list[str]:
    return [sys.executable, "-m", "chat_server.cli"]


async def _check_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s; see {log}")


def _pki(directory: Path, fresh: bool) -> LocalPKI:
    tls = directory / "tls"
    if not fresh and (tls / "server-bundle.pem").exists():
        return LocalPKI(
            tls / "ca.pem", tls / "server.pem", tls / "server.key", tls / "server-bundle.pem"
        )
    if tls.exists():
        shutil.rmtree(tls)
    return make_local_pki(tls)


async def _check_services(db_url: str, redis_url: str) -> None:
    await ensure_database(db_url)
    try:
        await _check_redis(redis_url)
    except Exception as exc:
        raise RuntimeError(f"Redis at {redis_url} is not reachable ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    work: Path = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    pki = _pki(work, args.new_cert)
    asyncio.run(_check_services(args.db, args.redis))
    common = ["--db", args.db, "--state-dir", str(work / "state")]
    # Migrate once, before any node starts, not N nodes racing to do it.
    migrate = subprocess.run(
        [*_chat_server(), "migrate", *common], capture_output=True, check=False
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"chat-server migrate failed: {migrate.stderr.decode()[-1500:]}")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    port = args.port or _free_port()
    stats_port = args.stats_port or _free_port()
    nodes: list[tuple[Backend, subprocess.Popen[bytes], Path]] = []
    proxy: HAProxy | None = None
    try:
        for i in range(1, args.nodes + 1):
            node_port = args.first_node_port + i - 1 if args.first_node_port else _free_port()
            log = work / f"node{i}.log"
            extra = ["--redis", args.redis, "--node-id", f"node{i}", "--trusted-proxy", "127.0.0.1"]
            # The web chat is served through HAProxy: its origin is the proxy's.
            extra += ["--public-url", f"https://localhost:{port}"]
            command = [
                *_chat_server(), "serve", *common, "--port", str(node_port),
                "--log-file", str(log), *extra, *args.serve_args,
            ]  # fmt: skip
            with log.with_suffix(".err").open("wb") as err:
                proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
            nodes.append((Backend(f"node{i}", "127.0.0.1", node_port), proc, log))
        for backend, proc, log in nodes:
            _wait_http(f"http://127.0.0.1:{backend.port}/healthz", proc, log)

        config = render_config(
            [backend for backend, _, _ in nodes],
            bind=f"127.0.0.1:{port}",
            cert_file=pki.bundle_file,
            stats_bind=f"127.0.0.1:{stats_port}",
        )
        proxy = HAProxy(config, work / "haproxy")
        proxy.start()
        asyncio.run(asyncio.wait_for(proxy.wait_listening("127.0.0.1", port), 10))
        _announce(args, port, stats_port, pki, nodes)

        while not stop.wait(0.5):
            dead = [b.name for b, p, _ in nodes if p.poll() is not None]
            if dead or (proxy.proc is not None and proxy.proc.poll() is not None):
                print(f"cluster: stopped unexpectedly: {dead or ['haproxy']}", file=sys.stderr)
                return 1
        print("stopping: HAProxy, then each node drains (clients are told to reconnect)")
        return 0
    finally:
        if proxy is not None:
            asyncio.run(proxy.stop())
        for _, proc, _ in nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in nodes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _announce(
    args: argparse.Namespace,
    port: int,
    stats_port: int,
    pki: LocalPKI,
    nodes: list[tuple[Backend, subprocess.Popen[bytes], Path]],
) -> None:
    wss = f"wss://localhost:{port}/ws"
    ca = _shown(pki.ca_file)
    print(f"counsel-chat cluster: {len(nodes)} nodes behind HAProxy", flush=True)
    for backend, _, log in nodes:
        print(
            f"  {backend.name}: http://127.0.0.1:{backend.port}/  (/metrics, /healthz)  "
            f"log {_shown(log)}"
        )
    print(f"  database: {args.db}\n  redis:    {args.redis}")
    print(f"  clients:  {wss}   (TLS, CA file {ca})")
    print(f"  web chat: https://localhost:{port}/   (trust {ca} in the browser, or accept it)")
    print(f"  HAProxy:  http://127.0.0.1:{stats_port}/stats  and /metrics")
    print("Connect a client through the load balancer:")
    print(
        f"  chat-client --server {wss} --ca-file {ca} --home ~/.chat-client register --handle NAME"
    )
    print("Invite a counselor:")
    print(f"  chat-server admin invite-counselor --db {args.db} --state-dir "
          f"{_shown(args.dir / 'state')} --name NAME --languages en")  # fmt: skip
    print("Ctrl-C stops everything.", flush=True)


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it."""
    relative = os.path.relpath(path.resolve())
    return str(path.resolve()) if relative.startswith("..") else relative


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.nodes < 1:
        print("cluster: --nodes must be at least 1", file=sys.stderr)
        return 2
    try:
        return run(args)
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError, OSError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
