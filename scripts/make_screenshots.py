#!/usr/bin/env python3
"""Regenerate the web chat's pictures in docs/ (on request only; the test suite never
writes docs/: it runs this with --out under a temporary directory).

    scripts/screenshots                 # rewrite docs/web-cases.png, web-conversation.png,
                                        # web-escrow.png
    scripts/screenshots --out DIR       # write them somewhere else

It starts a real hub on 127.0.0.1 in a temporary directory with a 2-of-3 escrow policy
(keys made on the spot), registers a counselor in Debian's Chromium (Playwright) and
three clients with the Python SDK, lets them talk, and takes the pictures: a case list
with the clients' pseudonyms, a conversation with read marks, the plain-language escrow
panel with its details open.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chat_client import ChatClient  # noqa: E402
from chat_client.keyfiles import load_key  # noqa: E402
from tests.helpers.browser import (  # noqa: E402
    open_page,
    playwright_expect,
    register_in_page,
)
from tests.helpers.certs import certify_counselors  # noqa: E402
from tests.helpers.clients import next_message  # noqa: E402
from tests.helpers.disputes import ESCROW_PASS, ceremony, server  # noqa: E402
from tests.helpers.hubs import TEST_KDF, start_hub  # noqa: E402

__all__ = ["NAMES", "main", "take"]

NAMES = ("web-cases.png", "web-conversation.png", "web-escrow.png")
CHROMIUM = Path(os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT: Any = {"width": 1280, "height": 760}
CLIENTS = (
    ("calm-river", "anxiety", "en", "I haven't slept properly in weeks."),
    ("quiet-lake", "grief", "en", "My father died last month."),
    ("north-star", "anxiety", "ur", "Is anyone there?"),
)


async def take(out: Path, work: Path) -> list[Path]:
    """Make the three pictures in ``out``; scratch files go to ``work``."""
    from playwright.async_api import async_playwright

    expect = playwright_expect()
    os.environ["CHAT_ESCROW_PASSPHRASE"] = ESCROW_PASS
    policy, org_fp = ceremony(work / "keys", 3, 2)
    async with start_hub(work / "hub", org_fingerprint=org_fp) as hub:
        install = ["admin", "escrow-policy", "install", str(policy), "--org-fingerprint", org_fp]
        assert await server(hub, *install) == 0, "policy install failed"
        invite = await hub.invite_counselor("Dr Ayesha", ("en", "ur"), ("anxiety", "grief"))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                str(work / "profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
                viewport=VIEWPORT,
            )
            browser.set_default_timeout(15_000)
            clients: list[ChatClient] = []
            try:
                bp = await open_page(browser, hub.http_url)
                page = bp.page
                await register_in_page(page, invite, "dr-ayesha")
                # The organisation certifies the counselor offline (chat-escrow certify):
                # clients that pin the organisation share case keys only with them.
                org = load_key(work / "keys" / "org.key", ESCROW_PASS, "org")
                await certify_counselors(hub, org.sign_key)
                cases = []
                for handle, topic, language, first in CLIENTS:
                    client = await ChatClient.register(
                        hub.url,
                        handle,
                        "client passphrase",
                        home=work / handle,
                        org_fingerprint=org_fp,
                        opslimit=TEST_KDF["opslimit"],
                        memlimit=TEST_KDF["memlimit"],
                    )
                    clients.append(client)
                    assert await client.consent()
                    case = await client.open_case(topic, language)
                    await client.send(case.case_id, first)
                    cases.append(case)
                calm, lake = clients[0], clients[1]
                # A conversation with the first client, read on both sides.
                item = page.locator(f'.case-item[data-case-id="{cases[0].case_id}"]')
                await item.click()
                pane = page.locator(f'.pane[data-case-id="{cases[0].case_id}"]')
                textarea = pane.locator("textarea")
                await textarea.fill("I'm glad you reached out. What keeps you awake?")
                await textarea.press("Enter")
                reply = await next_message(calm)
                await calm.mark_read(cases[0].case_id, reply.seq)
                await calm.send(cases[0].case_id, "Mostly worrying about work, every night.")
                await expect(pane.locator(".msg.mine")).to_have_attribute("data-status", "read")
                await expect(pane.locator(".msg.theirs")).to_have_count(2)
                await lake.send(cases[1].case_id, "I don't know who else to talk to.")
                lake_item = page.locator(f'.case-item[data-case-id="{cases[1].case_id}"]')
                await expect(lake_item.locator(".badge.unread")).to_have_text("2")
                for handle, *_ in CLIENTS:
                    await expect(page.locator(".case-list")).to_contain_text(handle)
                for _ in range(await page.locator(".toast").count()):
                    await page.locator(".toast button").first.click()
                written = [out / name for name in NAMES]
                await page.locator(".cases").screenshot(path=str(written[0]))
                await page.screenshot(path=str(written[1]))
                details = page.locator("#escrow-info details")
                await details.locator("summary").click()
                await expect(details).to_have_attribute("open", "")
                await page.locator("#escrow-info").screenshot(path=str(written[2]))
                bp.assert_clean()
            finally:
                for client in clients:
                    await client.close()
                await browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where (default docs/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as work:
        written = asyncio.run(take(args.out, Path(work)))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
