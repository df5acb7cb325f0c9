"""The page after the hub ends its session for good (issue 13, item 7): at the token's
expiry (4002) it drops its keys, says "Signed out: session expired." and returns to
sign-in; the passphrase brings it back online with a fresh login."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.browser import PAGE_PASS, open_page, playwright_expect, register_in_page
from tests.helpers.hubs import start_hub


def test_the_page_signs_out_after_exactly_4002_and_4004(node: Callable[[str], Any]) -> None:
    codes = [1000, 1001, 1006, 1011, 4001, 4002, 4003, 4004, 4008, 4009]
    page = node(
        f"""
        const p = await import("./src/protocol.js");
        const codes = {json.dumps(codes)};
        console.log(JSON.stringify(Object.fromEntries(codes.map((code) =>
          [code, [p.isSignedOut({{ code }}), p.closeReason(code)]]))));
        """
    )
    assert {int(c) for c, (out, _) in page.items() if out} == {4002, 4004}
    assert page["4002"][1] == "signed out: session expired"
    assert page["4004"][1] == "signed out on every device"


async def test_session_expiry_returns_the_page_to_sign_in(browser: Any, tmp_path: Path) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub", token_ttl_s=4) as hub:
        invite = await hub.invite_counselor("Dr Expiry", ("en",), ("anxiety",))
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-expiry")
        await expect(page.locator("#screen-unlock")).to_be_visible(timeout=15_000)
        await expect(page.locator("#unlock-reason")).to_have_text("Signed out: session expired.")
        await page.fill("#unlock-pass", PAGE_PASS)
        await page.press("#unlock-pass", "Enter")
        await expect(page.locator("#screen-workspace")).to_be_visible()
        await expect(page.locator("#banner")).to_have_attribute("data-state", "online")
        bp.assert_clean()
