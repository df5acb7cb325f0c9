"""Real-browser fixtures: Debian's Chromium driven by Playwright, never a downloaded browser.

Without Playwright, Chromium or the built web bundle the browser tests are skipped with
the reason; with ``CHAT_REQUIRE_SERVICES=1`` (CI) they fail instead
(:func:`tests.helpers.services.require_service`). ``scripts/setup --dev`` installs all three.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
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
