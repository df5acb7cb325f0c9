"""docs/test-vectors.json: recompute every value from its inputs and compare.

Any change to a KDF parameter, a personalisation string, a transcript, the envelope or
frame encoding breaks this test. If the change is intended, it is a protocol change:
regenerate with scripts/make_vectors.py, bump vectors_version, and update PROTOCOL.md.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import nacl.hash
import nacl.pwhash
import pytest
from nacl.encoding import RawEncoder

from protocol import PROTOCOL_VERSION, chain, codec, crypto, opening
from protocol import frames as f

ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = ROOT / "docs" / "test-vectors.json"
V: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def identity(name: str) -> crypto.Identity:
    entry = V["identities"][name]
    return crypto.Identity.from_secret_bytes(h(entry["sign_seed"]) + h(entry["box_sk"]))


def blake2b(data: bytes, person: bytes, key: bytes = b"", size: int = 32) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key, person=person, encoder=RawEncoder)


def test_versions() -> None:
    assert V["vectors_version"] == 2
    assert V["protocol_version"] == PROTOCOL_VERSION == 1


@pytest.mark.parametrize("name", ["client", "counselor"])
def test_identities(name: str) -> None:
    entry = V["identities"][name]
    ident = identity(name)
    assert ident.sign_pk == h(entry["sign_pk"])
    assert ident.box_pk == h(entry["box_pk"])
    assert bytes(nacl.bindings.crypto_scalarmult_base(h(entry["box_sk"]))) == h(entry["box_pk"])
    assert crypto.fingerprint(ident.sign_pk) == entry["fingerprint"]


def test_server_identity() -> None:
    entry = V["identities"]["server"]
    pk, _ = nacl.bindings.crypto_sign_seed_keypair(h(entry["sign_seed"]))
    assert pk == h(entry["sign_pk"])
    assert crypto.fingerprint(pk) == entry["fingerprint"]
    digest = blake2b(pk, b"chat-fingerprnt1", size=20).hex()
    assert entry["fingerprint"] == " ".join(digest[i : i + 4] for i in range(0, 40, 4))


def test_login_keys() -> None:
    v = V["login"]
    assert v["passphrase"].encode("utf-8") == h(v["passphrase_utf8"])
    master = nacl.bindings.crypto_pwhash_alg(
        32,
        h(v["passphrase_utf8"]),
        h(v["salt"]),
        v["opslimit"],
        v["memlimit"],
        nacl.bindings.crypto_pwhash_ALG_ARGON2ID13,
    )
    assert master == h(v["master_key"])
    assert blake2b(b"", b"chat-auth-key-v1", key=master) == h(v["auth_key"])
    assert blake2b(b"", b"chat-wrap-key-v1", key=master) == h(v["wrap_key"])
    keys = crypto.derive_login_keys(v["passphrase"], h(v["salt"]), v["opslimit"], v["memlimit"])
    assert keys.auth_key == h(v["auth_key"])
    assert keys.wrap_key == h(v["wrap_key"])


def test_wrapped_identity() -> None:
    v = V["wrapped_identity"]
    assert v["wrap_key"] == V["login"]["wrap_key"]
    ident = identity(v["of"])
    assert ident.secret_bytes() == h(v["secret"])
    blob = crypto.wrap_identity(ident, h(v["wrap_key"]), nonce=h(v["nonce"]))
    assert blob == h(v["blob"])
    assert len(blob) == 104 and blob[:24] == h(v["nonce"])
    # SecretBox = crypto_secretbox_easy: nonce || MAC(16) || XSalsa20(secret).
    inner = nacl.bindings.crypto_secretbox_open(blob[24:], blob[:24], h(v["wrap_key"]))
    assert inner == h(v["secret"])
    assert opening.unwrap_identity(blob, h(v["wrap_key"])).secret_bytes() == h(v["secret"])


def test_auth_challenge() -> None:
    v = V["auth"]
    nonce, account = h(v["nonce"]), v["account_id"]
    transcript = crypto.auth_transcript(nonce, account)
    assert transcript == h(v["transcript"])
    assert transcript == crypto.lp(b"chat.auth.v1", nonce, account.encode())
    sig = crypto.sign_challenge(identity(v["signer"]), nonce, account)
    assert sig == h(v["signature"])
    crypto.verify_challenge(identity(v["signer"]).sign_pk, nonce, account, sig)


def test_case_key_commitment() -> None:
    v = V["case_key"]
    key, case_id, epoch = h(v["key"]), v["case_id"], v["epoch"]
    assert crypto.lp(case_id.encode(), crypto.u64(epoch)) == h(v["commitment_input"])
    commitment = crypto.key_commitment(key, case_id, epoch)
    assert commitment == h(v["commitment"])
    assert commitment == blake2b(h(v["commitment_input"]), b"chat-key-commit1", key=key)
    escrow = v["escrow"]
    transcript = crypto.lp(
        b"chat.keycommit.v2", case_id.encode(), crypto.u64(epoch), commitment, escrow.encode()
    )
    assert transcript == h(v["commitment_transcript"])
    creator = identity(v["creator"])
    sig = crypto.sign_commitment(creator, case_id, epoch, commitment, escrow=escrow)
    assert sig == h(v["commitment_signature"])
    crypto.verify_commitment(creator.sign_pk, case_id, epoch, commitment, sig, escrow=escrow)


def test_sealed_key() -> None:
    v = V["sealed_key"]
    recipient = identity(v["recipient"])
    sealed = h(v["sealed"])
    assert len(sealed) == 80
    ck = V["case_key"]
    opened = opening.open_case_key(
        sealed, recipient, ck["case_id"], ck["epoch"], h(ck["commitment"])
    )
    assert opened == h(v["opened_key"]) == h(ck["key"])
    # The sealed value is libsodium's crypto_box_seal with a fixed ephemeral key:
    # epk || crypto_box_easy(K, BLAKE2b-192(epk || pk), pk, esk).
    esk = h(v["ephemeral_sk"])
    epk = nacl.bindings.crypto_scalarmult_base(esk)
    assert epk == h(v["ephemeral_pk"]) == sealed[:32]
    nonce = nacl.hash.blake2b(epk + recipient.box_pk, digest_size=24, encoder=RawEncoder)
    assert epk + nacl.bindings.crypto_box(opened, nonce, recipient.box_pk, esk) == sealed


@pytest.mark.parametrize("index", range(3))
def test_message(index: int) -> None:
    v = V["messages"][index]
    ck = V["case_key"]
    key, case_id, epoch = h(ck["key"]), ck["case_id"], ck["epoch"]
    by_account = {V["identities"][n]["account_id"]: n for n in ("client", "counselor")}
    sender = identity(by_account[v["sender_id"]])
    env = crypto.Envelope(body=v["body"], ts=v["ts"], client_msg_id=v["client_msg_id"])
    envelope_json = msgspec.json.encode(env)
    assert envelope_json == h(v["envelope_json"])
    digest = blake2b(envelope_json, b"chat-msg-hash-v1")
    assert digest == h(v["envelope_hash"])
    transcript = crypto.lp(
        b"chat.msgsig.v1",
        case_id.encode(),
        crypto.u64(epoch),
        v["client_msg_id"].encode(),
        v["sender_id"].encode(),
        digest,
    )
    assert transcript == h(v["signature_transcript"])
    assert sender.sign(transcript) == h(v["signature"])
    aad = crypto.message_aad(case_id, epoch, v["sender_id"], v["client_msg_id"])
    assert aad == h(v["aad"])
    assert h(v["inner_plaintext"]) == h(v["signature"]) + envelope_json

    nonce, ciphertext = crypto.encrypt_message(
        key,
        sender,
        case_id=case_id,
        epoch=epoch,
        sender_id=v["sender_id"],
        envelope=env,
        nonce=h(v["nonce"]),
    )
    assert nonce == h(v["nonce"])
    assert ciphertext == h(v["ciphertext"])
    raw = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        h(v["inner_plaintext"]), aad, nonce, key
    )
    assert raw == ciphertext
    got = opening.decrypt_message(
        key,
        sender.sign_pk,
        case_id=case_id,
        epoch=epoch,
        sender_id=v["sender_id"],
        client_msg_id=v["client_msg_id"],
        nonce=nonce,
        ciphertext=ciphertext,
    )
    assert got == env


def test_chain() -> None:
    case_id, epoch = V["case_key"]["case_id"], V["case_key"]["epoch"]
    prev = chain.GENESIS
    links = []
    for seq, v in enumerate(V["messages"], start=1):
        assert v["seq"] == seq
        assert h(v["chain_prev"]) == prev
        data = crypto.lp(
            b"chat.chain.v1",
            prev,
            case_id.encode(),
            crypto.u64(seq),
            crypto.u64(epoch),
            v["sender_id"].encode(),
            v["client_msg_id"].encode(),
            h(v["nonce"]),
            h(v["ciphertext"]),
        )
        assert data == h(v["chain_input"])
        computed = chain.chain_hash(
            prev,
            case_id=case_id,
            seq=seq,
            epoch=epoch,
            sender_id=v["sender_id"],
            client_msg_id=v["client_msg_id"],
            nonce=h(v["nonce"]),
            ciphertext=h(v["ciphertext"]),
        )
        assert computed == blake2b(data, b"chat-chain-hash1") == h(v["chain_hash"])
        links.append(
            f.MessageRecord(
                case_id=case_id,
                seq=seq,
                epoch=epoch,
                sender_id=v["sender_id"],
                client_msg_id=v["client_msg_id"],
                nonce=h(v["nonce"]),
                ciphertext=h(v["ciphertext"]),
                chain_hash=computed,
                server_ts=0,
            )
        )
        prev = computed
    assert chain.verify_chain(links) == []


def test_chain_head() -> None:
    v = V["chain_head"]
    assert v["head"] == V["messages"][-1]["chain_hash"]
    assert v["seq"] == len(V["messages"])
    transcript = chain.head_transcript(v["case_id"], v["seq"], h(v["head"]))
    assert transcript == h(v["transcript"])
    assert transcript == crypto.lp(
        b"chat.chainhead.v1", v["case_id"].encode(), crypto.u64(v["seq"]), h(v["head"])
    )
    server = crypto.Identity.from_secret_bytes(
        h(V["identities"]["server"]["sign_seed"]) + bytes(32)
    )
    assert chain.sign_head(server, v["case_id"], v["seq"], h(v["head"])) == h(v["signature"])
    chain.verify_head(
        h(V["identities"]["server"]["sign_pk"]),
        v["case_id"],
        v["seq"],
        h(v["head"]),
        h(v["signature"]),
    )


_CLIENT_TAGS = {str(t.__struct_config__.tag) for t in typing.get_args(f.ClientFrame)}


@pytest.mark.parametrize("name", sorted(V["frames"]))
def test_frame_encoding(name: str) -> None:
    text: str = V["frames"][name]
    tag = name.removesuffix(".no_id")
    frame: msgspec.Struct
    frame = codec.decode_client(text) if tag in _CLIENT_TAGS else codec.decode_server(text)
    assert frame.__struct_config__.tag == tag
    assert codec.encode(frame).decode("utf-8") == text


def test_every_frame_type_has_a_vector() -> None:
    both = typing.get_args(f.ClientFrame) + typing.get_args(f.ServerFrame)
    tags = {str(t.__struct_config__.tag) for t in both}
    assert {name.removesuffix(".no_id") for name in V["frames"]} == tags


def test_frames_carry_the_vector_values() -> None:
    frames = V["frames"]
    first = V["messages"][0]
    send = codec.decode_client(frames["msg.send"])
    assert isinstance(send, f.MsgSend)
    assert send.ciphertext == h(first["ciphertext"]) and send.nonce == h(first["nonce"])
    assert json.loads(frames["msg.send"])["nonce"] == base64.b64encode(h(first["nonce"])).decode()
    ack = codec.decode_server(frames["msg.ack"])
    assert isinstance(ack, f.MsgAck) and ack.chain_hash == h(first["chain_hash"])
    auth = codec.decode_client(frames["auth"])
    assert isinstance(auth, f.AuthRequest) and auth.sig == h(V["auth"]["signature"])
    register = codec.decode_client(frames["register"])
    assert isinstance(register, f.Register)
    assert register.wrapped_keys == h(V["wrapped_identity"]["blob"])
    assert register.auth_key == h(V["login"]["auth_key"])
    deposit = codec.decode_client(frames["case.key"])
    assert isinstance(deposit, f.CaseKeyDeposit)
    assert deposit.seals[0].sealed == h(V["sealed_key"]["sealed"])
    assert deposit.commitment_sig == h(V["case_key"]["commitment_signature"])
    sync = codec.decode_server(frames["sync.result"])
    assert isinstance(sync, f.SyncResult)
    assert [m.chain_hash.hex() for m in sync.messages] == [m["chain_hash"] for m in V["messages"]]


def test_generator_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_vectors.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
