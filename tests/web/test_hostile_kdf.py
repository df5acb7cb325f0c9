"""A hub that asks the page for a cheap passphrase derivation is refused (issue 10, attack 2).

The hub here is the real one; the hostile part is played by rewriting what it answers on
the page's WebSocket (Playwright's route_web_socket sits between the page and the hub),
which is exactly what an operator controlling the hub process can do. In every refusal
the page sends nothing derived from the passphrase: no `register` / `login` frame.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

from tests.helpers.browser import PAGE_PASS, open_page, playwright_expect, register_in_page
from tests.helpers.hubs import start_hub

#: libsodium INTERACTIVE: the page's floor, and the cost a production hub announces.
INTERACTIVE = {"kdf_opslimit": 2, "kdf_memlimit": 64 * 1024 * 1024}


class Wire:
    """Route the page's sockets through the test: record what the page sends, and let
    ``rewrite`` change the hub's answers of one type before the page sees them."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.rewrite: dict[str, Any] = {}

    def types_sent(self) -> list[str]:
        return [frame["type"] for frame in self.sent]

    def route(self, ws: Any) -> None:
        server = ws.connect_to_server()

        def to_hub(message: str | bytes) -> None:
            if isinstance(message, str):
                self.sent.append(json.loads(message))
            server.send(message)

        def to_page(message: str | bytes) -> None:
            if isinstance(message, str):
                frame = json.loads(message)
                change = self.rewrite.get(frame.get("type"))
                if change is not None:
                    message = json.dumps({**frame, **change})
            ws.send(message)

        ws.on_message(to_hub)
        server.on_message(to_page)


async def test_hostile_kdf_registration_below_the_floor_is_refused(
    browser: Any, tmp_path: Path
) -> None:
    """A hub announcing the test cost, and a page without the test flag: no account."""
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:  # the test profile: opslimit 1, 8 KiB
        invite = await hub.invite_counselor()
        bp = await open_page(browser, hub.http_url, weak_kdf=False)
        wire = Wire()
        await bp.page.route_web_socket(re.compile(r".*/ws$"), wire.route)
        page = bp.page
        await page.fill("#reg-invite", invite)
        await page.fill("#reg-handle", "dr-cheap")
        await page.fill("#reg-pass", PAGE_PASS)
        await page.fill("#reg-pass2", PAGE_PASS)
        await page.click("#register-form button[type=submit]")
        error = page.locator("#register-error")
        await expect(error).to_contain_text("weaker passphrase key derivation")
        await expect(error).to_contain_text("opslimit 1, memlimit 8 KiB")
        await expect(error).to_contain_text("nothing was sent")
        assert wire.types_sent() == ["hello"]
        assert await page.evaluate("() => localStorage.length") == 0
        await expect(page.locator("#screen-auth")).to_be_visible()


async def test_hostile_kdf_prelogin_downgrade_and_salt_swap_are_refused(
    browser: Any, tmp_path: Path
) -> None:
    """A counselor registered at the real cost; the hub then answers prelogin with a cheap
    cost, then with another salt: both refused before the passphrase is used; the
    honest answer logs in."""
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub", **INTERACTIVE) as hub:
        invite = await hub.invite_counselor()
        bp = await open_page(browser, hub.http_url, weak_kdf=False)
        page = bp.page
        wire = Wire()
        await page.route_web_socket(re.compile(r".*/ws$"), wire.route)
        await register_in_page(page, invite, "dr-kdf")
        pin = json.loads(await page.evaluate("() => localStorage.getItem('counsel-chat.kdf.v1')"))[
            "dr-kdf"
        ]
        assert (pin["opslimit"], pin["memlimit"]) == (2, 64 * 1024 * 1024)
        await page.click("#logout-btn")
        await expect(page.locator("#screen-auth")).to_be_visible()

        async def sign_in() -> None:
            wire.sent.clear()
            await page.fill("#login-handle", "dr-kdf")
            await page.fill("#login-pass", PAGE_PASS)
            await page.click("#login-form button[type=submit]")

        # 1. The cheapest cost libsodium allows: refused by the floor.
        wire.rewrite = {"prelogin.result": {"opslimit": 1, "memlimit": 8192}}
        await sign_in()
        error = page.locator("#login-error")
        await expect(error).to_contain_text("weaker passphrase key derivation")
        assert wire.types_sent() == ["prelogin"]  # no login: nothing derived was sent

        # 2. The real cost with another salt: refused by the pin.
        other_salt = base64.b64encode(os.urandom(16)).decode()
        assert other_salt != pin["salt"]
        wire.rewrite = {"prelogin.result": {"salt": other_salt}}
        await sign_in()
        await expect(error).to_contain_text("than this browser remembers")
        await expect(error).to_contain_text("another salt")
        assert wire.types_sent() == ["prelogin"]  # no login: nothing derived was sent
        await expect(page.locator("#screen-auth")).to_be_visible()

        # 3. The honest answer: signed in.
        wire.rewrite = {}
        await sign_in()
        await expect(page.locator("#screen-workspace")).to_be_visible()
        assert "login" in wire.types_sent()
        bp.assert_clean()
