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
from protocol.errors import Noncanonical
from protocol.limits import PADDING_BUCKETS

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
    assert V["protocol_version"] == PROTOCOL_VERSION == 2


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
    assert blake2b(b"", b"chat-prefs-key-2", key=master) == h(v["prefs_key"]) == keys.prefs_key


def test_prefs_blob() -> None:
    v = V["prefs_blob"]
    assert v["prefs_key"] == V["login"]["prefs_key"]
    key, nonce = h(v["prefs_key"]), h(v["nonce"])
    assert h(v["aad"]) == crypto.lp(b"chat.prefs.v2") == crypto.prefs_aad()
    raw = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        h(v["plaintext"]), h(v["aad"]), nonce, key
    )
    assert nonce + raw == h(v["blob"]) == crypto.seal_prefs(key, h(v["plaintext"]), nonce=nonce)
    assert opening.open_prefs(key, h(v["blob"])) == h(v["plaintext"])


@pytest.mark.parametrize("name", ["client", "counselor"])
def test_box_key_signature_and_fingerprint_v2(name: str) -> None:
    entry = V["identities"][name]
    ident = identity(name)
    transcript = crypto.lp(b"chat.boxkey.v2", ident.sign_pk, ident.box_pk)
    assert transcript == h(entry["box_key_transcript"])
    assert ident.sign(transcript) == h(entry["box_sig"]) == crypto.sign_box_key(ident)
    crypto.verify_box_key(ident.sign_pk, ident.box_pk, h(entry["box_sig"]))
    assert h(entry["fingerprint_v2_input"]) == crypto.lp(ident.sign_pk, ident.box_pk)
    digest = blake2b(h(entry["fingerprint_v2_input"]), b"chat-fingerprnt2", size=20).hex()
    assert entry["fingerprint_v2"] == " ".join(digest[i : i + 5] for i in range(0, 40, 5))
    assert crypto.fingerprint_v2(ident.sign_pk, ident.box_pk) == entry["fingerprint_v2"]


def test_safety_number() -> None:
    v = V["safety_number"]
    a, b = identity(v["a"]), identity(v["b"])
    fa = blake2b(crypto.lp(a.sign_pk, a.box_pk), b"chat-fingerprnt2", size=20)
    fb = blake2b(crypto.lp(b.sign_pk, b.box_pk), b"chat-fingerprnt2", size=20)
    assert h(v["input"]) == crypto.lp(min(fa, fb), max(fa, fb))
    digest = blake2b(h(v["input"]), b"chat-safetynum-2", size=64)
    assert digest == h(v["digest"])
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100000 for i in range(12)]
    assert v["number"] == " ".join(f"{g:05d}" for g in groups)
    assert crypto.safety_number((a.sign_pk, a.box_pk), (b.sign_pk, b.box_pk)) == v["number"]
    assert crypto.safety_number((b.sign_pk, b.box_pk), (a.sign_pk, a.box_pk)) == v["number"]


def test_counselor_cert() -> None:
    v = V["counselor_cert"]
    counselor = identity(v["of"])
    org_pk, _ = nacl.bindings.crypto_sign_seed_keypair(h(v["org_sign_seed"]))
    assert org_pk == h(v["org_sign_pk"])
    assert crypto.fingerprint(org_pk) == v["org_fingerprint"]
    transcript = crypto.lp(
        b"chat.counselorcert.v2",
        v["account_id"].encode(),
        v["handle"].encode(),
        counselor.sign_pk,
        counselor.box_pk,
        crypto.u64(v["issued_at"]),
    )
    assert transcript == h(v["transcript"])
    cert = msgspec.json.decode(v["json"].encode(), type=f.CounselorCert)
    assert cert.sig == h(v["signature"]) and cert.org_sign_pk == org_pk
    crypto.verify_counselor_cert(
        cert,
        org_pk,
        account_id=v["account_id"],
        sign_pk=counselor.sign_pk,
        box_pk=counselor.box_pk,
    )
    org = crypto.ServerKey.from_seed(h(v["org_sign_seed"]))
    again = crypto.sign_counselor_cert(
        org,
        account_id=v["account_id"],
        handle=v["handle"],
        sign_pk=counselor.sign_pk,
        box_pk=counselor.box_pk,
        issued_at=v["issued_at"],
    )
    assert again == cert


