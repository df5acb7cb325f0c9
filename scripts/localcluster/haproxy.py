"""Render ``deploy/haproxy.cfg`` for a list of hub nodes, and run HAProxy on it.

    config = render_config(
        [Backend("node1", "127.0.0.1", 8801), Backend("node2", "127.0.0.1", 8802)],
        bind="127.0.0.1:8443", cert_file=pki.bundle_file, stats_bind="127.0.0.1:8404",
    )
    proxy = HAProxy(config, workdir)
    proxy.start()           # checks the configuration first (haproxy -c), then -db
    async with asyncio.timeout(10):
        await proxy.wait_listening("127.0.0.1", 8443)
    ...
    await proxy.stop()

HAProxy is Debian's package (``scripts/setup-services``); :func:`haproxy_binary` says
where it is, or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import resource
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "TEMPLATE",
    "Backend",
    "HAProxy",
    "default_maxconn",
    "haproxy_binary",
    "render_config",
]

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Backend:
    """One hub node as HAProxy sees it."""

    name: str
    host: str
    port: int

    def server_line(self) -> str:
        if not _NAME.fullmatch(self.name) or not _NAME.fullmatch(self.host):
            raise ValueError(f"unsafe backend name or host: {self.name!r} {self.host!r}")
        return f"    server {self.name} {self.host}:{self.port} check"


def render_config(
    backends: Sequence[Backend],
    *,
    bind: str,
    cert_file: Path,
    stats_bind: str,
    maxconn: int | None = None,
    template: Path = TEMPLATE,
) -> str:
    """The template with every ``@NAME@`` filled in; ValueError if one is left."""
    if not backends:
        raise ValueError("at least one backend")
    values = {
        "@BIND@": bind,
        "@CERT@": str(cert_file),
        "@STATS_BIND@": stats_bind,
        "@MAXCONN@": str(maxconn if maxconn is not None else default_maxconn()),
        "@SERVERS@": "\n".join(b.server_line() for b in backends),
    }
    lines = []
    for line in template.read_text().splitlines():
        if not line.lstrip().startswith("#"):  # comments name the placeholders: keep them
            for placeholder, value in values.items():
                if "\n" in value and placeholder != "@SERVERS@":
                    raise ValueError(f"{placeholder} must be one line")
                line = line.replace(placeholder, value)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    left = sorted(set(re.findall(r"@[A-Z_]+@", _strip_comments(text))))
    if left:
        raise ValueError(f"unfilled placeholders: {', '.join(left)}")
    return text


def default_maxconn(ceiling: int = 50_000) -> int:
    """As many connections as this machine's file limit lets HAProxy hold (two
    descriptors each, some spare), at most ``ceiling``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return ceiling
    return max(100, min(ceiling, (hard - 200) // 2))


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def haproxy_binary() -> str | None:
    return shutil.which("haproxy")


class HAProxy:
    """One HAProxy process in the foreground (``-db``), on a rendered configuration."""

    def __init__(self, config_text: str, workdir: Path) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError("haproxy not found (scripts/setup-services installs it)")
        self.binary = binary
        self.workdir = workdir
        self.config_file = workdir / "haproxy.cfg"
        self.log_file = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config_text)

    def check(self) -> None:
        """``haproxy -c``: RuntimeError with HAProxy's words if the config is wrong."""
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"haproxy -c failed: {(result.stdout + result.stderr)[-2000:]}")

    def start(self) -> None:
        """Check the configuration, then start HAProxy in the foreground (``-db``)."""
        self.check()
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    async def wait_listening(self, host: str, port: int) -> None:
        """Until ``host:port`` accepts connections; bound it with ``asyncio.timeout``.
        RuntimeError (with HAProxy's log) if HAProxy exits meanwhile."""
        assert self.proc is not None, "start() first"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_file.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop: open tunnels close now), SIGKILL after 5 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 5)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
