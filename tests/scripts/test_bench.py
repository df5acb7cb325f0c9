"""scripts/bench --quick: the benchmark harness runs end to end and its checks hold.

It starts the real hub and the baseline relay as child processes on 127.0.0.1 and
drives them with real authenticated, encrypted sessions. Only completeness is asserted
(every message delivered exactly once, every figure present), never speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.services import require_service

REPO = Path(__file__).resolve().parents[2]
BENCH = ["bash", str(REPO / "scripts" / "bench")]
ENV = {"BENCH_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}


# In the default run (scripts/test); deselect while iterating: scripts/test -m "not bench".
@pytest.mark.bench
def test_quick_benchmark_is_complete(tmp_path: Path) -> None:
    doc = REPO / "docs" / "PERFORMANCE.md"
    doc_before = doc.read_bytes() if doc.exists() else None
    out = tmp_path / "bench"
    proc = subprocess.run(
        [*BENCH, "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[bench" in proc.stderr  # progress is reported while it runs

    results = json.loads((out / "results-asyncio-quick.json").read_text())
    assert results["complete"] is True and results["failures"] == []
    for name in ("hub", "relay", "target"):
        scenario = results["scenarios"][name]
        assert scenario["levels"], name
        for level in scenario["levels"]:
            assert level["complete"], (name, level)
            assert level["messages"] > 0
            # Exactly once: each sent message acked once and delivered to the peer once.
            assert level["sent"] == level["acked"] == level["delivered"] == level["messages"]
            for fault in ("duplicates", "unexpected", "bad_acks", "bad_seq_pairs", "errors"):
                assert level[fault] == 0, (name, level["name"], fault)
            for metric in ("ack_latency_ms", "e2e_latency_ms"):
                assert set(level[metric]) >= {"p50", "p99", "p99.9"}
                assert 0 < level[metric]["p50"] <= level[metric]["p99"] <= level[metric]["p99.9"]
            assert level["delivered_msgs_per_s"] > 0
            assert level["server_cpu_us_per_msg"] >= 0
            assert level["server_rss_mib"] > 0
    # The sweep has paced levels and a max-rate level.
    offered = [lv["offered_msgs_per_s"] for lv in results["scenarios"]["hub"]["levels"]]
    assert offered[-1] is None and all(offered[:-1])

    idle = results["idle"]
    assert idle["complete"] and idle["connections"] == idle["still_open"] == 40
    sync = results["sync"]
    assert sync["complete"] and sync["received"] == sync["stored"] == 600
    assert sync["exactly_once"] and sync["in_order"] and sync["chain_ok"]

    summary = results["summary"]
    for key in (
        "ratio_hub_over_relay",
        "target_ack_p99_ms",
        "idle_rss_per_connection_kib",
        "sync_s",
    ):
        assert summary[key] is not None, key
    assert set(summary["targets_met"]) == {
        "throughput_ratio_ge_0.4",
        "ack_p99_le_50ms_at_5k_1000conns",
        "idle_rss_le_32KiB",
        "sync_10k_lt_1s",
    }
    meta = results["meta"]
    assert meta["command"].startswith("scripts/bench --quick") and "websockets" in meta["versions"]
    for picture in ("latency-asyncio-quick.png", "throughput-asyncio-quick.png"):
        data = (out / picture).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    # A quick run never writes the committed results.
    assert (doc.read_bytes() if doc.exists() else None) == doc_before
    assert not list((REPO / "docs" / "bench").glob("*quick*"))


def test_quick_figures_never_go_to_docs() -> None:
    proc = subprocess.run(
        [*BENCH, "--quick", "--update-docs"], capture_output=True, text=True, timeout=60, env=ENV
    )
    assert proc.returncode == 2
    assert "--update-docs needs a full run" in proc.stderr


@pytest.mark.bench
def test_quick_cluster_comparison_is_complete(tmp_path: Path, pg_admin_url: str) -> None:
    """``--db URL --nodes 2``: one node on SQLite, one on PostgreSQL, two behind HAProxy
    with Redis (and an observer node), each complete, every process's CPU accounted."""
    for binary in ("haproxy", "redis-server", "openssl"):
        if shutil.which(binary) is None:
            require_service(binary, f"no {binary} binary (scripts/setup-services)")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [*BENCH, "--quick", "--db", pg_admin_url, "--nodes", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**ENV, "PATH": os.environ.get("PATH", ENV["PATH"])},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "cluster-asyncio-quick.json").read_text())
    assert results["complete"] is True and results["failures"] == []
    names = [sc["name"] for sc in results["setups"]]
    assert names == ["sqlite-1", "postgresql-1", "postgresql-2"]
    for sc in results["setups"]:
        for level in sc["levels"]:
            assert level["complete"], (sc["name"], level)
            assert level["sent"] == level["acked"] == level["delivered"] == level["messages"]
            assert level["cpu_us_per_msg"]["nodes"] >= 0
            assert level["commits_per_s"] > 0
    # Every process group is accounted (a quick run is too short for each to show CPU).
    groups = {"nodes", "observer", "postgres", "postgres_aux", "redis", "haproxy", "loadgen"}
    for level in results["setups"][-1]["levels"]:
        assert set(level["cpu_share"]) == groups
        assert all(v >= 0 for v in level["cpu_share"].values())
    model = results["summary"]["model"]
    assert [row["nodes"] for row in model["projection"]] == [1, 2, 4, 8, 16, 32]
    assert (out / "cluster-cpu-asyncio-quick.png").stat().st_size > 0


@pytest.mark.bench
def test_quick_abuse_auth_benchmark_reports_every_phase(tmp_path: Path) -> None:
    """scripts/bench --abuse-auth --quick: a legitimate user logs in alone and under
    hostile login/register load from one and from 16 addresses; none of its logins fail,
    and the hostile requests meet the limits (busy or rate_limited)."""
    out = tmp_path / "abuse.json"
    proc = subprocess.run(
        [*BENCH, "--abuse-auth", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads(out.read_text())
    phases = results["phases"]
    assert set(phases) == {"alone", "one_attacker_address", "attackers_on_16_addresses"}
    for phase in phases.values():
        assert phase["logins"] > 0 and phase["failed"] == {}
        assert phase["p50_ms"] is not None and phase["p99_ms"] >= phase["p50_ms"]
    limited = phases["one_attacker_address"]["hostile_answers"]
    assert limited.get("busy", 0) + limited.get("rate_limited", 0) > 0
    assert "| one attacker address |" in proc.stdout
