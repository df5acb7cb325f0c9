"""The SDK against the real hub: conversation, keys, tampering, login, sessions."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from chat_client import (
    CaseAssignedEvent,
    CaseClosedEvent,
    CaseNotReady,
    ChatClient,
    ClientClosed,
    KdfTooWeak,
    KeyPendingEvent,
    ReceiptEvent,
    SessionEnded,
    TypingEvent,
)
from chat_client.keystore import KeyStore
from chat_client.models import WAITING_FOR_KEY
from protocol import crypto
from protocol import frames as f
from protocol.errors import AuthFailed, Conflict, CryptoError, Forbidden
from tests.helpers.clients import (
    PASS_CLIENT,
    Pair,
    next_message,
    register_client,
    register_counselor,
    take,
    take_event,
)
from tests.helpers.hubs import TEST_KDF, start_hub


async def test_conversation_both_ways_live(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    sent = await client.send(case.case_id, "hello, I need to talk")
    assert (sent.seq, sent.duplicate) == (1, False)
    [got] = await take(counselor, 1)
    assert (got.seq, got.body, got.verified, got.error) == (1, "hello, I need to talk", True, None)
    assert got.sender_id == client.account_id and got.client_msg_id == sent.client_msg_id

    reply = await counselor.send(case.case_id, "I'm here. What's on your mind?")
    assert reply.seq == 2
    # The client's stream holds its own message (from the ack) and the reply, in order.
    mine, theirs = await take(client, 2)
    assert (mine.seq, mine.body, mine.verified) == (1, "hello, I need to talk", True)
    assert (theirs.seq, theirs.body, theirs.verified) == (2, "I'm here. What's on your mind?", True)

    for side in (client, counselor):
        history = await side.history(case.case_id)
        assert [(m.seq, m.body, m.verified) for m in history] == [
            (1, "hello, I need to talk", True),
            (2, "I'm here. What's on your mind?", True),
        ]
    entries = await client.directory([counselor.account_id])
    assert entries[0].handle == counselor.handle and entries[0].role == "counselor"


async def test_receipts_typing_and_close(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "one")
    await take(counselor, 1)
    await counselor.typing(case.case_id, True)
    typing = await take_event(client, TypingEvent)
    assert isinstance(typing, TypingEvent) and typing.active
    assert typing.account_id == counselor.account_id
    await counselor.receipt(case.case_id, "read", 1)
    # The counselor's SDK already said "delivered" when it took the message; then "read".
    receipt = await take_event(client, ReceiptEvent)
    while isinstance(receipt, ReceiptEvent) and receipt.kind == "delivered":
        receipt = await take_event(client, ReceiptEvent)
    assert isinstance(receipt, ReceiptEvent) and (receipt.kind, receipt.up_to_seq) == ("read", 1)

    await counselor.close_case(case.case_id)
    closed = await take_event(client, CaseClosedEvent)
    assert isinstance(closed, CaseClosedEvent) and closed.case_id == case.case_id
    with pytest.raises(Forbidden):
        await client.send(case.case_id, "too late")
    # History stays readable after close.
    assert [m.body for m in await client.history(case.case_id)] == ["one"]
    [listed] = [c for c in await client.cases() if c.case_id == case.case_id]
    assert listed.state == "closed"


async def test_counselor_can_write_first_key_made_on_assignment(pair: Pair) -> None:
    # The client made epoch 1 on assignment; the counselor fetches and verifies it.
    sent = await pair.counselor.send(pair.case.case_id, "welcome, I'm your counselor")
    [got] = await take(pair.client, 1)
    assert (got.seq, got.epoch, got.verified) == (sent.seq, 1, True)


async def test_waiting_case_then_assignment(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: the client writes at once while its case waits; a counselor who
    registers later is assigned, gets the key the client shares on assignment, and
    reads all three messages verified and in order, then answers."""
    client = await register_client(hub, tmp_path / "client")
    counselor: ChatClient | None = None
    try:
        case = await client.open_case("anxiety", "en")
        assert case.state == "waiting"
        sent = [await client.send(case.case_id, f"waiting {i}") for i in (1, 2, 3)]
        assert [s.seq for s in sent] == [1, 2, 3]
        counselor = await register_counselor(hub, tmp_path / "counselor")
        assigned = await take_event(client, CaseAssignedEvent)
        assert isinstance(assigned, CaseAssignedEvent)
        assert assigned.case.counselor_id == counselor.account_id
        got = await take(counselor, 3)
        assert [(m.seq, m.body, m.verified) for m in got] == [
            (1, "waiting 1", True),
            (2, "waiting 2", True),
            (3, "waiting 3", True),
        ]
        await counselor.send(case.case_id, "hi, sorry for the wait")
        reply = await next_message(client)
        assert (reply.seq, reply.body, reply.verified) == (4, "hi, sorry for the wait", True)
        history = await counselor.history(case.case_id)
        assert [m.body for m in history] == [
            "waiting 1",
            "waiting 2",
            "waiting 3",
            "hi, sorry for the wait",
        ]
    finally:
        await client.close()
        if counselor is not None:
            await counselor.close()


