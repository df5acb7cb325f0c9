"""A database writer drops a message and re-chains what is left (issue 10, attack 3):
the hash chain is unkeyed, so it checks out, but the senders signed their counters and
what they had seen, and the page warns naming the seq."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from protocol import crypto
from protocol import frames as f
from protocol.chain import GENESIS, chain_hash
from tests.helpers.browser import PAGE_PASS, playwright_expect
from tests.helpers.hostile_page import (
    counselor_keys,
    counselor_page_and_client,
    db_file,
    envelope,
    send_frame,
)
from tests.helpers.rawclient import rid


def drop_and_rechain(path: Path, case_id: str, seq: int) -> None:
    """Delete the message at ``seq``, move the later ones up, rebuild the chain."""
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM messages WHERE case_id = ? AND seq = ?", (case_id, seq))
    rechain(path, case_id)


def swap_and_rechain(path: Path, case_id: str, a: int, b: int) -> None:
    """Exchange the messages at seqs ``a`` and ``b`` (seq -1 as a parking place)."""
    with sqlite3.connect(path) as db:
        move = "UPDATE messages SET seq = ? WHERE case_id = ? AND seq = ?"
        db.execute(move, (-1, case_id, a))
        db.execute(move, (a, case_id, b))
        db.execute(move, (b, case_id, -1))
    rechain(path, case_id)


def rechain(path: Path, case_id: str) -> None:
    """Number the case's messages 1..n in their stored order and rebuild the chain."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT seq, epoch, sender_id, client_msg_id, nonce, ciphertext FROM messages "
            "WHERE case_id = ? ORDER BY seq",
            (case_id,),
        ).fetchall()
        prev = GENESIS
        for new_seq, (old_seq, epoch, sender, cmid, nonce, ciphertext) in enumerate(rows, 1):
            prev = chain_hash(
                prev,
                case_id=case_id,
                seq=new_seq,
                epoch=epoch,
                sender_id=sender,
                client_msg_id=cmid,
                nonce=nonce,
                ciphertext=ciphertext,
            )
            db.execute(
                "UPDATE messages SET seq = ?, chain_hash = ? WHERE case_id = ? AND seq = ?",
                (new_seq, prev, case_id, old_seq),
            )
        db.execute(
            "UPDATE cases SET last_seq = ?, chain_head = ? WHERE id = ?",
            (len(rows), prev, case_id),
        )


async def test_hostile_dropped_message_is_reported_by_seq(browser: Any, tmp_path: Path) -> None:
    expect = playwright_expect()
    async with counselor_page_and_client(browser, tmp_path, "dr-order") as scene:
        hub, bp, raw, case = scene
        page = bp.page
        counselor = await counselor_keys(raw, case)
        key = await raw.deposit_key(case, counselor.box_pk)
        for n, body in enumerate(("I am scared.", "NO. Do not call anyone.", "Thanks."), 1):
            cmid = f"cmid-{n}"
            frame = send_frame(raw, key, case.case_id, envelope(body, cmid, n), cmid)
            assert isinstance(await raw.request(frame), f.MsgAck)
        item = page.locator(f'.case-item[data-case-id="{case.case_id}"]')
        await expect(item.locator(".badge.unread")).to_have_text("3")
        drop_and_rechain(db_file(hub), case.case_id, 2)
        # The page keeps no history: after a reload it syncs what the hub presents now.
        await page.reload()
        await page.fill("#unlock-pass", PAGE_PASS)
        await page.press("#unlock-pass", "Enter")

        await page.locator(f'.case-item[data-case-id="{case.case_id}"]').click()
        pane = page.locator(f'.pane[data-case-id="{case.case_id}"]')
        await expect(pane.locator(".msg.verified")).to_have_count(2)  # each one verifies
        warning = pane.locator(".case-warnings")
        await expect(warning.locator(".order-warning")).to_contain_text("contradicts")
        problem = warning.locator('li[data-seq="2"][data-kind="dropped"]')
        await expect(problem).to_contain_text(f"message n=2 of {raw.account_id} is missing")
        await expect(pane.locator(".log")).not_to_contain_text("Do not call")
        bp.assert_clean()


async def test_hostile_reordered_history_contradicts_a_signed_receipt(
    browser: Any, tmp_path: Path
) -> None:
    """The client signed a read receipt over the chain hash at seq 3; the writer then
    swaps seqs 1 and 2 and re-chains. The page reports the reorder (the counters) and the
    receipt that no longer matches (the history up to seq 3 was rewritten)."""
    expect = playwright_expect()
    async with counselor_page_and_client(browser, tmp_path, "dr-receipt") as scene:
        hub, bp, raw, case = scene
        page = bp.page
        counselor = await counselor_keys(raw, case)
        key = await raw.deposit_key(case, counselor.box_pk)
        ack: Any = None
        for n, body in enumerate(("one", "two", "three"), 1):
            cmid = f"cmid-{n}"
            frame = send_frame(raw, key, case.case_id, envelope(body, cmid, n), cmid)
            ack = await raw.request(frame)
            assert isinstance(ack, f.MsgAck)
        assert raw.identity is not None and ack.seq == 3
        signed = crypto.sign_receipt(raw.identity, case.case_id, "read", 3, ack.chain_hash)
        receipt = f.Receipt(
            id=rid(),
            case_id=case.case_id,
            kind="read",
            up_to_seq=3,
            chain_hash=ack.chain_hash,
            sig=signed,
        )
        assert isinstance(await raw.request(receipt), f.Ok)
        item = page.locator(f'.case-item[data-case-id="{case.case_id}"]')
        await expect(item.locator(".badge.unread")).to_have_text("3")
        swap_and_rechain(db_file(hub), case.case_id, 1, 2)
        await page.reload()
        await page.fill("#unlock-pass", PAGE_PASS)
        await page.press("#unlock-pass", "Enter")

        await item.click()
        pane = page.locator(f'.pane[data-case-id="{case.case_id}"]')
        await expect(pane.locator(".msg.verified")).to_have_count(3)
        warning = pane.locator(".case-warnings")
        await expect(warning.locator('li[data-kind="reordered"]')).to_contain_text(
            f"message n=1 of {raw.account_id} comes after n=2"
        )
        await expect(warning.locator('li[data-seq="3"][data-kind="rewritten"]')).to_contain_text(
            "history up to seq 3 differs from what the other side signed"
        )
