"""Issue 14 in Chromium: a client writes while its case waits for a counselor and goes
offline; the counselor who registers in the page later is assigned the case, and the page
says it is waiting for the client's key (no text, no failure) until the client's next
connection shares the key, then shows the three messages, verified and in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chat_client import ChatClient
from tests.helpers.browser import open_page, playwright_expect, register_in_page
from tests.helpers.hubs import TEST_KDF, start_hub

WAITING = ["is anyone there?", "I need to talk to someone", "I will come back later"]


async def test_counselor_page_reads_what_the_client_wrote_while_waiting(
    browser: Any, tmp_path: Path
) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor("Dr Web", ("en",), ("anxiety",))
        client = await ChatClient.register(
            hub.url, "alice", "client passphrase", home=tmp_path / "alice", **TEST_KDF
        )
        case = await client.open_case("anxiety", "en")
        assert case.state == "waiting"
        for text in WAITING:
            await client.send(case.case_id, text)
        await client.close()  # offline: the key can only be shared on its next connection

        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-web")  # assigned the waiting case
        item = page.locator(f'.case-item[data-case-id="{case.case_id}"]')
        await expect(item).to_be_visible()
        await item.click()
        pane = page.locator(f'.pane[data-case-id="{case.case_id}"]')
        await expect(pane.locator(".key-wait")).to_be_visible()
        await expect(pane.locator(".key-wait")).to_contain_text(
            "Waiting for the client's key: 3 messages"
        )
        assert await pane.locator(".msg").count() == 0

        client = await ChatClient.open(hub.url, tmp_path / "alice", "client passphrase")
        try:
            verified = pane.locator(".msg.theirs.verified .body")
            await expect(verified).to_have_text(WAITING)
            await expect(pane.locator(".key-wait")).to_be_hidden()
            assert await pane.locator(".msg.unverified").count() == 0
            seqs = await pane.locator(".msg").evaluate_all("els => els.map(e => e.dataset.seq)")
            assert seqs == ["1", "2", "3"]
        finally:
            await client.close()
        bp.assert_clean()
