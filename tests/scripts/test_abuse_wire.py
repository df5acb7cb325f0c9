"""scripts/abuse-wire --quick: the hostile-input benchmark runs end to end.

It starts the real hub as a child process on 127.0.0.1, cuts off never-reading clients
and pours garbage at it; the script itself fails (exit 1) if a never-reader was not
cut off, a session was closed with 1011 or the hub logged an exception. Only that and
the presence of every figure are asserted, never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.bench
def test_quick_abuse_wire_run_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "abuse-wire"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"BENCH_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| never-reading sessions |" in proc.stdout and "| no garbage |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["problems"] == []
    (memory,) = report["memory"]
    assert memory["cut"] == memory["sessions"] == 2
    phases = [p["name"] for p in report["latency"]]
    assert phases == ["no garbage", "2,000 garbage frames/s offered", "no garbage"]
    assert report["latency"][1]["garbage_frames_per_s"] > 0
