"""Run the real hub for tests: in-process on an ephemeral port, or as a child process.

    async with start_hub(tmp_path) as hub:
        client = await ChatClient.register(hub.url, ...)

Both use a real SQLite file (or ``db_url``) and the real websockets server on
127.0.0.1; nothing is mocked. KDF costs are lowered to the protocol minimum so tests
spend their time on the code under test, not on Argon2id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat_server.app import HubServer
from chat_server.config import Config
from chat_server.credentials import invite_code_hash
from chat_server.logs import configure
from storage.engine import sqlite_url

__all__ = [
    "TEST_KDF",
    "TEST_LENIENT_FLAGS",
    "TEST_LENIENT_LIMITS",
    "HubProcess",
    "RunningHub",
    "free_port",
    "hub_process",
    "start_hub",
    "test_config",
]

#: Argon2id at the protocol minimum: for tests only.
TEST_KDF = {"opslimit": 1, "memlimit": 8192}
_TEST_COSTS = {"kdf_opslimit": 1, "kdf_memlimit": 8192, "hash_opslimit": 1, "hash_memlimit": 8192}
#: Every test connects from 127.0.0.1, many register dozens of accounts at once, open
#: several cases per client or send hundreds of messages a second, so the abuse limits
#: are lifted unless a test sets them (tests/chat_server/test_auth_limits.py and
#: test_account_limits.py test each with small values).
TEST_LENIENT_LIMITS: dict[str, Any] = {
    "argon2_per_ip": 64,
    "register_ip_rate": (1000.0, 100_000),
    "login_fail_ip_rate": (1000.0, 100_000),
    "max_guests_per_ip": 1000,
    "max_waiting_cases": 1000,
    "max_open_cases": 1000,
    "max_disputes_per_case": 1000,
    "account_request_rate": (1e6, 1_000_000),
    "account_message_rate": (1e6, 1_000_000),
    "tarpit_s": 0.0,
}
#: The same for a hub run as a child process (``chat-server serve`` flags).
TEST_LENIENT_FLAGS = (
    "--argon2-per-ip", "64", "--max-guests-per-ip", "1000",
    "--limit", "register_ip=1000,100000", "--limit", "login_fail_ip=1000,100000",
    "--max-waiting-cases", "1000", "--max-open-cases", "1000",
    "--max-disputes-per-case", "1000",
    "--limit", "account_request=1000000,1000000", "--limit", "account_message=1000000,1000000",
)  # fmt: skip


def test_config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "db_url": sqlite_url(tmp_path / "chat.db"),
        "state_dir": tmp_path / "state",
        "log_file": tmp_path / "hub.log",
        "log_level": "DEBUG",
        **_TEST_COSTS,
        **TEST_LENIENT_LIMITS,
    }
    values.update(overrides)
    return Config(**values)


@dataclass
class RunningHub:
    config: Config
    server: HubServer
    tmp_path: Path
    _port: int = field(default=0)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def log_file(self) -> Path:
        assert self.config.log_file is not None
        return self.config.log_file

    async def invite_counselor(
        self,
        name: str = "Counselor",
        languages: tuple[str, ...] = ("en",),
        specialties: tuple[str, ...] = ("anxiety",),
    ) -> str:
        code = "inv-" + os.urandom(12).hex()
        assert self.server.db is not None
        await self.server.db.accounts.create_invite(
            invite_code_hash(code), "counselor", name, languages, specialties
        )
        return code

    async def stop(self) -> None:
        await self.server.stop()

    async def restart(self) -> None:
        """Graceful stop, then start again on the same port and database."""
        port = self.server.port
        await self.server.stop()
        self.config = Config(**{**self.config.__dict__, "port": port})
        self.server = HubServer(self.config)
        await self.server.start()


@contextlib.asynccontextmanager
async def start_hub(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningHub]:
    config = test_config(tmp_path, **overrides)
    configure(config.log_level, config.log_file)
    server = HubServer(config)
    await server.start()
    hub = RunningHub(config, server, tmp_path)
    try:
        yield hub
    finally:
        await hub.server.stop()


# -- a hub in a child process (for SIGKILL and CLI tests) ------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HubProcess:
    tmp_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def db_path(self) -> Path:
        return self.tmp_path / "chat.db"

    @property
    def log_file(self) -> Path:
        return self.tmp_path / "hub.log"

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "chat_server.cli", *args]

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cli(
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(self.db_path),
                "--state-dir",
                str(self.tmp_path / "state"),
                "--kdf",
                "test",
                *TEST_LENIENT_FLAGS,
                "--log-file",
                str(self.log_file),
                "--log-level",
                "DEBUG",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"hub exited early: {out}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("hub did not start listening in 15 s")

    def kill(self) -> None:
        """SIGKILL: no graceful anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    async def invite_counselor(
        self, name: str = "Counselor", languages: str = "en", specialties: str = "anxiety"
    ) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.cli(
                "admin",
                "invite-counselor",
                "--db",
                str(self.db_path),
                "--state-dir",
                str(self.tmp_path / "state"),
                "--name",
                name,
                "--languages",
                languages,
                "--specialties",
                specialties,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()


@contextlib.asynccontextmanager
async def hub_process(tmp_path: Path) -> AsyncIterator[HubProcess]:
    hub = HubProcess(tmp_path, free_port())
    await hub.start()
    try:
        yield hub
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
            hub.proc.wait(10)
