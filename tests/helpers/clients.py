"""The Python client SDK in tests: accounts on a running hub, its event stream read
under a deadline, and a key store made offline.

``take``/``take_event``/``take_until``/``next_message`` read ``ChatClient.events()``,
which is meant for one consumer: each consumes what it reads, so a test that waits for
one kind of event and later needs the messages read meanwhile keeps them from
:func:`take_until`'s result.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chat_client import ChatClient, Event, Message, MessageEvent
from chat_client.keystore import AccountRecord, KeyStore
from protocol import crypto
from protocol.frames import CaseInfo
from tests.helpers.hubs import TEST_KDF, RunningHub

__all__ = [
    "PASS_CLIENT",
    "PASS_COUNSELOR",
    "Pair",
    "make_store",
    "next_message",
    "register_client",
    "register_counselor",
    "take",
    "take_event",
    "take_until",
]

PASS_CLIENT = "client passphrase"
PASS_COUNSELOR = "counselor passphrase"


@dataclasses.dataclass
class Pair:
    """A client and a counselor, online, sharing one assigned case (the ``pair`` fixture)."""

    hub: RunningHub
    tmp_path: Path
    client: ChatClient
    counselor: ChatClient
    case: CaseInfo


async def register_counselor(hub: RunningHub, home: Path, handle: str = "dr-who") -> ChatClient:
    code = await hub.invite_counselor(handle, ("en",), ("anxiety",))
    return await ChatClient.register(
        hub.url, handle, PASS_COUNSELOR, home=home, invite=code, **TEST_KDF
    )


async def register_client(hub: RunningHub, home: Path, handle: str = "alice") -> ChatClient:
    return await ChatClient.register(hub.url, handle, PASS_CLIENT, home=home, **TEST_KDF)


async def take(client: ChatClient, n: int, *, timeout: float = 10.0) -> list[Message]:
    """The next ``n`` messages from ``client.events()`` (other events are skipped)."""
    got: list[Message] = []

    async def run() -> None:
        async for event in client.events():
            if isinstance(event, MessageEvent):
                got.append(event.message)
                if len(got) >= n:
                    return

    if n <= 0:
        return got
    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"got {len(got)} of {n} messages: {got}") from None
    return got


async def take_until(
    client: ChatClient, stop: Callable[[Event], bool], *, timeout: float = 10.0
) -> list[Event]:
    """Every event from ``client.events()`` up to and including the first for which
    ``stop`` is true; AssertionError with what was seen if none comes in time."""
    seen: list[Event] = []

    async def run() -> None:
        async for event in client.events():
            seen.append(event)
            if stop(event):
                return
        raise AssertionError(f"event stream ended; saw {seen}")

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"no awaited event in {timeout} s; saw {seen}") from None
    return seen


async def take_event(client: ChatClient, kind: type[Any], *, timeout: float = 10.0) -> Event:
    """The next event of type ``kind`` (earlier events of other kinds are consumed)."""
    seen = await take_until(client, lambda event: isinstance(event, kind), timeout=timeout)
    return seen[-1]


async def next_message(client: ChatClient, timeout: float = 10.0) -> Message:
    """The next message from someone else (the SDK also reports the client's own)."""
    seen = await take_until(
        client,
        lambda e: isinstance(e, MessageEvent) and e.message.sender_id != client.account_id,
        timeout=timeout,
    )
    last = seen[-1]
    assert isinstance(last, MessageEvent)
    return last.message


def make_store(home: Path, passphrase: str = "correct horse") -> tuple[KeyStore, crypto.Identity]:
    """A key store for ``alice`` made offline (no hub), holding a session token."""
    ops, mem = TEST_KDF["opslimit"], TEST_KDF["memlimit"]
    salt = crypto.new_salt()
    keys = crypto.derive_login_keys(passphrase, salt, ops, mem)
    identity = crypto.Identity.generate()
    record = AccountRecord(
        server="ws://127.0.0.1:1/ws",
        handle="alice",
        account_id="acc_1",
        role="client",
        salt=salt,
        opslimit=ops,
        memlimit=mem,
        wrapped_keys=crypto.wrap_identity(identity, keys.wrap_key),
        sign_pk=identity.sign_pk,
        box_pk=identity.box_pk,
    )
    store = KeyStore.create(home, record)
    store.store_token("tok-secret-123", 2**45, keys.wrap_key)
    return store, identity
