"""Real-browser fixtures: Debian's Chromium driven by Playwright, never a downloaded browser.

Without Playwright, Chromium or the built web bundle the browser tests are skipped with
the reason; with ``CHAT_REQUIRE_SERVICES=1`` (CI) they fail instead
(:func:`tests.helpers.services.require_service`). ``scripts/setup --dev`` installs all three.
The ``node`` fixture runs the page's pure modules in Node, without a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.services import require_service

CHROMIUM = Path(os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium"))
WEB_ROOT = Path(__file__).resolve().parents[2] / "web_client"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 860}


def _ensure_bundle() -> None:
    """The page loads web_client/dist/app.js: build it if npm packages are there, else give up."""
    if (WEB_ROOT / "dist" / "app.js").is_file() and (WEB_ROOT / "dist" / "crypto.js").is_file():
        return
    npm = shutil.which("npm")
    if npm is None or not (WEB_ROOT / "node_modules").is_dir():
        require_service("web bundle", "web_client/dist is not built (run scripts/setup)")
    subprocess.run([npm, "run", "--silent", "build"], cwd=WEB_ROOT, check=True, timeout=120)


@pytest.fixture
def node() -> Callable[[str], Any]:
    """``node(script)`` runs ``script`` as an ES module in Node with web_client/ as the
    working directory (so it can import the page's sources, ``./src/...``) and returns
    what it printed as JSON. For the page's pure modules, which need no DOM and no socket.
    Node exits when the script ends, whatever timers the modules left."""
    executable = shutil.which("node")
    if executable is None:
        require_service("Node.js", "node is not on PATH (scripts/setup needs it too)")
    if not (WEB_ROOT / "node_modules").is_dir():
        require_service("web packages", "web_client/node_modules is missing (run scripts/setup)")

    def run(script: str) -> Any:
        done = subprocess.run(
            [executable, "--input-type=module", "-e", script + "\nprocess.exit(0);\n"],
            cwd=WEB_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A persistent Chromium context with a fresh user-data-dir under tmp_path."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        require_service(
            "Playwright", f"python package not importable ({exc}); pip install -e .[dev]"
        )
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} not found (run scripts/setup-browser)")
    _ensure_bundle()
    async with async_playwright() as pw:
        try:
            context = await pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=LAUNCH_ARGS,
                viewport=VIEWPORT,
            )
        except Exception as exc:  # a broken browser install: skip/fail with the reason
            require_service("Chromium", f"{CHROMIUM} did not start: {exc}")
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            await context.close()
