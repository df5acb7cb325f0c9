"""HAProxy with TLS in front of real hubs, for tests (deploy/haproxy.cfg, rendered).

    async with run_haproxy(tmp_path, [Backend("n1", "127.0.0.1", port1), ...]) as proxy:
        ws = await RawClient.connect(proxy.wss_url, ssl=proxy.client_ssl())
        await proxy.wait_status("n1", "DOWN")

The ``haproxy`` fixture (tests/e2e/conftest.py) wraps :func:`run_haproxy` for tests.

A fresh CA and server certificate are made for each run (openssl); HAProxy runs in the
foreground on free ports and is stopped afterwards. Without the ``haproxy`` or
``openssl`` binaries the test is skipped (failed under ``CHAT_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.localcluster.haproxy import Backend, HAProxy, haproxy_binary, render_config
from scripts.localcluster.tls import LocalPKI, make_local_pki
from tests.helpers.hubs import free_port
from tests.helpers.services import require_service

__all__ = ["Backend", "RunningProxy", "StartProxy", "run_haproxy"]


@dataclass
class RunningProxy:
    proxy: HAProxy
    port: int
    stats_port: int
    pki: LocalPKI

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def client_ssl(self) -> ssl.SSLContext:
        """What a client configured with ``--ca-file`` uses: only our CA is trusted."""
        return ssl.create_default_context(cafile=str(self.pki.ca_file))

    async def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """HTTPS GET through the proxy (status, body); HTTP errors are answers too."""

        def fetch() -> tuple[int, bytes]:
            request = urllib.request.Request(self.https_url + path.lstrip("/"))
            try:
                with urllib.request.urlopen(
                    request, timeout=timeout, context=self.client_ssl()
                ) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        return await asyncio.to_thread(fetch)

    async def statuses(self) -> dict[str, str]:
        """Each hub's state as HAProxy's health checks see it (UP, DOWN, ...)."""

        def fetch() -> str:
            url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())

        text = (await asyncio.to_thread(fetch)).lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row["pxname"] == "hubs" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_status(self, name: str, status: str, timeout: float = 6.0) -> None:
        """Until HAProxy's health checks put ``name`` in ``status`` (their own clock)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.statuses()).get(name) != status:
            if loop.time() > deadline:
                raise AssertionError(f"{name} not {status}: {await self.statuses()}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def run_haproxy(tmp_path: Path, backends: Sequence[Backend]) -> AsyncIterator[RunningProxy]:
    if haproxy_binary() is None:
        require_service("HAProxy", "no haproxy binary (scripts/setup-services installs it)")
    if shutil.which("openssl") is None:
        require_service("openssl", "no openssl binary (scripts/setup-services installs it)")
    pki = make_local_pki(tmp_path / "tls")
    port, stats_port = free_port(), free_port()
    config = render_config(
        backends,
        bind=f"127.0.0.1:{port}",
        cert_file=pki.bundle_file,
        stats_bind=f"127.0.0.1:{stats_port}",
    )
    proxy = HAProxy(config, tmp_path / "haproxy")
    proxy.start()
    try:
        async with asyncio.timeout(10):
            await proxy.wait_listening("127.0.0.1", port)
        yield RunningProxy(proxy, port, stats_port, pki)
    finally:
        await proxy.stop()


#: Starts HAProxy in front of ``backends`` (the ``haproxy`` fixture); stopped after the test.
StartProxy = Callable[[Sequence[Backend]], Awaitable[RunningProxy]]