def test_receipt_signature() -> None:
    v = V["receipt"]
    signer = identity(v["signer"])
    transcript = crypto.lp(
        b"chat.receipt.v2",
        v["case_id"].encode(),
        v["kind"].encode(),
        crypto.u64(v["up_to_seq"]),
        h(v["chain_hash"]),
    )
    assert transcript == h(v["transcript"])
    assert signer.sign(transcript) == h(v["signature"])
    assert v["chain_hash"] == V["messages"][v["up_to_seq"] - 1]["chain_hash"]
    receipt = f.SignedReceipt(
        account_id=V["identities"][v["signer"]]["account_id"],
        kind=v["kind"],
        up_to_seq=v["up_to_seq"],
        chain_hash=h(v["chain_hash"]),
        sig=h(v["signature"]),
    )
    crypto.verify_receipt(signer.sign_pk, v["case_id"], receipt)


def test_padding() -> None:
    v = V["padding"]
    assert tuple(v["buckets"]) == PADDING_BUCKETS
    for example in v["examples"]:
        data = h(example["input"])
        bucket = min(b for b in PADDING_BUCKETS if b > len(data))
        padded = data + b"\x80" + bytes(bucket - len(data) - 1)
        assert padded == h(example["padded"]) == crypto.pad(data)
        assert nacl.bindings.sodium_unpad(padded, len(padded)) == data


@pytest.mark.parametrize("index", range(len(V["envelope_negative"])))
def test_envelope_negative(index: int) -> None:
    v = V["envelope_negative"][index]
    assert v["name"] and v["reason"]
    with pytest.raises(Noncanonical):
        crypto.decode_envelope(base64.b64decode(v["bytes_b64"]))


def test_envelope_negative_names_are_unique() -> None:
    names = [v["name"] for v in V["envelope_negative"]]
    assert len(names) == len(set(names)) >= 20


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
    env = crypto.Envelope(
        body=v["body"],
        ts=v["ts"],
        client_msg_id=v["client_msg_id"],
        prev_seq=v["prev_seq"],
        prev_hash=h(v["prev_hash"]),
        n=v["n"],
    )
    envelope_json = msgspec.json.encode(env)
    assert envelope_json == h(v["envelope_json"]) == crypto.encode_envelope(env)
    assert crypto.decode_envelope(envelope_json) == env
    # The signed order: the previous record as the sender saw it, its own counter.
    assert v["prev_seq"] == index and v["prev_hash"] == (
        V["messages"][index - 1]["chain_hash"] if index else bytes(32).hex()
    )
    assert v["n"] == sum(m["sender_id"] == v["sender_id"] for m in V["messages"][: index + 1])
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
    inner = h(v["inner_plaintext"])
    bucket = min(b for b in PADDING_BUCKETS if b > len(inner))
    assert h(v["padded_plaintext"]) == inner + b"\x80" + bytes(bucket - len(inner) - 1)

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
        h(v["padded_plaintext"]), aad, nonce, key
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
    tag = name.removesuffix(".no_id").removesuffix(".2")
    frame: msgspec.Struct
    frame = codec.decode_client(text) if tag in _CLIENT_TAGS else codec.decode_server(text)
    assert frame.__struct_config__.tag == tag
    assert codec.encode(frame).decode("utf-8") == text


def test_every_frame_type_has_a_vector() -> None:
    both = typing.get_args(f.ClientFrame) + typing.get_args(f.ServerFrame)
    tags = {str(t.__struct_config__.tag) for t in both}
    assert {name.removesuffix(".no_id").removesuffix(".2") for name in V["frames"]} == tags


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
    assert sync.receipts[0].sig == h(V["receipt"]["signature"])
    assert register.box_sig == h(V["identities"]["client"]["box_sig"])
    directory = codec.decode_server(frames["directory.result"])
    assert isinstance(directory, f.DirectoryResult)
    cert = directory.entries[0].cert
    assert cert is not None and cert.sig == h(V["counselor_cert"]["signature"])
    put = codec.decode_client(frames["prefs.put"])
    assert isinstance(put, f.PrefsPut) and put.blob == h(V["prefs_blob"]["blob"])


def test_generator_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_vectors.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
