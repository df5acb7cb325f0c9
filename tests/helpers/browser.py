"""The counselor web page in Chromium (Playwright), for the browser tests: open a page
that records its console errors, register a counselor in it, and decide where a
documentation screenshot goes.

The ``browser`` fixture that starts Chromium lives in ``tests/web/conftest.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PAGE_PASS",
    "SCREENSHOTS_ENV",
    "BrowserPage",
    "open_page",
    "playwright_expect",
    "register_in_page",
    "screenshot_path",
]

#: The passphrase :func:`register_in_page` gives the counselor it registers.
PAGE_PASS = "counselor passphrase 1"
#: ``CHAT_UPDATE_SCREENSHOTS=1`` makes the browser tests rewrite the screenshots in docs/.
SCREENSHOTS_ENV = "CHAT_UPDATE_SCREENSHOTS"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def playwright_expect() -> Any:
    """Playwright's ``expect`` (imported late: Playwright is optional)."""
    from playwright.async_api import expect as playwright_expect

    return playwright_expect


@dataclass
class BrowserPage:
    """A page plus what it logged: console errors and CSP violations fail the test."""

    page: Any
    console_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        csp = [m for m in self.console_errors if "Content Security Policy" in m]
        assert not csp, f"CSP violations: {csp}"


async def open_page(context: Any, url: str, *, weak_kdf: bool = True) -> BrowserPage:
    """Open ``url`` (the hub's page). With ``weak_kdf`` (the default) the URL carries
    ``?weakkdf=1``, which the page honours only on a hub running the test KDF profile
    (start_hub does): registration and login then use the hub's cheap test cost instead
    of refusing it as below the page's floor (web_client/src/kdf.js)."""
    if weak_kdf:
        url += ("&" if "?" in url else "?") + "weakkdf=1"
    page = context.pages[0] if context.pages else await context.new_page()
    wrapped = BrowserPage(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            wrapped.console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: wrapped.console_errors.append(f"pageerror: {exc}"))
    await page.goto(url)
    return wrapped


async def register_in_page(page: Any, invite: str, handle: str) -> None:
    """Register a counselor with ``invite`` and :data:`PAGE_PASS`; wait until online."""
    await page.fill("#reg-invite", invite)
    await page.fill("#reg-handle", handle)
    await page.fill("#reg-pass", PAGE_PASS)
    await page.fill("#reg-pass2", PAGE_PASS)
    await page.click("#register-form button[type=submit]")
    await playwright_expect()(page.locator("#screen-workspace")).to_be_visible()
    await playwright_expect()(page.locator("#banner")).to_have_attribute("data-state", "online")


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a test saves the screenshot ``name``: docs/``name`` when
    ``CHAT_UPDATE_SCREENSHOTS=1`` asks to regenerate the committed pictures, else under
    ``tmp_path`` (a test run must not modify tracked files)."""
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        return DOCS / name
    return tmp_path / name