async def test_counselor_waits_for_the_key_of_an_offline_client(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The client writes while waiting and goes offline; the counselor assigned
    meanwhile is told it waits for the client's key (no text, no failure), and gets the
    messages, in order and verified, once the client's next connection shares it."""
    client = await register_client(hub, tmp_path / "client")
    case = await client.open_case("anxiety", "en")
    await client.send(case.case_id, "are you there?")
    await client.send(case.case_id, "I will come back later")
    await client.close()
    counselor = await register_counselor(hub, tmp_path / "counselor")
    client2: ChatClient | None = None
    try:
        pending = await take_event(counselor, KeyPendingEvent)
        assert pending == KeyPendingEvent(case.case_id, 1, 1)
        with pytest.raises(CaseNotReady, match="waiting for the client's key"):
            await counselor.send(case.case_id, "hello?")
        held = await counselor.history(case.case_id)
        assert [(m.seq, m.body, m.verified, m.error) for m in held] == [
            (1, None, False, WAITING_FOR_KEY),
            (2, None, False, WAITING_FOR_KEY),
        ]
        client2 = await ChatClient.open(hub.url, tmp_path / "client", PASS_CLIENT)
        got = await take(counselor, 2)
        assert [(m.seq, m.body, m.verified) for m in got] == [
            (1, "are you there?", True),
            (2, "I will come back later", True),
        ]
        await counselor.send(case.case_id, "I am here now")
        assert (await next_message(client2)).body == "I am here now"
    finally:
        await counselor.close()
        if client2 is not None:
            await client2.close()


async def test_concurrent_first_key_conflict_resolves_to_one_key(pair: Pair) -> None:
    """Both sides race to create an epoch (simulated by a fresh case); each loser
    fetches the winner's key, and both can read each other."""
    case2 = await pair.client.open_case("anxiety", "en")
    a, b = await asyncio.gather(
        pair.client.send(case2.case_id, "from client"),
        pair.counselor.send(case2.case_id, "from counselor"),
    )
    assert {a.seq, b.seq} == {1, 2}
    for side in (pair.client, pair.counselor):
        history = await side.history(case2.case_id)
        assert all(m.verified for m in history) and len(history) == 2


async def test_tampered_messages_are_flagged_never_shown(pair: Pair) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "genuine")
    await take(counselor, 1)
    await take(client, 1)
    # The counselor's key for epoch 1, and a forged message signed by someone else.
    key = counselor._keys.keyring.get(case.case_id, 1)
    assert key is not None
    impostor = crypto.Identity.generate()
    cmid = secrets.token_urlsafe(12)
    nonce, ciphertext = crypto.encrypt_message(
        key,
        impostor,
        case_id=case.case_id,
        epoch=1,
        sender_id=counselor.account_id,
        envelope=crypto.Envelope(
            body="forged words", ts=1, client_msg_id=cmid, prev_seq=0, prev_hash=bytes(32), n=1
        ),
    )
    await counselor._request(
        f.MsgSend,
        case_id=case.case_id,
        epoch=1,
        client_msg_id=cmid,
        nonce=nonce,
        ciphertext=ciphertext,
    )
    # Garbage that does not even decrypt.
    await counselor._request(
        f.MsgSend,
        case_id=case.case_id,
        epoch=1,
        client_msg_id=secrets.token_urlsafe(12),
        nonce=bytes(24),
        ciphertext=secrets.token_bytes(120),
    )
    await counselor.send(case.case_id, "genuine again")
    forged, garbage, genuine = await take(client, 3)
    assert (forged.verified, forged.body) == (False, None)
    assert forged.error and "signature" in forged.error
    assert (garbage.verified, garbage.body) == (False, None)
    assert garbage.error and "decrypt" in garbage.error
    assert (genuine.verified, genuine.body) == (True, "genuine again")
    marks = [(m.seq, m.verified) for m in await client.history(case.case_id)]
    assert marks == [(1, True), (2, False), (3, False), (4, True)]


