"""Bad input gets a clear, typed error or close, and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol import crypto
from protocol import frames as f
from protocol.errors import CloseCode
from protocol.limits import MAX_FRAME_BYTES
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import RawClient, pair, rid


async def _message_count(hub: RunningHub, case_id: str) -> int:
    assert hub.server.db is not None
    return len(await hub.server.db.messages.range(case_id, 0, 10_000))


async def _closed_with(peer: RawClient, timeout: float = 5.0) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(peer.ws.recv(), timeout)
    return peer.ws.close_code


async def test_malformed_json_unknown_type_and_invalid_fields(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.send_raw(b'{"type": "ping", "id": "a1"')  # truncated
    err = await peer.recv()
    assert isinstance(err, f.ErrorFrame) and err.code == "malformed" and err.id is None

    await peer.send_raw(b'{"v":2,"type":"msg.teleport","id":"a2"}')
    err = await peer.recv()
    assert isinstance(err, f.ErrorFrame) and (err.code, err.id) == ("unknown_type", "a2")

    await peer.send_raw(b'{"v":2,"type":"ping","id":"a3","extra":true}')
    err = await peer.recv()
    assert isinstance(err, f.ErrorFrame) and (err.code, err.id) == ("invalid", "a3")

    # The connection is still usable after typed errors.
    assert isinstance(await peer.request(f.Ping(id=rid())), f.Pong)

    # Another protocol version is answered, then the connection closes (1008).
    await peer.send_raw(b'{"v":9,"type":"ping","id":"a4"}')
    err = await peer.recv()
    assert isinstance(err, f.ErrorFrame) and (err.code, err.id) == ("unsupported_version", "a4")
    assert await _closed_with(peer) == CloseCode.POLICY


async def test_repeated_garbage_closes_1007(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    for _ in range(3):
        await peer.send_raw(b"not json at all")
    assert await _closed_with(peer) == CloseCode.INVALID_DATA


async def test_oversize_frame_closes_1009(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.send_raw(b'{"v":1,"type":"ping","id":"x","pad":"' + b"a" * MAX_FRAME_BYTES + b'"}')
    assert await _closed_with(peer) == CloseCode.TOO_BIG


async def test_frame_before_auth_is_refused(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    err = await peer.request(f.CaseList(id=rid()))
    assert isinstance(err, f.ErrorFrame) and err.code == "not_authenticated"
    err = await peer.request(f.Sync(id=rid(), case_id="case_x"))
    assert isinstance(err, f.ErrorFrame) and err.code == "not_authenticated"


async def test_wrong_challenge_signature_and_bad_token(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.register("sigtester")
    challenge = await peer.request(f.Hello(id=rid()))
    assert isinstance(challenge, f.Challenge)
    impostor = crypto.Identity.generate()
    bad = crypto.sign_challenge(impostor, challenge.nonce, peer.account_id)
    err = await peer.request(
        f.AuthRequest(id=rid(), account_id=peer.account_id, token=peer.token, sig=bad)
    )
    assert isinstance(err, f.ErrorFrame) and err.code == "auth_failed"
    # Still unauthenticated.
    err = await peer.request(f.CaseList(id=rid()))
    assert isinstance(err, f.ErrorFrame) and err.code == "not_authenticated"
    # A signature over another challenge (replay) fails too, and so does a wrong token.
    assert peer.identity is not None
    replayed = crypto.sign_challenge(peer.identity, bytes(32), peer.account_id)
    err = await peer.request(
        f.AuthRequest(id=rid(), account_id=peer.account_id, token=peer.token, sig=replayed)
    )
    assert isinstance(err, f.ErrorFrame) and err.code == "auth_failed"
    good = crypto.sign_challenge(peer.identity, challenge.nonce, peer.account_id)
    err = await peer.request(
        f.AuthRequest(id=rid(), account_id=peer.account_id, token="nope", sig=good)
    )
    assert isinstance(err, f.ErrorFrame) and err.code == "auth_failed"


async def test_wrong_passphrase_and_unknown_handle_look_alike(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.register("realhandle", passphrase="correct horse")
    pre_real = await peer.request(f.Prelogin(id=rid(), handle="realhandle"))
    pre_fake = await peer.request(f.Prelogin(id=rid(), handle="nosuchhandle"))
    pre_fake2 = await peer.request(f.Prelogin(id=rid(), handle="nosuchhandle"))
    assert isinstance(pre_fake, f.PreloginResult) and isinstance(pre_fake2, f.PreloginResult)
    assert pre_fake.salt == pre_fake2.salt  # stable, so it does not reveal non-existence
    assert isinstance(pre_real, f.PreloginResult)
    with pytest.raises(AssertionError):
        await peer.login("wrong horse")
    err = await peer.request(f.Login(id=rid(), handle="nosuchhandle", auth_key=bytes(32)))
    assert isinstance(err, f.ErrorFrame) and err.code == "auth_failed"


async def test_frames_for_a_foreign_case_are_forbidden_and_change_nothing(hub: RunningHub) -> None:
    client, _counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    await client.request(client.encrypt(key, case.case_id, "private"))
    outsider = await RawClient.connect(hub.url)
    await outsider.register("outsider")
    await outsider.authenticate()
    before = await _message_count(hub, case.case_id)
    for frame in (
        outsider.encrypt(key, case.case_id, "intrusion"),
        f.Sync(id=rid(), case_id=case.case_id),
        f.CaseKeys(id=rid(), case_id=case.case_id),
        f.CaseKeyShare(
            id=rid(),
            case_id=case.case_id,
            epoch=1,
            seal=f.KeySeal(account_id=outsider.account_id, sealed=bytes(80)),
        ),
        f.Receipt(
            id=rid(),
            case_id=case.case_id,
            kind="read",
            up_to_seq=1,
            chain_hash=bytes(32),
            sig=bytes(64),
        ),
        f.Typing(id=rid(), case_id=case.case_id, active=True),
        f.CaseClose(id=rid(), case_id=case.case_id),
        f.DirectoryGet(id=rid(), account_ids=[client.account_id]),
        f.Sync(id=rid(), case_id="case_doesnotexist"),
    ):
        err = await outsider.request(frame)
        assert isinstance(err, f.ErrorFrame) and err.code == "forbidden", (frame, err)
    assert await _message_count(hub, case.case_id) == before
    listed = await client.request(f.CaseList(id=rid()))
    assert isinstance(listed, f.CaseListResult) and listed.cases[0].state == "assigned"


async def test_replayed_client_msg_id_is_stored_once(hub: RunningHub) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    send = client.encrypt(key, case.case_id, "only once", cmid="fixed-id-123")
    first = await client.request(send)
    assert isinstance(first, f.MsgAck) and not first.duplicate
    await counselor.event(f.MsgNew)

    # The identical frame again (a retry after a lost ack): the original seq, marked duplicate.
    retry = await client.request(f.MsgSend(**{**_fields(send), "id": rid()}))
    assert isinstance(retry, f.MsgAck)
    assert (retry.seq, retry.chain_hash, retry.duplicate) == (first.seq, first.chain_hash, True)

    # Same id, different content: a replay, refused.
    forged = client.encrypt(key, case.case_id, "different", cmid="fixed-id-123")
    err = await client.request(forged)
    assert isinstance(err, f.ErrorFrame) and err.code == "duplicate"
    assert await _message_count(hub, case.case_id) == 1
    # The counselor got it exactly once.
    with pytest.raises(TimeoutError):
        await counselor.event(f.MsgNew, timeout=0.3)


def _fields(frame: f.MsgSend) -> dict[str, object]:
    return {k: getattr(frame, k) for k in frame.__struct_fields__}


async def test_send_for_unknown_epoch_is_invalid(hub: RunningHub) -> None:
    client, _, case, key = await pair(hub.url, await hub.invite_counselor())
    err = await client.request(client.encrypt(key, case.case_id, "x", epoch=2))
    assert isinstance(err, f.ErrorFrame) and err.code == "invalid"
    assert await _message_count(hub, case.case_id) == 0


async def test_counselor_cannot_open_cases(hub: RunningHub) -> None:
    counselor = await RawClient.connect(hub.url)
    await counselor.register("onlycounsels", invite=await hub.invite_counselor())
    await counselor.authenticate()
    err = await counselor.request(f.CaseOpen(id=rid(), topic="anxiety", language="en"))
    assert isinstance(err, f.ErrorFrame) and err.code == "forbidden"


async def test_invite_is_single_use(hub: RunningHub) -> None:
    code = await hub.invite_counselor()
    first = await RawClient.connect(hub.url)
    await first.register("firstcounselor", invite=code)
    second = await RawClient.connect(hub.url)
    with pytest.raises(AssertionError, match="auth_failed"):
        await second.register("secondcounselor", invite=code)
    with pytest.raises(AssertionError, match="conflict"):
        await second.register("firstcounselor")


async def test_weak_kdf_parameters_are_refused(tmp_path: Path) -> None:
    async with start_hub(tmp_path, kdf_opslimit=2) as hub:
        peer = await RawClient.connect(hub.url)
        with pytest.raises(AssertionError, match="invalid"):
            await peer.register("weakkdf")


async def test_auth_timeout_closes_4001(tmp_path: Path) -> None:
    async with start_hub(tmp_path, auth_timeout_s=0.3) as hub:
        peer = await RawClient.connect(hub.url)
        assert await _closed_with(peer) == CloseCode.AUTH_TIMEOUT


async def test_rate_limit_gives_typed_errors(tmp_path: Path) -> None:
    async with start_hub(tmp_path, rate_per_s=0.01, rate_burst=3) as hub:
        peer = await RawClient.connect(hub.url)
        replies = [await peer.request(f.Ping(id=rid())) for _ in range(5)]
        assert [type(r).__name__ for r in replies[:3]] == ["Pong"] * 3
        assert all(isinstance(r, f.ErrorFrame) and r.code == "rate_limited" for r in replies[3:])


async def test_sessions_per_account_limit_evicts_oldest(tmp_path: Path) -> None:
    async with start_hub(tmp_path, max_sessions_per_account=2) as hub:
        first = await RawClient.connect(hub.url)
        await first.register("manydevices")
        await first.authenticate()
        await first.session_of_same_account(hub.url)
        await first.session_of_same_account(hub.url)
        assert await _closed_with(first) == CloseCode.REPLACED


async def test_slow_consumer_is_disconnected_and_loses_nothing(tmp_path: Path) -> None:
    async with start_hub(
        tmp_path, send_queue_frames=4, rate_per_s=10_000, rate_burst=10_000
    ) as hub:
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        # The counselor stops reading; the client keeps sending 8 KB messages. The hub must
        # cut the counselor off instead of buffering for it without bound.
        body = "x" * 7900
        sent = 0
        for _ in range(3000):
            ack = await client.request(client.encrypt(key, case.case_id, body), timeout=10)
            assert isinstance(ack, f.MsgAck)
            sent += 1
            if "session.slow_consumer" in hub.log_file.read_text():
                break
        else:
            pytest.fail("the hub kept buffering for a reader that does not read")
        # The close frame queues behind the backed-up data, so the reader sees 4008 or,
        # once the hub gives up on the clogged socket, an abnormal close: both resumable.
        assert await _closed_with(counselor, timeout=20) in (CloseCode.SLOW_CONSUMER, 1006)
        back = await counselor.session_of_same_account(hub.url)
        seqs: list[int] = []
        while True:
            synced = await back.request(
                f.Sync(id=rid(), case_id=case.case_id, after_seq=seqs[-1] if seqs else 0)
            )
            assert isinstance(synced, f.SyncResult)
            seqs += [m.seq for m in synced.messages]
            if not synced.has_more:
                break
        assert seqs == list(range(1, sent + 1))


async def test_foreign_origin_is_refused(hub: RunningHub) -> None:
    with pytest.raises(InvalidStatus) as info:
        await RawClient.connect(hub.url, origin="http://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    ok = await RawClient.connect(hub.url, origin=hub.http_url.rstrip("/"))  # type: ignore[arg-type]
    assert isinstance(await ok.request(f.Ping(id=rid())), f.Pong)


async def test_graceful_shutdown_closes_1001(tmp_path: Path) -> None:
    async with start_hub(tmp_path) as hub:
        client, *_ = await pair(hub.url, await hub.invite_counselor())
        await hub.stop()
        assert await _closed_with(client) == CloseCode.GOING_AWAY


async def test_unexpected_failure_closes_1011_without_details(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat_server import router

    async def broken(*_: object) -> None:
        raise RuntimeError("SECRET-DETAIL-in-exception")

    monkeypatch.setitem(router.GUEST_ROUTES, f.Ping, broken)
    peer = await RawClient.connect(hub.url)
    await peer.send(f.Ping(id=rid()))
    assert await _closed_with(peer) == CloseCode.INTERNAL
    assert peer.ws.close_reason == "internal error"
    log = hub.log_file.read_text()
    assert "session.internal_error" in log and "RuntimeError" in log
    assert "SECRET-DETAIL" not in log
