"""scripts/cluster: N real nodes on the test PostgreSQL behind a real HAProxy with TLS;
the real ``chat-client`` registers through it over wss://, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from scripts.localcluster.haproxy import haproxy_binary
from tests.helpers.services import require_service

REPO = Path(__file__).resolve().parents[2]


def _lines(stream: object) -> queue.Queue[str]:
    """Lines of a child's output, readable with a timeout."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_cluster_serves_wss_through_haproxy_and_stops_on_ctrl_c(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    if haproxy_binary() is None:
        require_service("HAProxy", "no haproxy binary (scripts/setup-services installs it)")
    work = tmp_path / "cluster"
    command = [
        "bash", str(REPO / "scripts" / "cluster"), "--nodes", "2", "--db", pg_url,
        "--redis", redis_url, "--port", "0", "--first-node-port", "0", "--stats-port", "0",
        "--dir", str(work), "--", "--kdf", "test", "--redis-prefix", f"{redis_prefix}cl:",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "CLUSTER_PYTHON": sys.executable},
    )
    try:
        lines = _lines(proc.stdout)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while not seen or "Ctrl-C stops everything" not in seen[-1]:
            assert proc.poll() is None, "".join(seen)
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        text = "".join(seen)
        wss = re.search(r"clients:\s+(wss://localhost:\d+/ws)", text)
        assert wss is not None, text
        node_ports = [int(p) for p in re.findall(r"node\d: http://127.0.0.1:(\d+)/", text)]
        assert len(node_ports) == 2
        assert (work / "tls" / "ca.pem").exists()

        # The real client, through HAProxy, trusting only the cluster's CA, the way the
        # announcement says.
        assert re.search(r"chat-client --server wss://\S+ --ca-file \S+ca\.pem", text), text
        register = [
            str(Path(sys.executable).parent / "chat-client"), "--server", wss.group(1),
            "--ca-file", str(work / "tls" / "ca.pem"),
            "--home", str(tmp_path / "home"), "register", "--handle", "through-haproxy",
            "--kdf-ops", "1", "--kdf-mem", "8192",
        ]  # fmt: skip
        client = subprocess.run(
            register,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CHAT_PASSPHRASE": "haproxy passphrase"},
        )
        assert client.returncode == 0, client.stdout + client.stderr
        assert "through-haproxy" in client.stdout

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        haproxy_port = int(wss.group(1).rsplit(":", 1)[1].split("/")[0])
        for port in (*node_ports, haproxy_port):
            assert not _listening(port), port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