async def test_login_new_device_open_and_token_renewal(pair: Pair) -> None:
    client, hub, tmp = pair.client, pair.hub, pair.tmp_path
    await client.send(pair.case.case_id, "before the new device")
    other = await ChatClient.login(hub.url, client.handle, PASS_CLIENT, home=tmp / "laptop")
    try:
        assert other.account_id == client.account_id and other.fingerprint == client.fingerprint
        [mine] = [m for m in await other.history(pair.case.case_id)]
        assert (mine.body, mine.verified) == ("before the new device", True)
        # The other device sees live messages from this account's first device too.
        await client.send(pair.case.case_id, "from device one")
        got = await take(other, 2)
        assert [m.body for m in got] == ["before the new device", "from device one"]
    finally:
        await other.close()

    with pytest.raises(AuthFailed):
        await ChatClient.login(hub.url, client.handle, "wrong", home=tmp / "nowhere")
    with pytest.raises(CryptoError, match="wrong passphrase"):
        await ChatClient.open(None, tmp / "laptop", "wrong")

    # A rejected token is renewed with the kept auth_key, without asking again.
    store = KeyStore.load(tmp / "laptop")
    keys = store.derive(PASS_CLIENT)
    store.store_token("not-a-valid-token", 2**45, keys.wrap_key)
    reopened = await ChatClient.open(None, tmp / "laptop", PASS_CLIENT)
    try:
        assert [c.case_id for c in await reopened.cases()] == [pair.case.case_id]
        renewed = KeyStore.load(tmp / "laptop").read_token(keys.wrap_key)
        assert renewed is not None and renewed.token != "not-a-valid-token"
    finally:
        await reopened.close()


async def test_open_resumes_after_last_consumed_message(pair: Pair) -> None:
    client, counselor, case, tmp = pair.client, pair.counselor, pair.case, pair.tmp_path
    await counselor.send(case.case_id, "m1")
    assert [m.body for m in await take(client, 1)] == ["m1"]
    await client.close()
    await counselor.send(case.case_id, "m2")  # while the client is offline
    await counselor.send(case.case_id, "m3")
    pair.client = await ChatClient.open(None, tmp / "client", PASS_CLIENT)
    assert [m.body for m in await take(pair.client, 2)] == ["m2", "m3"]


async def test_register_errors(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = await register_client(hub, tmp_path / "a", "bob")
    await first.close()
    with pytest.raises(Conflict):
        await register_client(hub, tmp_path / "b", "bob")
    with pytest.raises(AuthFailed):
        await ChatClient.register(
            hub.url,
            "carol",
            "carol passphrase",
            home=tmp_path / "c",
            invite="inv-not-a-real-code",
            **TEST_KDF,
        )


async def test_kdf_below_server_minimum(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub", kdf_opslimit=2) as hub:
        with pytest.raises(KdfTooWeak, match="below the server's"):
            await ChatClient.register(
                hub.url, "dave", "dave passphrase", home=tmp_path / "d", **TEST_KDF
            )
        assert not (tmp_path / "d" / "account.json").exists()


async def test_session_eviction_is_not_resumed(pair: Pair) -> None:
    """The 9th session of an account evicts the oldest with 4009: that client stops
    with SessionEnded instead of reconnecting (which would evict the next one)."""
    victim = pair.client
    extra = [await ChatClient.open(None, pair.tmp_path / "client", PASS_CLIENT) for _ in range(8)]
    try:
        with pytest.raises(SessionEnded) as info:
            await asyncio.wait_for(take(victim, 1), 10)
        assert info.value.code == 4009
        with pytest.raises(SessionEnded):
            await victim.send(pair.case.case_id, "still there?")
    finally:
        for c in extra:
            await c.close()


async def test_logout_revokes_token_and_open_logs_in_again(pair: Pair) -> None:
    client, tmp = pair.client, pair.tmp_path
    store = KeyStore.load(tmp / "client")
    keys = store.derive(PASS_CLIENT)
    old = store.read_token(keys.wrap_key)
    assert old is not None
    await client.logout()
    with pytest.raises(ClientClosed):
        await client.cases()
    assert KeyStore.load(tmp / "client").read_token(keys.wrap_key) is None
    pair.client = await ChatClient.open(None, tmp / "client", PASS_CLIENT)
    new = KeyStore.load(tmp / "client").read_token(keys.wrap_key)
    assert new is not None and new.token != old.token
    assert [c.case_id for c in await pair.client.cases()] == [pair.case.case_id]
