"""The processes under test: the hub (``chat-server serve``) and the raw relay baseline.

Each runs as its own child process on 127.0.0.1, so the load generator never shares an
interpreter with it and its CPU time and RSS can be read from ``/proc/PID``. Every child
is registered in :data:`CHILDREN` and killed on exit (also on Ctrl-C and on errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from chat_server.config import load_key_file
from chat_server.credentials import invite_code_hash
from storage.engine import open_database, sqlite_url

#: Per-address limits lifted for a benchmark whose peers all share 127.0.0.1.
LOOPBACK_LOAD_FLAGS = (
    "--argon2-per-ip", "64", "--max-guests-per-ip", "100000", "--max-guests", "100000",
    "--limit", "register_ip=1000,1000000", "--limit", "login_fail_ip=1000,1000000",
    "--limit", "account_request=1000000,1000000", "--limit", "account_message=1000000,1000000",
    "--max-waiting-cases", "1000", "--max-open-cases", "1000",
)  # fmt: skip

__all__ = [
    "CHILDREN",
    "ProcStats",
    "ServerProcess",
    "create_invites",
    "free_port",
    "kill_children",
    "proc_stats",
    "raise_nofile",
]

#: Every child process the benchmark started; :func:`kill_children` ends them.
CHILDREN: list[subprocess.Popen[bytes] | asyncio.subprocess.Process] = []

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: Languages matching is keyed on: pair i's counselor speaks only ``pair_language(i)``,
#: so pair i's client is always matched with it, whatever process sets the pair up.


def pair_language(tag: str, index: int) -> str:
    return f"en-{tag}{index}"


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ProcStats:
    """CPU time (user + system, all threads) and memory of one process."""

    cpu_s: float
    rss_bytes: int
    hwm_bytes: int


def proc_stats(pid: int) -> ProcStats:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may contain spaces) start after ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_pages = int(fields[21])
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return ProcStats((utime + stime) / _TICKS, rss_pages * _PAGE, hwm)


async def create_invites(db_path: Path | str, state_dir: Path, tag: str, count: int) -> list[str]:
    """Single-use counselor invites, one per pair, each for the pair's own language.

    Written straight into the hub's database (a SQLite file, or a database URL) before
    the hub starts (the same thing ``chat-server admin invite-counselor`` does, without
    200 process start-ups); this also creates the schema.
    """
    url = db_path if isinstance(db_path, str) else sqlite_url(db_path)
    db = await open_database(url, load_key_file(state_dir / "data.key"))
    codes = []
    try:
        for i in range(count):
            code = f"inv-bench-{tag}-{i}-" + os.urandom(6).hex()
            await db.accounts.create_invite(
                invite_code_hash(code), "counselor", f"Bench {i}", [pair_language(tag, i)], []
            )
            codes.append(code)
    finally:
        await db.close()
    return codes


class ServerProcess:
    """A hub or relay child process on 127.0.0.1:``port``."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        *,
        uvloop: bool,
        db_url: str | None = None,
        state_dir: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """A hub on ``db_url`` (default: a SQLite file in ``workdir``) with the key files
        in ``state_dir`` (default ``workdir``), ``extra`` added to ``chat-server serve``."""
        self.kind = kind
        self.workdir = workdir
        self.uvloop = uvloop
        self.db_url = db_url
        self.state_dir = state_dir or workdir
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{kind}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def db_path(self) -> Path:
        return self.workdir / "chat.db"

    def command(self) -> list[str]:
        if self.kind == "relay":
            cmd = [sys.executable, "-m", "benchmark.relay", "--port", str(self.port)]
        else:
            cmd = [
                sys.executable,
                "-m",
                "chat_server.cli",
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.db_url or str(self.db_path),
                "--state-dir",
                str(self.state_dir),
                "--kdf",
                "test",
                "--log-level",
                "WARNING",
                # The per-session flood limit (50/s) would refuse a benchmark's sends,
                # and every benchmark peer comes from one address (127.0.0.1), which the
                # per-address abuse limits would treat as one attacker; everything else
                # stays at production settings.
                "--rate-per-s",
                "1000000",
                "--rate-burst",
                "1000000",
                *LOOPBACK_LOAD_FLAGS,
                *self.extra,
            ]
        if self.uvloop:
            cmd.append("--uvloop")
        return cmd

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_nofile,
            )
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not listen within 30 s")

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(200):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        self.proc.kill()
        self.proc.wait(10)


def kill_children() -> None:
    """Kill every child still running (idempotent; used from finally and atexit)."""
    for child in CHILDREN:
        if isinstance(child, subprocess.Popen):
            running = child.poll() is None
        else:
            running = child.returncode is None
        with contextlib.suppress(ProcessLookupError, OSError):
            if running:
                child.kill()
        if isinstance(child, subprocess.Popen):
            with contextlib.suppress(Exception):
                child.wait(5)
