"""A version-1 account signs its box key from the page (`account.attest`, v2 §1), and a
box key signature the hub altered makes the page refuse to sign in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from protocol import crypto
from tests.helpers.browser import PAGE_PASS, open_page, playwright_expect, register_in_page
from tests.helpers.hostile_page import db_read, db_write
from tests.helpers.hubs import start_hub
from tests.helpers.waiting import wait_until


async def test_v1_account_attests_and_a_forged_box_sig_is_refused(
    browser: Any, tmp_path: Path
) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor()
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-old")
        [(account_id, sign_pk, box_pk, box_sig)] = db_read(
            hub, "SELECT id, sign_pk, box_pk, box_sig FROM accounts WHERE handle = 'dr-old'"
        )
        crypto.verify_box_key(sign_pk, box_pk, box_sig)  # registered with a valid box_sig

        async def sign_in_again() -> None:
            await page.click("#logout-btn")
            await expect(page.locator("#screen-auth")).to_be_visible()
            await page.fill("#login-handle", "dr-old")
            await page.fill("#login-pass", PAGE_PASS)
            await page.click("#login-form button[type=submit]")

        # As if the account were made by a version-1 client: no signature stored.
        await db_write(hub, "UPDATE accounts SET box_sig = NULL WHERE id = ?", account_id)
        await sign_in_again()
        await expect(page.locator("#screen-workspace")).to_be_visible()

        def stored_sig() -> Any:
            return db_read(hub, "SELECT box_sig FROM accounts WHERE id = ?", account_id)[0][0]

        stored = await wait_until(stored_sig, what="the page's account.attest")
        crypto.verify_box_key(sign_pk, box_pk, stored)

        # A signature that does not verify (the writer's bytes): the page will not sign in.
        await db_write(
            hub, "UPDATE accounts SET box_sig = ? WHERE id = ?", os.urandom(64), account_id
        )
        await sign_in_again()
        await expect(page.locator("#login-error")).to_contain_text("do not match this account")
        await expect(page.locator("#screen-auth")).to_be_visible()
