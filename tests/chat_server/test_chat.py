"""Client and counselor chat through the real hub; fan-out to every live session."""

from __future__ import annotations

import asyncio
import urllib.request

from protocol import crypto, opening
from protocol import frames as f
from protocol.chain import verify_chain
from tests.helpers.hubs import RunningHub
from tests.helpers.rawclient import RawClient, pair, rid


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


async def test_healthz(hub: RunningHub) -> None:
    assert await asyncio.to_thread(_get, hub.http_url + "healthz") == (
        200,
        b"ok\ndb ok\nredis off\n",
    )


async def test_chat_both_ways_and_second_session_sees_everything(hub: RunningHub) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    second = await client.session_of_same_account(hub.url)

    send = client.encrypt(key, case.case_id, "hello from the client")
    ack = await client.request(send)
    assert isinstance(ack, f.MsgAck) and ack.seq == 1 and not ack.duplicate

    for peer in (counselor, second):
        new = await peer.event(f.MsgNew)
        m = new.message
        assert (m.seq, m.sender_id, m.chain_hash) == (1, client.account_id, ack.chain_hash)
        assert client.identity is not None
        env = opening.decrypt_message(
            key,
            client.identity.sign_pk,
            case_id=m.case_id,
            epoch=m.epoch,
            sender_id=m.sender_id,
            client_msg_id=m.client_msg_id,
            nonce=m.nonce,
            ciphertext=m.ciphertext,
        )
        assert env.body == "hello from the client"

    reply = counselor.encrypt(key, case.case_id, "hello from the counselor")
    ack2 = await counselor.request(reply)
    assert isinstance(ack2, f.MsgAck) and ack2.seq == 2
    for peer in (client, second):
        new = await peer.event(f.MsgNew)
        assert new.message.seq == 2 and new.message.sender_id == counselor.account_id

    synced = await second.request(f.Sync(id=rid(), case_id=case.case_id, after_seq=0))
    assert isinstance(synced, f.SyncResult)
    assert [m.seq for m in synced.messages] == [1, 2] and synced.last_seq == 2
    assert verify_chain(synced.messages) == []


async def test_case_keys_receipts_typing_close(hub: RunningHub) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    keys = await counselor.request(f.CaseKeys(id=rid(), case_id=case.case_id))
    assert isinstance(keys, f.CaseKeysResult) and len(keys.keys) == 1
    epoch_key = keys.keys[0]
    assert client.identity is not None and counselor.identity is not None
    crypto.verify_commitment(
        client.identity.sign_pk,
        case.case_id,
        1,
        epoch_key.commitment,
        epoch_key.commitment_sig,
        escrow=epoch_key.escrow,
    )
    assert (
        opening.open_case_key(
            epoch_key.sealed, counselor.identity, case.case_id, 1, epoch_key.commitment
        )
        == key
    )

    # The directory gives a case peer's public keys, and nobody else's.
    entries = await counselor.request(f.DirectoryGet(id=rid(), account_ids=[client.account_id]))
    assert isinstance(entries, f.DirectoryResult)
    assert entries.entries[0].sign_pk == client.identity.sign_pk

    await client.request(client.encrypt(key, case.case_id, "one"))
    new = await counselor.event(f.MsgNew)
    assert isinstance(await counselor.request(counselor.receipt(case.case_id, new.message)), f.Ok)
    receipt = await client.event(f.ReceiptNew)
    assert (receipt.kind, receipt.up_to_seq, receipt.account_id) == (
        "read",
        1,
        counselor.account_id,
    )

    assert isinstance(
        await client.request(f.Typing(id=rid(), case_id=case.case_id, active=True)), f.Ok
    )
    typing = await counselor.event(f.TypingNew)
    assert typing.active and typing.account_id == client.account_id

    assert isinstance(await counselor.request(f.CaseClose(id=rid(), case_id=case.case_id)), f.Ok)
    await client.event(f.CaseClosed)
    refused = await client.request(client.encrypt(key, case.case_id, "after close"))
    assert isinstance(refused, f.ErrorFrame) and refused.code == "forbidden"
    listed = await client.request(f.CaseList(id=rid()))
    assert isinstance(listed, f.CaseListResult) and listed.cases[0].state == "closed"


async def test_second_key_deposit_for_an_epoch_conflicts(hub: RunningHub) -> None:
    client, counselor, case, _ = await pair(hub.url, await hub.invite_counselor())
    assert client.identity is not None
    again = crypto.new_case_key()
    commitment = crypto.key_commitment(again, case.case_id, 1)
    reply = await counselor.request(
        f.CaseKeyDeposit(
            id=rid(),
            case_id=case.case_id,
            epoch=1,
            commitment=commitment,
            commitment_sig=crypto.sign_commitment(
                counselor.identity,  # type: ignore[arg-type]
                case.case_id,
                1,
                commitment,
                escrow=crypto.NO_ESCROW,
            ),
            escrow=crypto.NO_ESCROW,
            seals=[
                f.KeySeal(account_id=a, sealed=crypto.seal_case_key(again, client.identity.box_pk))
                for a in (client.account_id, counselor.account_id)
            ],
        )
    )
    assert isinstance(reply, f.ErrorFrame) and reply.code == "conflict"


async def test_waiting_case_is_assigned_when_a_counselor_connects(hub: RunningHub) -> None:
    client = await RawClient.connect(hub.url)
    await client.register("waitingclient")
    await client.authenticate()
    opened = await client.request(f.CaseOpen(id=rid(), topic="grief", language="ur"))
    assert isinstance(opened, f.CaseOpened) and opened.case.state == "waiting"

    english_only = await RawClient.connect(hub.url)
    await english_only.register("englishonly", invite=await hub.invite_counselor(languages=("en",)))
    await english_only.authenticate()
    listed = await client.request(f.CaseList(id=rid()))
    assert isinstance(listed, f.CaseListResult) and listed.cases[0].state == "waiting"

    urdu = await RawClient.connect(hub.url)
    await urdu.register("urduspeaker", invite=await hub.invite_counselor(languages=("en", "ur")))
    await urdu.authenticate()
    assigned = await client.event(f.CaseAssigned)
    assert assigned.case.counselor_id == urdu.account_id
    assert (await urdu.event(f.CaseAssigned)).case.case_id == opened.case.case_id


async def test_matching_prefers_specialty_then_fewest_open_cases(hub: RunningHub) -> None:
    a = await RawClient.connect(hub.url)
    await a.register("generalist", invite=await hub.invite_counselor(specialties=("sleep",)))
    await a.authenticate()
    b = await RawClient.connect(hub.url)
    await b.register("griefexpert", invite=await hub.invite_counselor(specialties=("grief",)))
    await b.authenticate()
    owners = []
    for i in range(3):
        c = await RawClient.connect(hub.url)
        await c.register(f"matchclient{i}")
        await c.authenticate()
        topic = "grief" if i == 0 else "stress"
        opened = await c.request(f.CaseOpen(id=rid(), topic=topic, language="en"))
        assert isinstance(opened, f.CaseOpened)
        owners.append(opened.case.counselor_id)
    # grief goes to the specialist; then the one with fewer open cases; then, tied at one
    # case each, the lowest account id (deterministic).
    assert owners[0] == b.account_id
    assert owners[1] == a.account_id
    assert owners[2] == min(a.account_id, b.account_id)
