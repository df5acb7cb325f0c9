"""Several real hub processes on one PostgreSQL database and one Redis, for the cluster
tests (tests/e2e/test_cluster_*.py).

    async with fresh_database(pg_admin_url) as db_url:
        async with run_cluster(tmp_path, db_url, redis_url, names=("a", "b")) as cluster:
            a, b = cluster.nodes
            await b.kill()             # SIGKILL
            print(await a.metric("chat_sessions_open"))

Each node is ``chat-server serve`` in its own process on its own port (``--db``,
``--redis``, ``--node-id``, a Redis key prefix of the test's own), sharing one state
directory (one data key and server key, as production nodes share them from a secret
store). The database is migrated once before any node starts, as docs/DEPLOYMENT.md
says to. Nodes are started and stopped at will; a node's port is fixed when the
cluster is made, so HAProxy's configuration can name nodes that are not running yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chat_client import ChatClient
from chat_server.config import load_key_file
from chat_server.credentials import invite_code_hash
from scripts.localcluster.haproxy import Backend
from scripts.localcluster.postgres import scratch_database
from storage.engine import Database, open_database
from tests.helpers.clients import PASS_CLIENT, PASS_COUNSELOR
from tests.helpers.haproxy import RunningProxy
from tests.helpers.hubs import TEST_KDF, TEST_LENIENT_FLAGS, free_port

__all__ = ["Cluster", "Node", "fresh_database", "people", "run_cluster"]


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (``postgresql+asyncpg://`` URL), dropped
    afterwards with whatever connections killed nodes left behind."""
    async with scratch_database(admin_url, "chat_cluster") as (url, _):
        yield url


def _parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from the Prometheus text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@dataclass
class Node:
    """One ``chat-server serve`` process (see the module docstring)."""

    name: str
    command: list[str]
    log_file: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def backend(self) -> Backend:
        return Backend(self.name, "127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until its health check answers 200."""
        assert not self.running
        with self.log_file.with_suffix(".out").open("ab") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_file.with_suffix(".out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"node {self.name} exited early: {tail}")
            status, _ = await self.get("healthz")
            if status == 200:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"node {self.name} not healthy within {timeout} s")

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """HTTP GET on the node itself: (status, body); (0, b"") if nothing answers."""

        def fetch() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(self.http_url + path, timeout=timeout) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()
            except OSError:
                return 0, b""

        return await asyncio.to_thread(fetch)

    async def metrics(self) -> dict[str, float]:
        status, body = await self.get("metrics")
        assert status == 200, (status, body[:200])
        return _parse_metrics(body.decode())

    async def metric(self, name: str) -> float:
        return (await self.metrics()).get(name, 0.0)

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone (its presence entries expire on their own)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def terminate(self) -> int:
        """SIGTERM (a graceful drain); the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 30)


@dataclass
class Cluster:
    db_url: str
    redis_url: str
    #: This test's Redis key prefix: no other test sees its events, presence or limits.
    redis_prefix: str
    state_dir: Path
    nodes: list[Node] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[Database]:
        """The cluster's database, opened in the test process (to arrange and check)."""
        db = await open_database(
            self.db_url, load_key_file(self.state_dir / "data.key"), migrate=False
        )
        try:
            yield db
        finally:
            await db.close()

    async def invite_counselor(
        self, languages: Sequence[str] = ("en",), specialties: Sequence[str] = ("anxiety",)
    ) -> str:
        code = "inv-" + secrets.token_hex(10)
        async with self.database() as db:
            await db.accounts.create_invite(
                invite_code_hash(code), "counselor", "Counselor", list(languages), specialties
            )
        return code

    async def online_counselors(self) -> set[str]:
        """Counselor ids presence lists as online now, read straight from Redis."""
        from redis.asyncio import Redis

        client = Redis.from_url(self.redis_url)
        try:
            now_s, now_us = await client.time()
            now_ms = now_s * 1000 + now_us // 1000
            members = await client.zrangebyscore(
                f"{self.redis_prefix}presence:counselors", f"({now_ms}", "+inf"
            )
        finally:
            await client.aclose()
        return {m.decode().split("|", 1)[1] for m in members}


@contextlib.asynccontextmanager
async def run_cluster(
    tmp_path: Path,
    db_url: str,
    redis_url: str,
    *,
    names: Sequence[str] = ("a", "b"),
    start: Sequence[str] | None = None,
    serve_args: Sequence[str] = (),
) -> AsyncIterator[Cluster]:
    """Nodes ``names`` on ``db_url`` (migrated here first) and ``redis_url``; those in
    ``start`` (default: all) are started, concurrently. Every node is killed at the end."""
    state = tmp_path / "state"
    load_key_file(state / "data.key")  # made once here, not raced for by the nodes
    load_key_file(state / "server.key")
    db = await open_database(db_url, load_key_file(state / "data.key"))
    await db.close()
    prefix = f"chat_cluster_{secrets.token_hex(5)}:"
    cluster = Cluster(db_url, redis_url, prefix, state)
    for name in names:
        port = free_port()
        log = tmp_path / f"node-{name}.log"
        command = [
            sys.executable, "-m", "chat_server.cli", "serve",
            "--port", str(port), "--db", db_url, "--state-dir", str(state),
            "--redis", redis_url, "--redis-prefix", prefix, "--node-id", name,
            "--kdf", "test", "--log-file", str(log), "--log-level", "DEBUG",
            *TEST_LENIENT_FLAGS, *serve_args,
        ]  # fmt: skip
        cluster.nodes.append(Node(name, command, log, port))
    try:
        wanted = set(names if start is None else start)
        await asyncio.gather(*(n.start() for n in cluster.nodes if n.name in wanted))
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()


@contextlib.asynccontextmanager
async def people(
    cluster: Cluster, proxy: RunningProxy, tmp_path: Path, tag: str = ""
) -> AsyncIterator[tuple[ChatClient, ChatClient]]:
    """A counselor, then a client, registered and online with the SDK through HAProxy
    (``wss://``, trusting the proxy's CA); closed at the end."""
    tls = proxy.client_ssl()
    counselor = await ChatClient.register(
        proxy.wss_url,
        f"dr-{tag or 'cluster'}",
        PASS_COUNSELOR,
        home=tmp_path / f"counselor{tag}",
        invite=await cluster.invite_counselor(),
        tls=tls,
        **TEST_KDF,
    )
    try:
        client = await ChatClient.register(
            proxy.wss_url,
            f"calm-{tag or 'cluster'}",
            PASS_CLIENT,
            home=tmp_path / f"client{tag}",
            tls=tls,
            **TEST_KDF,
        )
        try:
            yield counselor, client
        finally:
            await client.close()
    finally:
        await counselor.close()
