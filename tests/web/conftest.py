"""Real-browser fixtures: Debian's Chromium driven by Playwright, never a downloaded browser.

Without Playwright, Chromium or the built web bundle the browser tests are skipped with
the reason; with ``CHAT_REQUIRE_SERVICES=1`` (CI) they fail instead
(:func:`tests.conftest.require_service`). ``scripts/setup --dev`` installs all three.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service

CHROMIUM = Path(os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium"))
WEB_ROOT = Path(__file__).resolve().parents[2] / "chat_server" / "web"
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
    """The page loads web/dist/app.js: build it if npm packages are there, else give up."""
    if (WEB_ROOT / "dist" / "app.js").is_file() and (WEB_ROOT / "dist" / "crypto.js").is_file():
        return
    npm = shutil.which("npm")
    if npm is None or not (WEB_ROOT / "node_modules").is_dir():
        require_service("web bundle", "chat_server/web/dist is not built (run scripts/setup)")
    subprocess.run([npm, "run", "--silent", "build"], cwd=WEB_ROOT, check=True, timeout=120)


@dataclass
class BrowserPage:
    """A page plus what it logged: console errors and CSP violations fail the test."""

    page: Any
    console_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        csp = [m for m in self.console_errors if "Content Security Policy" in m]
        assert not csp, f"CSP violations: {csp}"


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


async def open_page(context: Any, url: str) -> BrowserPage:
    page = context.pages[0] if context.pages else await context.new_page()
    wrapped = BrowserPage(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            wrapped.console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: wrapped.console_errors.append(f"pageerror: {exc}"))
    await page.goto(url)
    return wrapped
