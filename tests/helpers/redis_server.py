"""A private ``redis-server`` for tests that stop and restart Redis.

Failure tests never touch the machine's Redis: they start their own on a free port, in
a temporary directory, with persistence off, and stop, kill or restart it at will.

    async with own_redis(tmp_path) as server:
        url = server.url
        server.stop()       # SIGTERM, waits; server.kill() is SIGKILL
        await server.start()  # same port again

Without a ``redis-server`` binary the test is skipped (failed under
``CHAT_REQUIRE_SERVICES=1``), like the suite's other services.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from scripts.localcluster.tls import LocalPKI
from tests.helpers.hubs import free_port
from tests.helpers.services import require_service

__all__ = ["RedisServer", "own_redis"]


@dataclass
class RedisServer:
    directory: Path
    port: int = field(default_factory=free_port)
    #: Serve TLS only (``rediss://``), with this certificate; clients trust its CA.
    tls: LocalPKI | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.tls.ca_file}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 5.0) -> None:
        """Start (or start again, on the same port) and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            require_service("redis-server", "no redis-server binary (scripts/setup-services)")
        assert not self.running
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert_file),
                "--tls-key-file", str(self.tls.key_file),
                "--tls-ca-cert-file", str(self.tls.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        settings = [
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            [binary, *listen, *settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited early: {log}")
            if await self._listening():
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout} s")

    async def _listening(self) -> bool:
        """Does it answer PING (over TLS when it serves TLS)?"""
        ssl_context = None
        if self.tls is not None:
            ssl_context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        try:
            reader, writer = await asyncio.open_connection(
                "localhost" if ssl_context else "127.0.0.1", self.port, ssl=ssl_context
            )
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), 1.0) == b"+PONG\r\n"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a silent dead link)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM and wait: clients see their connections closed."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: no goodbye to anyone."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@contextlib.asynccontextmanager
async def own_redis(tmp_path: Path, tls: LocalPKI | None = None) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", tls=tls)
    await server.start()
    try:
        yield server
    finally:
        server.kill()
