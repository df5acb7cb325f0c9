"""Protocol version 2 at the hub, against a hostile operator or a careless peer.

Each test runs the real hub on 127.0.0.1 with its real SQLite file; where the operator
turns hostile, the test writes that file directly (what a database writer can do) and
checks what the hub refuses and what the participants can detect with protocol/.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import nacl.pwhash
import pytest
from websockets.exceptions import ConnectionClosed

from chat_server import cli as server_cli
from protocol import crypto, escrow
from protocol import frames as f
from protocol.ceremony import CounselorCerts, decode_pending, encode_document
from protocol.chain import chain_hash
from protocol.errors import CloseCode, CryptoError
from protocol.limits import MAX_PREFS_BYTES
from protocol.transcript import check_receipts
from tests.helpers.escrow_factory import ORG, make_policy, officers
from tests.helpers.hubs import RunningHub
from tests.helpers.rawclient import RawClient, pair, rid


def db_file(hub: RunningHub) -> Path:
    return hub.tmp_path / "chat.db"


def write_db(hub: RunningHub, sql: str, params: tuple[object, ...] = ()) -> None:
    """What a hostile operator with write access to the database does."""
    conn = sqlite3.connect(db_file(hub))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


async def fresh_login(hub: RunningHub, peer: RawClient) -> f.LoginResult:
    """Log in as ``peer`` again on a new connection; the hub's answer."""
    other = await RawClient.connect(hub.url)
    other.handle = peer.handle
    await other.login()
    assert other.login_result is not None
    await other.close()
    return other.login_result


async def server_cli_run(hub: RunningHub, *argv: str) -> int:
    common = ["--db", hub.config.db_url, "--state-dir", str(hub.config.state_dir)]
    return await asyncio.to_thread(server_cli.main, [*argv, *common])


# -- registration: the box key must be signed ------------------------------------------


