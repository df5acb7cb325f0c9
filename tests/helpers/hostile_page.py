"""What the hostile-page tests (tests/web/test_hostile_*.py, test_attest.py) share: a
hostile writer of the hub's SQLite file, and a raw-frame client that sends exactly the
envelope bytes a test chooses (signed, padded and encrypted as the protocol says), in
the scene most of them start from: a real hub, the counselor signed in on the page, and
a raw client whose case the counselor was assigned."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.utils

from protocol import crypto
from protocol import frames as f
from tests.helpers.browser import BrowserPage, open_page, register_in_page
from tests.helpers.dbwriter import live_hub_db
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import RawClient, rid

__all__ = [
    "client_case",
    "counselor_keys",
    "counselor_page_and_client",
    "db_file",
    "db_read",
    "db_write",
    "envelope",
    "send_frame",
]


def db_file(hub: RunningHub) -> Path:
    return hub.tmp_path / "chat.db"


async def db_write(hub: RunningHub, sql: str, *params: Any) -> None:
    """The hostile database writer: a plain UPDATE on the hub's SQLite file (holding the
    write lock without blocking the event loop the hub runs on: dbwriter.live_hub_db)."""
    async with live_hub_db(db_file(hub)) as db:
        assert db.execute(sql, params).rowcount == 1


def db_read(hub: RunningHub, sql: str, *params: Any) -> list[Any]:
    with sqlite3.connect(db_file(hub)) as db:
        return db.execute(sql, params).fetchall()


async def client_case(hub: RunningHub, handle: str = "bob-raw") -> tuple[RawClient, f.CaseInfo]:
    """A client (raw frames) with a case assigned to the page's counselor."""
    raw = await RawClient.connect(hub.url)
    await raw.register(handle)
    await raw.authenticate()
    opened = await raw.request(f.CaseOpen(id=rid(), topic="anxiety", language="en"))
    assert isinstance(opened, f.CaseOpened) and opened.case.counselor_id is not None
    return raw, opened.case


def send_frame(
    raw: RawClient,
    key: bytes,
    case_id: str,
    envelope_bytes: bytes,
    cmid: str,
) -> f.MsgSend:
    """msg.send for exactly these envelope bytes, signed, padded and encrypted by the
    sender as the protocol says (so only the envelope's encoding is at fault)."""
    assert raw.identity is not None
    sig = raw.identity.sign(
        crypto.message_transcript(case_id, 1, cmid, raw.account_id, envelope_bytes)
    )
    nonce = nacl.utils.random(24)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        crypto.pad(sig + envelope_bytes),
        crypto.message_aad(case_id, 1, raw.account_id, cmid),
        nonce,
        key,
    )
    return f.MsgSend(
        id=rid(), case_id=case_id, epoch=1, client_msg_id=cmid, nonce=nonce, ciphertext=ciphertext
    )


def envelope(body: str, cmid: str, n: int) -> bytes:
    return crypto.encode_envelope(
        crypto.Envelope(
            body=body,
            ts=int(time.time() * 1000),
            client_msg_id=cmid,
            prev_seq=0,
            prev_hash=bytes(32),
            n=n,
        )
    )


async def counselor_keys(raw: RawClient, case: f.CaseInfo) -> f.DirectoryEntry:
    assert case.counselor_id is not None
    directory = await raw.request(f.DirectoryGet(id=rid(), account_ids=[case.counselor_id]))
    assert isinstance(directory, f.DirectoryResult)
    return directory.entries[0]


@contextlib.asynccontextmanager
async def counselor_page_and_client(
    browser: Any, tmp_path: Path, counselor_handle: str
) -> AsyncIterator[tuple[RunningHub, BrowserPage, RawClient, f.CaseInfo]]:
    """(hub, page, raw client, its case): a real hub; a counselor registered (by invite)
    and signed in on the page; a raw-frame client whose case was assigned to them."""
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor()
        bp = await open_page(browser, hub.http_url)
        await register_in_page(bp.page, invite, counselor_handle)
        raw, case = await client_case(hub)
        try:
            yield hub, bp, raw, case
        finally:
            await raw.close()
