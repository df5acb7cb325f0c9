"""The page's everyday looks in Chromium against the real hub (issue 14): the new-case
notice leaves Send usable, badges are small, each case says who, what, which language
and since when, the escrow panel speaks plainly with fingerprints behind "Details",
the hub serves a favicon, and a failed sign-in does not talk about invite codes."""

from __future__ import annotations

import asyncio
import datetime
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chat_client import ChatClient
from protocol import frames as f
from protocol.escrow import policy_fingerprint
from tests.helpers.browser import open_page, playwright_expect, register_in_page
from tests.helpers.cli import KDF, run_cli
from tests.helpers.disputes import ESCROW_PASS, ceremony, server
from tests.helpers.hubs import TEST_KDF, start_hub


async def test_favicon_is_served(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub") as hub:

        def get() -> tuple[int, str, bytes]:
            with urllib.request.urlopen(hub.http_url + "favicon.ico", timeout=10) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()

        status, kind, body = await asyncio.to_thread(get)
    assert status == 200 and kind == "image/x-icon"
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO header


async def test_failed_sign_in_does_not_mention_an_invite(browser: Any, tmp_path: Path) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await page.fill("#login-handle", "nobody-here")
        await page.fill("#login-pass", "some passphrase")
        await page.click("#login-form button[type=submit]")
        error = page.locator("#login-error")
        await expect(error).to_contain_text("handle or passphrase")
        assert "invite" not in ((await error.text_content()) or "").lower()
        bp.assert_clean()


async def box(locator: Any) -> dict[str, float]:
    found = await locator.bounding_box()
    assert found is not None
    return dict(found)


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


async def test_notice_badges_and_case_details(browser: Any, tmp_path: Path) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor("Dr Looks", ("en", "ur"), ("anxiety",))
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-looks")
        first = await ChatClient.register(
            hub.url, "calm-river", "client passphrase", home=tmp_path / "a", **TEST_KDF
        )
        second = await ChatClient.register(
            hub.url, "quiet-lake", "client passphrase", home=tmp_path / "b", **TEST_KDF
        )
        try:
            case = await first.open_case("anxiety", "ur")
            await first.send(case.case_id, "hello")
            item = page.locator(f'.case-item[data-case-id="{case.case_id}"]')
            await expect(item.locator(".badge.unread")).to_have_text("1")
            await expect(item.locator(".badge.new")).to_be_visible()
            # Who, what, which language, since when.
            await expect(item.locator(".case-title")).to_contain_text("calm-river")
            await expect(item).to_contain_text("anxiety")
            await expect(item).to_contain_text("ur")
            await expect(item.locator(".case-opened")).to_have_attribute(
                "datetime", _iso(case.created_at)
            )
            # Badges are small pills beside the title, not bars across the item.
            row = await box(item)
            for badge in (item.locator(".badge.unread"), item.locator(".badge.new")):
                size = await box(badge)
                assert size["width"] < 60 and size["width"] < row["width"] / 4, size
                assert size["height"] < 30, size

            await item.click()
            pane = page.locator(f'.pane[data-case-id="{case.case_id}"]')
            await expect(pane.locator(".msg.theirs .who")).to_have_text("calm-river")
            send = pane.locator("button[type=submit]")
            await expect(send).to_be_visible()

            # A second case arrives while the first is open: its notice covers nothing.
            await second.open_case("anxiety", "en")
            toast = page.locator(".toast", has_text="quiet-lake")
            await expect(toast).to_contain_text("New case from quiet-lake: anxiety, en")
            assert not overlap(await box(toast), await box(send))
            assert not overlap(await box(toast), await box(pane.locator("textarea")))
            await pane.locator("textarea").fill("reply while the notice shows")
            await send.click()
            await expect(pane.locator(".msg.mine .body")).to_have_text(
                "reply while the notice shows"
            )
            bp.assert_clean()
        finally:
            await first.close()
            await second.close()


def _iso(ms: int) -> str:
    return (
        datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


async def test_escrow_panel_in_plain_words(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = playwright_expect()
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    policy, org_fp = ceremony(tmp_path / "keys", 3, 2)
    async with start_hub(tmp_path / "hub", org_fingerprint=org_fp) as hub:
        assert (
            await server(
                hub, "admin", "escrow-policy", "install", str(policy), "--org-fingerprint", org_fp
            )
            == 0
        )
        invite = await hub.invite_counselor("Dr Plain", ("en",), ("anxiety",))
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-plain")
        panel = page.locator("#escrow-info")
        await expect(panel).to_have_attribute("data-verified", "yes")
        text = page.locator("#escrow-text")
        await expect(text).to_contain_text("written dispute request")
        await expect(text).to_contain_text(
            "any 2 of 3 escrow officers (officer1, officer2, officer3)"
        )
        plain = (await text.inner_text()) or ""
        assert "fingerprint" not in plain.lower() and "policy" not in plain.lower()
        details = panel.locator("details")
        await expect(details.locator("summary")).to_have_text("Details")
        assert await details.get_attribute("open") is None  # folded until asked
        await details.locator("summary").click()
        await expect(details).to_contain_text("organisation key")
        signed = msgspec.json.decode(policy.read_bytes(), type=f.SignedEscrowPolicy)
        await expect(details).to_contain_text(policy_fingerprint(signed.policy))
        bp.assert_clean()


async def test_terminal_client_reading_turns_the_page_mark_to_read(
    browser: Any, tmp_path: Path
) -> None:
    """The issue's symptom: a counselor's message stayed "Sent" in the page forever when
    the client read it with ``chat-client history``."""
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor("Dr Marks", ("en",), ("anxiety",))
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-marks")
        home = tmp_path / "client"
        rc, _, err = await run_cli(home, "register", "--handle=reader", *KDF, url=hub.url)
        assert rc == 0, err
        rc, out, err = await run_cli(home, "open-case", "--topic", "anxiety", "--language", "en")
        assert rc == 0, err
        case_id = out.split()[0]
        rc, _, err = await run_cli(home, "send", case_id, "hello")
        assert rc == 0, err
        await page.locator(f'.case-item[data-case-id="{case_id}"]').click()
        pane = page.locator(f'.pane[data-case-id="{case_id}"]')
        await pane.locator("textarea").fill("Welcome. How can I help?")
        await pane.locator("textarea").press("Enter")
        mine = pane.locator(".msg.mine")
        await expect(mine).to_have_attribute("data-status", "sent")
        rc, out, err = await run_cli(home, "history", case_id)
        assert rc == 0 and "Welcome. How can I help?" in out, err
        await expect(mine).to_have_attribute("data-status", "read")
        await expect(mine.locator(".state")).to_have_text("Read")
        bp.assert_clean()
