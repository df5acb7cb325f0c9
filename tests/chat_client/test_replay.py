"""Replayed ciphertext (issue 13, item 9): the hub refuses a nonce already stored in the
case (``replayed``), and a receiver whose hub stores one anyway names it a replay."""

from __future__ import annotations

import secrets
import sqlite3

import pytest

from protocol import frames as f
from protocol.chain import chain_hash
from protocol.errors import Replayed
from tests.helpers.clients import Pair, take


async def test_hostile_participant_cannot_replay_the_other_sides_ciphertext(
    pair: Pair,
) -> None:
    client, counselor, case = pair.client, pair.counselor, pair.case
    await client.send(case.case_id, "words of the client")
    await take(counselor, 1)
    assert pair.hub.server.db is not None
    [original] = await pair.hub.server.db.messages.range(case.case_id, 0, 10)
    for cmid in (secrets.token_urlsafe(12), original.client_msg_id):
        with pytest.raises(Replayed):
            await counselor._request(
                f.MsgSend,
                case_id=case.case_id,
                epoch=original.epoch,
                client_msg_id=cmid,
                nonce=original.nonce,
                ciphertext=original.ciphertext,
            )
    assert len(await pair.hub.server.db.messages.range(case.case_id, 0, 10)) == 1
    # The session goes on.
    await counselor.send(case.case_id, "answer")
    answer = (await take(client, 2))[-1]
    assert (answer.seq, answer.verified, answer.body) == (2, True, "answer")


async def test_hostile_hub_stores_a_replay_and_the_receiver_names_it(pair: Pair) -> None:
    """The hub's database drops the index and appends the client's own ciphertext again,
    as the counselor's, with a correct chain: the client reports a replay of seq 1."""
    client, counselor, case = pair.client, pair.counselor, pair.case
    await counselor.send(case.case_id, "first words")
    [first] = await take(client, 1)
    assert first.verified
    db_path = pair.hub.tmp_path / "chat.db"
    with sqlite3.connect(db_path) as db:
        db.execute("DROP INDEX ix_messages_case_id_nonce")
        nonce, ciphertext, epoch, head = db.execute(
            "SELECT m.nonce, m.ciphertext, m.epoch, c.chain_head FROM messages m "
            "JOIN cases c ON c.id = m.case_id WHERE m.case_id = ? AND m.seq = 1",
            (case.case_id,),
        ).fetchone()
        cmid = "replayed-copy"
        digest = chain_hash(
            head,
            case_id=case.case_id,
            seq=2,
            epoch=epoch,
            sender_id=counselor.account_id,
            client_msg_id=cmid,
            nonce=nonce,
            ciphertext=ciphertext,
        )
        db.execute(
            "INSERT INTO messages (case_id, seq, epoch, sender_id, client_msg_id, nonce, "
            "ciphertext, chain_hash, server_ts) VALUES (?, 2, ?, ?, ?, ?, ?, ?, 1)",
            (case.case_id, epoch, counselor.account_id, cmid, nonce, ciphertext, digest),
        )
        db.execute(
            "UPDATE cases SET last_seq = 2, chain_head = ? WHERE id = ?", (digest, case.case_id)
        )
    await counselor.send(case.case_id, "after")
    replay, after = await take(client, 2)
    assert (replay.seq, replay.verified, replay.body) == (2, False, None)
    assert replay.error is not None and "replay of seq 1" in replay.error
    assert (after.seq, after.verified, after.body) == (3, True, "after")
    history = await client.history(case.case_id)
    assert [(m.seq, m.verified) for m in history] == [(1, True), (2, False), (3, True)]
    assert history[1].error is not None and "replay of seq 1" in history[1].error
