"""scripts/screenshots makes the three web pictures with a real hub and Chromium; here
into a temporary directory (a test run never writes docs/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.services import require_service

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium"))


def test_screenshots_script_writes_the_three_pictures(tmp_path: Path) -> None:
    try:
        import playwright  # noqa: F401
    except ImportError as exc:
        require_service("Playwright", f"python package not importable ({exc})")
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} not found (run scripts/setup-browser)")
    if not (REPO / "web_client" / "dist" / "app.js").is_file():
        require_service("web bundle", "web_client/dist is not built (run scripts/setup)")
    docs_before = {p.name: p.stat().st_mtime_ns for p in (REPO / "docs").glob("*.png")}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_screenshots.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("web-cases.png", "web-conversation.png", "web-escrow.png"):
        picture = tmp_path / name
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert picture.stat().st_size > 5_000, name
        assert f"wrote {picture}" in done.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (REPO / "docs").glob("*.png")} == docs_before