async def test_hostile_register_with_a_box_key_not_signed_is_refused_before_argon2(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[bytes] = []
    real_str = nacl.pwhash.argon2id.str

    def counting_str(password: bytes, **kw: int) -> bytes:
        hashed.append(password)
        return real_str(password, **kw)

    monkeypatch.setattr(nacl.pwhash.argon2id, "str", counting_str)
    peer = await RawClient.connect(hub.url)
    me, mallory = crypto.Identity.generate(), crypto.Identity.generate()
    keys = crypto.derive_login_keys("pw", bytes(16), 1, 8192)

    def register(handle: str, box_pk: bytes, box_sig: bytes) -> f.Register:
        return f.Register(
            id=rid(),
            handle=handle,
            salt=bytes(16),
            opslimit=1,
            memlimit=8192,
            auth_key=keys.auth_key,
            sign_pk=me.sign_pk,
            box_pk=box_pk,
            box_sig=box_sig,
            wrapped_keys=crypto.wrap_identity(me, keys.wrap_key),
        )

    for box_pk, box_sig in [
        (mallory.box_pk, crypto.sign_box_key(me)),  # a box key swapped in transit
        (me.box_pk, crypto.sign_box_key(mallory)),  # signed by another identity
        (me.box_pk, bytes(64)),
    ]:
        err = await peer.request(register("victim", box_pk, box_sig))
        assert isinstance(err, f.ErrorFrame) and err.code == "invalid", err
        assert "box_sig does not verify" in err.message
    assert hashed == []  # refused before any Argon2id work
    assert hub.server.db is not None
    assert await hub.server.db.accounts.by_handle("victim") is None
    ok = await peer.request(register("victim", me.box_pk, crypto.sign_box_key(me)))
    assert isinstance(ok, f.Registered) and len(hashed) == 1


async def test_directory_and_login_carry_the_box_sig(hub: RunningHub) -> None:
    client, counselor, _case, _key = await pair(hub.url, await hub.invite_counselor())
    assert client.login_result is not None and client.identity is not None
    assert client.login_result.box_sig == crypto.sign_box_key(client.identity)
    assert client.login_result.cert is None
    got = await counselor.request(f.DirectoryGet(id=rid(), account_ids=[client.account_id]))
    assert isinstance(got, f.DirectoryResult)
    [entry] = got.entries
    assert entry.box_sig is not None and entry.cert is None
    crypto.verify_box_key(entry.sign_pk, entry.box_pk, entry.box_sig)


async def test_hostile_box_key_swapped_in_the_database_is_detected_by_its_peer(
    hub: RunningHub,
) -> None:
    client, counselor, _case, _key = await pair(hub.url, await hub.invite_counselor())
    mallory = crypto.Identity.generate()
    write_db(
        hub, "UPDATE accounts SET box_pk = ? WHERE id = ?", (mallory.box_pk, client.account_id)
    )
    got = await counselor.request(f.DirectoryGet(id=rid(), account_ids=[client.account_id]))
    assert isinstance(got, f.DirectoryResult)
    [entry] = got.entries
    assert entry.box_pk == mallory.box_pk and entry.box_sig is not None
    with pytest.raises(CryptoError):  # what every v2 client checks before sealing
        crypto.verify_box_key(entry.sign_pk, entry.box_pk, entry.box_sig)


# -- upgrading a version-1 account ----------------------------------------------------


async def test_a_version_1_account_attests_its_box_key(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.register("oldtimer")
    write_db(hub, "UPDATE accounts SET box_sig = NULL WHERE id = ?", (peer.account_id,))
    await peer.login()
    assert peer.login_result is not None and peer.login_result.box_sig is None
    await peer.authenticate()
    assert peer.identity is not None
    other = crypto.Identity.generate()
    for bad in (crypto.sign_box_key(other), bytes(64)):
        err = await peer.request(f.AccountAttest(id=rid(), box_sig=bad))
        assert isinstance(err, f.ErrorFrame) and err.code == "invalid", err
    assert (await fresh_login(hub, peer)).box_sig is None
    good = crypto.sign_box_key(peer.identity)
    assert isinstance(await peer.request(f.AccountAttest(id=rid(), box_sig=good)), f.Ok)
    assert (await fresh_login(hub, peer)).box_sig == good


async def test_attest_needs_authentication(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    err = await peer.request(f.AccountAttest(id=rid(), box_sig=bytes(64)))
    assert isinstance(err, f.ErrorFrame) and err.code == "not_authenticated"


# -- version 1 is refused --------------------------------------------------------------


async def test_hostile_version_1_hello_is_refused_and_closed(hub: RunningHub) -> None:
    peer = await RawClient.connect(hub.url)
    await peer.send_raw(b'{"type":"hello","id":"h1","client":"chat-client/1","v":1}')
    err = await peer.recv()
    assert isinstance(err, f.ErrorFrame)
    assert (err.code, err.id, err.message) == (
        "unsupported_version",
        "h1",
        "protocol version must be 2",
    )
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(peer.ws.recv(), 5)
    assert peer.ws.close_code == CloseCode.POLICY


# -- signed receipts --------------------------------------------------------------------


async def test_hostile_receipts_that_do_not_match_the_stored_history_are_refused(
    hub: RunningHub,
) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    await client.request(client.encrypt(key, case.case_id, "one"))
    await client.request(client.encrypt(key, case.case_id, "two"))
    stored = await counselor.sync_all(case.case_id)
    good = counselor.receipt(case.case_id, stored[1])
    assert counselor.identity is not None
    forged_hash = bytes(32)
    for frame, words in [
        (
            msgspec.structs.replace(
                good,
                id=rid(),
                chain_hash=forged_hash,
                sig=crypto.sign_receipt(counselor.identity, case.case_id, "read", 2, forged_hash),
            ),
            "chain_hash does not match the stored message at seq 2",
        ),
        (
            msgspec.structs.replace(
                good,
                id=rid(),
                up_to_seq=9,
                sig=crypto.sign_receipt(
                    counselor.identity, case.case_id, "read", 9, stored[1].chain_hash
                ),
            ),
            "no message at seq 9",
        ),
        (msgspec.structs.replace(good, id=rid(), up_to_seq=1), "signature does not verify"),
        (client.receipt(case.case_id, stored[1]), None),  # the client's, on the counselor's line
    ]:
        if words is None:  # signed by the client, sent by the counselor: not its signature
            err = await counselor.request(frame)
            assert isinstance(err, f.ErrorFrame) and "signature does not verify" in err.message
            continue
        err = await counselor.request(frame)
        assert isinstance(err, f.ErrorFrame) and err.code == "invalid", err
        assert words in err.message
    result = await client.request(f.Sync(id=rid(), case_id=case.case_id))
    assert isinstance(result, f.SyncResult) and result.receipts == []  # nothing stored
    assert isinstance(await counselor.request(good), f.Ok)
    result = await client.request(f.Sync(id=rid(), case_id=case.case_id))
    assert isinstance(result, f.SyncResult)
    assert [(r.account_id, r.up_to_seq) for r in result.receipts] == [(counselor.account_id, 2)]


async def test_hostile_history_rewritten_under_a_signed_receipt_is_detected(
    hub: RunningHub,
) -> None:
    client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
    for text in ("I feel unsafe.", "NO. Do not call anyone.", "Thank you."):
        await client.request(client.encrypt(key, case.case_id, text))
    stored = await counselor.sync_all(case.case_id)
    assert isinstance(await counselor.request(counselor.receipt(case.case_id, stored[2])), f.Ok)
    # The operator deletes message 2 and re-chains what is left, as a hub would.
    write_db(hub, "DELETE FROM messages WHERE case_id = ? AND seq = 2", (case.case_id,))
    third = stored[2]
    relinked = chain_hash(
        stored[0].chain_hash,
        case_id=case.case_id,
        seq=2,
        epoch=third.epoch,
        sender_id=third.sender_id,
        client_msg_id=third.client_msg_id,
        nonce=third.nonce,
        ciphertext=third.ciphertext,
    )
    write_db(
        hub,
        "UPDATE messages SET seq = 2, chain_hash = ? WHERE case_id = ? AND seq = 3",
        (relinked, case.case_id),
    )
    write_db(
        hub,
        "UPDATE cases SET last_seq = 2, chain_head = ? WHERE id = ?",
        (relinked, case.case_id),
    )
    result = await client.request(f.Sync(id=rid(), case_id=case.case_id))
    assert isinstance(result, f.SyncResult) and [m.seq for m in result.messages] == [1, 2]
    assert counselor.identity is not None
    problems = check_receipts(
        case.case_id,
        result.messages,
        result.receipts,
        {counselor.account_id: counselor.identity.sign_pk},
    )
    assert [(p.seq, p.kind, p.sender_id) for p in problems] == [
        (3, "dropped", counselor.account_id)
    ]


# -- the preferences blob -------------------------------------------------------------


async def test_prefs_compare_and_swap_between_two_sessions(hub: RunningHub) -> None:
    one = await RawClient.connect(hub.url)
    await one.register("prefsuser")
    await one.authenticate()
    two = await one.session_of_same_account(hub.url)
    for peer in (one, two):
        got = await peer.request(f.PrefsGet(id=rid()))
        assert isinstance(got, f.PrefsResult) and (got.blob, got.version) == (None, 0)
    keys = crypto.derive_login_keys("pw", bytes(16), 1, 8192)
    first = crypto.seal_prefs(keys.prefs_key, b'{"pins":{"a":1}}')
    second = crypto.seal_prefs(keys.prefs_key, b'{"pins":{"b":2}}')
    put = await one.request(f.PrefsPut(id=rid(), blob=first, version=0))
    assert isinstance(put, f.PrefsResult) and put.version == 1
    stale = await two.request(f.PrefsPut(id=rid(), blob=second, version=0))
    assert isinstance(stale, f.ErrorFrame) and stale.code == "conflict", stale
    got = await two.request(f.PrefsGet(id=rid()))
    assert isinstance(got, f.PrefsResult) and (got.blob, got.version) == (first, 1)
    put = await two.request(f.PrefsPut(id=rid(), blob=second, version=1))
    assert isinstance(put, f.PrefsResult) and put.version == 2
    # Oversized blobs never reach storage.
    big = await one.request(f.PrefsPut(id=rid(), blob=first, version=2))
    assert isinstance(big, f.PrefsResult)
    await one.send_raw(
        b'{"type":"prefs.put","id":"big","blob":"'
        + b"A" * ((MAX_PREFS_BYTES + 3) // 3 * 4 + 4)
        + b'","version":3,"v":2}'
    )
    err = await one.recv()
    assert isinstance(err, f.ErrorFrame) and err.code in ("invalid", "too_big")
    # Another account sees its own (empty) blob, never this one.
    other = await RawClient.connect(hub.url)
    await other.register("otheruser")
    await other.authenticate()
    got = await other.request(f.PrefsGet(id=rid()))
    assert isinstance(got, f.PrefsResult) and (got.blob, got.version) == (None, 0)


# -- counselor certificates: the offline ceremony and its installation ---------------


async def _install_policy(hub: RunningHub) -> None:
    signed = make_policy(officers(1), 1)
    assert hub.server.db is not None
    await hub.server.db.escrow.install(
        escrow.policy_fingerprint(signed.policy), msgspec.json.encode(signed), 1, 1
    )


def _certify(pending: bytes, org: crypto.Signer) -> bytes:
    """What ``chat-escrow certify`` does offline with the org key (without the prompts)."""
    certs = []
    for c in decode_pending(pending).counselors:
        crypto.verify_box_key(c.sign_pk, c.box_pk, c.box_sig)
        certs.append(
            crypto.sign_counselor_cert(
                org,
                account_id=c.account_id,
                handle=c.handle,
                sign_pk=c.sign_pk,
                box_pk=c.box_pk,
                issued_at=1_700_000_000_000,
            )
        )
    return encode_document(CounselorCerts(certs=certs))


ORG_SIGNER = crypto.ServerKey.from_seed(bytes(ORG))


async def test_counselor_certification_ceremony(
    hub: RunningHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, counselor, _case, _key = await pair(hub.url, await hub.invite_counselor())
    await _install_policy(hub)
    assert await server_cli_run(hub, "admin", "counselors", "pending", "--json") == 0
    pending = capsys.readouterr().out.encode()
    [listed] = decode_pending(pending).counselors
    assert (listed.account_id, listed.handle) == (counselor.account_id, counselor.handle)
    assert listed.fingerprint == crypto.fingerprint_v2(listed.sign_pk, listed.box_pk)
    certs = tmp_path / "certs.json"
    certs.write_bytes(_certify(pending, ORG_SIGNER))
    assert await server_cli_run(hub, "admin", "counselors", "install-certs", str(certs)) == 0
    got = await client.request(f.DirectoryGet(id=rid(), account_ids=[counselor.account_id]))
    assert isinstance(got, f.DirectoryResult)
    [entry] = got.entries
    assert entry.cert is not None
    crypto.verify_counselor_cert(
        entry.cert,
        bytes(ORG.verify_key),
        account_id=entry.account_id,
        sign_pk=entry.sign_pk,
        box_pk=entry.box_pk,
    )
    assert (await fresh_login(hub, counselor)).cert == entry.cert
    capsys.readouterr()
    assert await server_cli_run(hub, "admin", "counselors", "pending") == 0
    assert counselor.handle not in capsys.readouterr().out  # certified: no longer pending


async def test_hostile_install_certs_that_do_not_match_the_stored_keys_is_refused(
    hub: RunningHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _client, counselor, _case, _key = await pair(hub.url, await hub.invite_counselor())
    certs = tmp_path / "certs.json"
    assert await server_cli_run(hub, "admin", "counselors", "pending", "--json") == 0
    pending = capsys.readouterr().out.encode()
    # No policy installed: the org key is unknown, nothing can be checked.
    certs.write_bytes(_certify(pending, ORG_SIGNER))
    assert await server_cli_run(hub, "admin", "counselors", "install-certs", str(certs)) == 1
    assert "no escrow policy is installed" in capsys.readouterr().err
    await _install_policy(hub)
    # Signed by a key that is not the organisation's.
    certs.write_bytes(_certify(pending, crypto.ServerKey.from_seed(bytes(32))))
    assert await server_cli_run(hub, "admin", "counselors", "install-certs", str(certs)) == 1
    assert "another organisation key" in capsys.readouterr().err
    # The operator swaps the counselor's box key after the ceremony listed it.
    mallory = crypto.Identity.generate()
    write_db(
        hub, "UPDATE accounts SET box_pk = ? WHERE id = ?", (mallory.box_pk, counselor.account_id)
    )
    certs.write_bytes(_certify(pending, ORG_SIGNER))
    assert await server_cli_run(hub, "admin", "counselors", "install-certs", str(certs)) == 1
    err = capsys.readouterr().err
    assert "counselor certificate is for another box key" in err
    assert "no certificate was installed" in err
    # A file that is not a certs file.
    certs.write_bytes(pending)
    assert await server_cli_run(hub, "admin", "counselors", "install-certs", str(certs)) == 1
    assert "not a counselor-certs file" in capsys.readouterr().err
    assert hub.server.db is not None
    stored = await hub.server.db.accounts.by_id(counselor.account_id)
    assert stored is not None and stored.cert is None
