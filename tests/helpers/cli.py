"""The command-line tools as subprocesses: plainly (pipes) or on a pseudo-terminal.

rc, out, err = await run_cli(home, "cases", url=hub.url)
term = await PtyRun.start([*CHAT_CLIENT, "--home", str(home), "cases"])
await term.expect("Passphrase: "); term.send("secret\\n"); rc = await term.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CHAT_CLIENT", "CHAT_ESCROW", "CHAT_SERVER", "KDF", "PtyRun", "cli_env", "run_cli"]

ROOT = Path(__file__).resolve().parents[2]
CHAT_CLIENT = [sys.executable, "-m", "chat_client"]
CHAT_SERVER = [sys.executable, "-m", "chat_server.cli"]
CHAT_ESCROW = [sys.executable, "-m", "chat_client.escrow_cli"]
#: Argon2id at the protocol minimum: for tests only.
KDF = ["--kdf-ops", "1", "--kdf-mem", "8192"]


def cli_env(passphrase: str | None = "plum-orbit-canyon-47", **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("CHAT_SERVER", "CHAT_PASSPHRASE", "CHAT_HOME"):
        env.pop(name, None)
    if passphrase is not None:
        env["CHAT_PASSPHRASE"] = passphrase
    return env


async def run_cli(
    home: Path,
    *args: str,
    passphrase: str | None = "plum-orbit-canyon-47",
    url: str | None = None,
    stdin: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, str, str]:
    """``chat-client --home HOME [--server URL] ARGS`` with pipes (no terminal)."""
    argv = [*CHAT_CLIENT, "--home", str(home), *(["--server", url] if url else []), *args]
    return await run(argv, env=cli_env(passphrase), stdin=stdin, timeout=timeout)


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env or cli_env()),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _take_terminal() -> None:
    # In the child, after setsid: make the pty (already fd 0) the controlling terminal,
    # so getpass opens /dev/tty as it does for a person at a terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyRun:
    """A child process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.output = b""

    @classmethod
    async def start(cls, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> PtyRun:
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env or cli_env(None)),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master)

    def _read(self) -> None:
        while self.master >= 0:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.output += chunk

    @property
    def text(self) -> str:
        self._read()
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    async def expect(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen on the terminal:\n{self.text}")
            await asyncio.sleep(0.05)
        return self.text

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def wait(self, timeout: float = 30) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        finally:
            self._read()
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = -1

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
