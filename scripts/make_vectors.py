#!/usr/bin/env python3
"""Generate docs/test-vectors.json from fixed inputs, using the protocol/ package.

    .venv/bin/python scripts/make_vectors.py          # (re)write the file
    .venv/bin/python scripts/make_vectors.py --check  # exit 1 if the file is stale

It also (re)writes, and with ``--check`` checks, the page's protocol constants
(web_client/src/generated/protocol.js, scripts/make_web_protocol.py), so every file
generated from protocol/ is kept current by one command.

Every input is a constant below, so the output is byte-for-byte deterministic
(Ed25519 signatures are deterministic, RFC 8032; every nonce is fixed). SealedBox
(crypto_box_seal) is randomised by its ephemeral key, so the sealed case key is built
here with a FIXED ephemeral secret, exactly as libsodium builds it; any implementation
can open it, and tests/protocol/test_vectors.py checks both directions.

A change to this output is a change to the wire protocol or the cryptography: bump
VECTORS_VERSION and say why in docs/PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import nacl.bindings  # noqa: E402
import nacl.hash  # noqa: E402
import nacl.pwhash  # noqa: E402
from nacl.encoding import RawEncoder  # noqa: E402

from protocol import PROTOCOL_VERSION, chain, codec, crypto, limits, opening  # noqa: E402
from protocol import frames as f  # noqa: E402
from scripts import make_web_protocol  # noqa: E402

OUTPUT = ROOT / "docs" / "test-vectors.json"
#: 2: protocol version 2 (box key signature, fingerprint_v2, safety number, counselor
#: certificate, signed receipts, padded messages with signed order, prefs blob,
#: negative envelope vectors).
VECTORS_VERSION = 2

# -- fixed inputs ------------------------------------------------------------------


def _seq(start: int, n: int) -> bytes:
    return bytes((start + i) % 256 for i in range(n))


PASSPHRASE = "correct horse battery staple \u00e9\u2603"
SALT = _seq(0x00, 16)
OPSLIMIT, MEMLIMIT = 1, 8192

CLIENT_SIGN_SEED = _seq(0x20, 32)
CLIENT_BOX_SECRET = _seq(0x40, 32)
COUNSELOR_SIGN_SEED = _seq(0x60, 32)
COUNSELOR_BOX_SECRET = _seq(0x80, 32)
SERVER_SIGN_SEED = _seq(0xA0, 32)

WRAP_NONCE = _seq(0xE0, 24)
CHALLENGE_NONCE = _seq(0x10, 32)
CASE_KEY = _seq(0x30, 32)
SEAL_EPHEMERAL_SECRET = _seq(0x50, 32)

CLIENT_ID = "acct-client-0001"
COUNSELOR_ID = "acct-counselor-0001"
CASE_ID = "case-0001"
EPOCH = 1

#: (sender, client_msg_id, body, ts, nonce) for a three-message chain.
MESSAGES = [
    (
        "client",
        "cmid-AAAAAAAAAAAAAAAA",
        'Hello \u2014 I need to talk. "Now" \U0001f642',
        1_700_000_000_000,
        _seq(0x70, 24),
    ),
    (
        "counselor",
        "cmid-BBBBBBBBBBBBBBBB",
        "I'm here. Take your time.",
        1_700_000_005_000,
        _seq(0x90, 24),
    ),
    ("client", "cmid-CCCCCCCCCCCCCCCC", "Thank you.\nLine two.", 1_700_000_009_000, _seq(0xB0, 24)),
]
SERVER_TS = [1_700_000_000_123, 1_700_000_005_123, 1_700_000_009_123]
CERT_ISSUED_AT = 1_699_990_000_000
PREFS_NONCE = _seq(0xC0, 24)
PREFS_JSON = b'{"contacts":{"acct-counselor-0001":{"handle":"carol"}}}'


# -- helpers -----------------------------------------------------------------------


def hx(data: bytes) -> str:
    return data.hex()


def identity(seed: bytes, box_secret: bytes) -> crypto.Identity:
    return crypto.Identity.from_secret_bytes(seed + box_secret)


def sealed_box_with_ephemeral(message: bytes, recipient_pk: bytes, eph_sk: bytes) -> bytes:
    """crypto_box_seal with a chosen ephemeral secret (libsodium's construction):
    epk || crypto_box_easy(message, nonce=BLAKE2b-192(epk || recipient_pk), recipient_pk, esk).
    """
    eph_pk = nacl.bindings.crypto_scalarmult_base(eph_sk)
    nonce = nacl.hash.blake2b(eph_pk + recipient_pk, digest_size=24, encoder=RawEncoder)
    return eph_pk + nacl.bindings.crypto_box(message, nonce, recipient_pk, eph_sk)


def frame_text(frame: msgspec.Struct) -> str:
    return codec.encode(frame).decode("utf-8")


# -- the vectors -------------------------------------------------------------------


def build() -> dict[str, Any]:
    client = identity(CLIENT_SIGN_SEED, CLIENT_BOX_SECRET)
    counselor = identity(COUNSELOR_SIGN_SEED, COUNSELOR_BOX_SECRET)
    server = identity(SERVER_SIGN_SEED, bytes(32))  # the server only signs
    people = {"client": (client, CLIENT_ID), "counselor": (counselor, COUNSELOR_ID)}

    master = nacl.pwhash.argon2id.kdf(
        32, PASSPHRASE.encode("utf-8"), SALT, opslimit=OPSLIMIT, memlimit=MEMLIMIT
    )
    keys = crypto.derive_login_keys(PASSPHRASE, SALT, OPSLIMIT, MEMLIMIT)
    wrapped = crypto.wrap_identity(client, keys.wrap_key, nonce=WRAP_NONCE)
    assert opening.unwrap_identity(wrapped, keys.wrap_key).secret_bytes() == client.secret_bytes()

    auth_transcript = crypto.auth_transcript(CHALLENGE_NONCE, CLIENT_ID)
    auth_sig = crypto.sign_challenge(client, CHALLENGE_NONCE, CLIENT_ID)

    commitment = crypto.key_commitment(CASE_KEY, CASE_ID, EPOCH)
    commitment_transcript = crypto._commitment_transcript(
        CASE_ID, EPOCH, commitment, crypto.NO_ESCROW
    )
    commitment_sig = crypto.sign_commitment(
        client, CASE_ID, EPOCH, commitment, escrow=crypto.NO_ESCROW
    )

    sealed = sealed_box_with_ephemeral(CASE_KEY, counselor.box_pk, SEAL_EPHEMERAL_SECRET)
    assert opening.open_case_key(sealed, counselor, CASE_ID, EPOCH, commitment) == CASE_KEY

    messages = []
    records = []
    prev = chain.GENESIS
    counters: dict[str, int] = {}
    for seq, (who, cmid, body, ts, nonce) in enumerate(MESSAGES, start=1):
        sender, sender_id = people[who]
        counters[who] = counters.get(who, 0) + 1
        env = crypto.Envelope(
            body=body,
            ts=ts,
            client_msg_id=cmid,
            prev_seq=seq - 1,
            prev_hash=prev,
            n=counters[who],
        )
        envelope_json = msgspec.json.encode(env)
        assert crypto.encode_envelope(env) == envelope_json
        transcript = crypto.message_transcript(CASE_ID, EPOCH, cmid, sender_id, envelope_json)
        sig = sender.sign(transcript)
        aad = crypto.message_aad(CASE_ID, EPOCH, sender_id, cmid)
        _, ciphertext = crypto.encrypt_message(
            CASE_KEY,
            sender,
            case_id=CASE_ID,
            epoch=EPOCH,
            sender_id=sender_id,
            envelope=env,
            nonce=nonce,
        )
        chain_input = crypto.lp(
            b"chat.chain.v1",
            prev,
            CASE_ID.encode(),
            crypto.u64(seq),
            crypto.u64(EPOCH),
            sender_id.encode(),
            cmid.encode(),
            nonce,
            ciphertext,
        )
        link_hash = chain.chain_hash(
            prev,
            case_id=CASE_ID,
            seq=seq,
            epoch=EPOCH,
            sender_id=sender_id,
            client_msg_id=cmid,
            nonce=nonce,
            ciphertext=ciphertext,
        )
        messages.append(
            {
                "seq": seq,
                "sender_id": sender_id,
                "client_msg_id": cmid,
                "body": body,
                "ts": ts,
                "envelope_json": hx(envelope_json),
                "envelope_hash": hx(
                    nacl.hash.blake2b(
                        envelope_json,
                        digest_size=32,
                        person=b"chat-msg-hash-v1",
                        encoder=RawEncoder,
                    )
                ),
                "signature_transcript": hx(transcript),
                "signature": hx(sig),
                "aad": hx(aad),
                "prev_seq": env.prev_seq,
                "prev_hash": hx(env.prev_hash),
                "n": env.n,
                "inner_plaintext": hx(sig + envelope_json),
                "padded_plaintext": hx(nacl.bindings.sodium_pad(sig + envelope_json, 256)),
                "nonce": hx(nonce),
                "ciphertext": hx(ciphertext),
                "chain_prev": hx(prev),
                "chain_input": hx(chain_input),
                "chain_hash": hx(link_hash),
                "server_ts": SERVER_TS[seq - 1],
            }
        )
        records.append(
            f.MessageRecord(
                case_id=CASE_ID,
                seq=seq,
                epoch=EPOCH,
                sender_id=sender_id,
                client_msg_id=cmid,
                nonce=nonce,
                ciphertext=ciphertext,
                chain_hash=link_hash,
                server_ts=SERVER_TS[seq - 1],
            )
        )
        prev = link_hash

    head_seq = len(MESSAGES)
    head_sig = chain.sign_head(server, CASE_ID, head_seq, prev)
    org = crypto.ServerKey.from_seed(ORG_SIGN_SEED)  # any Ed25519 signer
    cert = crypto.sign_counselor_cert(
        org,
        account_id=COUNSELOR_ID,
        handle="carol",
        sign_pk=counselor.sign_pk,
        box_pk=counselor.box_pk,
        issued_at=CERT_ISSUED_AT,
    )
    receipt = f.SignedReceipt(
        account_id=COUNSELOR_ID,
        kind="read",
        up_to_seq=head_seq,
        chain_hash=prev,
        sig=crypto.sign_receipt(counselor, CASE_ID, "read", head_seq, prev),
    )
    prefs_blob = crypto.seal_prefs(keys.prefs_key, PREFS_JSON, nonce=PREFS_NONCE)
    assert opening.open_prefs(keys.prefs_key, prefs_blob) == PREFS_JSON

    return {
        "description": (
            "Test vectors for the counseling chat protocol (docs/PROTOCOL.md). "
            "All byte strings are lowercase hex; strings are UTF-8. "
            "Generated by scripts/make_vectors.py; checked by tests/protocol/test_vectors.py."
        ),
        "vectors_version": VECTORS_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "identities": {
            **{
                name: {
                    "account_id": account_id,
                    "sign_seed": hx(ident.secret_bytes()[:32]),
                    "sign_pk": hx(ident.sign_pk),
                    "box_sk": hx(ident.secret_bytes()[32:]),
                    "box_pk": hx(ident.box_pk),
                    "fingerprint": crypto.fingerprint(ident.sign_pk),
                    "box_key_transcript": hx(
                        crypto.box_key_transcript(ident.sign_pk, ident.box_pk)
                    ),
                    "box_sig": hx(crypto.sign_box_key(ident)),
                    "fingerprint_v2_input": hx(crypto.lp(ident.sign_pk, ident.box_pk)),
                    "fingerprint_v2": crypto.fingerprint_v2(ident.sign_pk, ident.box_pk),
                }
                for name, (ident, account_id) in people.items()
            },
            "server": {
                "sign_seed": hx(SERVER_SIGN_SEED),
                "sign_pk": hx(server.sign_pk),
                "fingerprint": crypto.fingerprint(server.sign_pk),
            },
        },
        "login": {
            "passphrase": PASSPHRASE,
            "passphrase_utf8": hx(PASSPHRASE.encode("utf-8")),
            "salt": hx(SALT),
            "opslimit": OPSLIMIT,
            "memlimit": MEMLIMIT,
            "master_key": hx(master),
            "auth_key": hx(keys.auth_key),
            "wrap_key": hx(keys.wrap_key),
            "prefs_key": hx(keys.prefs_key),
        },
        "prefs_blob": {
            "prefs_key": hx(keys.prefs_key),
            "plaintext": hx(PREFS_JSON),
            "nonce": hx(PREFS_NONCE),
            "aad": hx(crypto.prefs_aad()),
            "blob": hx(prefs_blob),
        },
        "safety_number": {
            "a": "client",
            "b": "counselor",
            "input": hx(_safety_input(client, counselor)),
            "digest": hx(
                nacl.hash.blake2b(
                    _safety_input(client, counselor),
                    digest_size=64,
                    person=b"chat-safetynum-2",
                    encoder=RawEncoder,
                )
            ),
            "number": crypto.safety_number(
                (client.sign_pk, client.box_pk), (counselor.sign_pk, counselor.box_pk)
            ),
        },
        "counselor_cert": {
            "org_sign_seed": hx(ORG_SIGN_SEED),
            "org_sign_pk": hx(org.sign_pk),
            "org_fingerprint": crypto.fingerprint(org.sign_pk),
            "of": "counselor",
            "account_id": COUNSELOR_ID,
            "handle": "carol",
            "issued_at": CERT_ISSUED_AT,
            "transcript": hx(
                crypto.counselor_cert_transcript(
                    COUNSELOR_ID, "carol", counselor.sign_pk, counselor.box_pk, CERT_ISSUED_AT
                )
            ),
            "signature": hx(cert.sig),
            "json": msgspec.json.encode(cert).decode(),
        },
        "receipt": {
            "signer": "counselor",
            "case_id": CASE_ID,
            "kind": "read",
            "up_to_seq": head_seq,
            "chain_hash": hx(prev),
            "transcript": hx(crypto.receipt_transcript(CASE_ID, "read", head_seq, prev)),
            "signature": hx(receipt.sig),
        },
        "padding": {
            "buckets": list(limits.PADDING_BUCKETS),
            "examples": [
                {"input": hx(data), "padded": hx(crypto.pad(data))}
                for data in (b"", b"\x80", bytes(255), bytes(256))
            ],
        },
        "envelope_negative": envelope_negative(messages[0]["envelope_json"]),
        "wrapped_identity": {
            "of": "client",
            "wrap_key": hx(keys.wrap_key),
            "secret": hx(client.secret_bytes()),
            "nonce": hx(WRAP_NONCE),
            "blob": hx(wrapped),
        },
        "auth": {
            "signer": "client",
            "nonce": hx(CHALLENGE_NONCE),
            "account_id": CLIENT_ID,
            "transcript": hx(auth_transcript),
            "signature": hx(auth_sig),
        },
        "case_key": {
            "creator": "client",
            "case_id": CASE_ID,
            "epoch": EPOCH,
            "key": hx(CASE_KEY),
            "commitment_input": hx(crypto.lp(CASE_ID.encode(), crypto.u64(EPOCH))),
            "commitment": hx(commitment),
            "escrow": crypto.NO_ESCROW,
            "commitment_transcript": hx(commitment_transcript),
            "commitment_signature": hx(commitment_sig),
        },
        "sealed_key": {
            "recipient": "counselor",
            "ephemeral_sk": hx(SEAL_EPHEMERAL_SECRET),
            "ephemeral_pk": hx(nacl.bindings.crypto_scalarmult_base(SEAL_EPHEMERAL_SECRET)),
            "sealed": hx(sealed),
            "opened_key": hx(CASE_KEY),
        },
        "messages": messages,
        "chain_head": {
            "signer": "server",
            "case_id": CASE_ID,
            "seq": head_seq,
            "head": hx(prev),
            "transcript": hx(chain.head_transcript(CASE_ID, head_seq, prev)),
            "signature": hx(head_sig),
        },
        "frames": _frames(
            client,
            keys,
            wrapped,
            auth_sig,
            commitment,
            commitment_sig,
            sealed,
            records,
            server,
            cert,
            receipt,
            prefs_blob,
        ),
    }


def _safety_input(a: crypto.Identity, b: crypto.Identity) -> bytes:
    fa = nacl.hash.blake2b(
        crypto.lp(a.sign_pk, a.box_pk),
        digest_size=20,
        person=b"chat-fingerprnt2",
        encoder=RawEncoder,
    )
    fb = nacl.hash.blake2b(
        crypto.lp(b.sign_pk, b.box_pk),
        digest_size=20,
        person=b"chat-fingerprnt2",
        encoder=RawEncoder,
    )
    return crypto.lp(min(fa, fb), max(fa, fb))


def envelope_negative(canonical_hex: str) -> list[dict[str, str]]:
    """Envelope bytes every client must refuse (after the signature verified): each
    differs from a canonical envelope in one way. Built from the first message's."""
    good = bytes.fromhex(canonical_hex)
    text = good.decode("utf-8")
    obj = msgspec.json.decode(good)
    assert list(obj) == ["kind", "body", "ts", "client_msg_id", "prev_seq", "prev_hash", "n"]

    def without(field: str) -> bytes:
        return msgspec.json.encode({k: v for k, v in obj.items() if k != field})

    def sub(old: str, new: str) -> bytes:
        assert text.count(old) == 1, old
        return text.replace(old, new).encode("utf-8")

    ts, body = obj["ts"], obj["body"]
    reordered = {
        "body": body,
        "kind": "text",
        **{k: v for k, v in obj.items() if k not in ("kind", "body")},
    }
    cases = [
        ("float_ts", sub(f'"ts":{ts}', f'"ts":{ts}.0'), "a float where an int is expected"),
        ("exponent_ts", sub(f'"ts":{ts}', '"ts":1.7e12'), "a number in exponent form"),
        ("string_ts", sub(f'"ts":{ts}', f'"ts":"{ts}"'), "a string where an int is expected"),
        ("lone_surrogate", sub('"body":"Hello', '"body":"\\ud800Hello'), "a lone surrogate"),
        (
            "escaped_ascii",
            sub('"body":"Hello', '"body":"\\u0048ello'),
            "an escape msgspec would not write",
        ),
        ("escaped_non_ascii", sub("\u2014", "\\u2014"), "non-ASCII written as an escape"),
        ("missing_kind", without("kind"), "a missing field (even one with a default)"),
        ("missing_n", without("n"), "a missing field"),
        ("unknown_field", text[:-1].encode() + b',"extra":1}', "an unknown field"),
        ("duplicate_key", text[:-1].encode() + f',"n":{obj["n"]}}}'.encode(), "a repeated key"),
        ("wrong_order", msgspec.json.encode(reordered), "fields in another order"),
        ("whitespace", sub('"kind":"text",', '"kind": "text",'), "whitespace"),
        ("trailing_newline", good + b"\n", "trailing whitespace"),
        ("byte_order_mark", b"\xef\xbb\xbf" + good, "a byte order mark"),
        ("invalid_utf8", good.replace(b'"body":"Hello', b'"body":"Hello\xff'), "invalid UTF-8"),
        ("unknown_kind", sub('"kind":"text"', '"kind":"image"'), "an unknown kind"),
        ("zero_n", sub(f'"n":{obj["n"]}', '"n":0'), "a counter below 1"),
        (
            "negative_prev_seq",
            sub(f'"prev_seq":{obj["prev_seq"]}', '"prev_seq":-1'),
            "a negative seq",
        ),
        ("huge_ts", sub(f'"ts":{ts}', f'"ts":{2**53 + 1}'), "an int above 2**53"),
        (
            "short_prev_hash",
            sub(f'"prev_hash":"{obj["prev_hash"]}"', '"prev_hash":"AAAA"'),
            "a prev_hash of 3 bytes",
        ),
        (
            "unpadded_base64",
            sub('"prev_hash":"' + obj["prev_hash"], '"prev_hash":"' + obj["prev_hash"].rstrip("=")),
            "base64 without its padding",
        ),
        ("not_an_object", b"[" + good + b"]", "not a JSON object"),
    ]
    out = []
    for name, data, reason in cases:
        assert data != good, name
        try:
            crypto.decode_envelope(data)
        except crypto.Noncanonical:
            pass
        else:  # pragma: no cover - a vector Python accepts is a bug in this script
            raise AssertionError(f"negative envelope vector {name} is accepted")
        out.append({"name": name, "bytes_b64": base64.b64encode(data).decode(), "reason": reason})
    return out


def _frames(
    client: crypto.Identity,
    keys: crypto.LoginKeys,
    wrapped: bytes,
    auth_sig: bytes,
    commitment: bytes,
    commitment_sig: bytes,
    sealed: bytes,
    records: list[f.MessageRecord],
    server: crypto.Identity,
    cert: f.CounselorCert,
    receipt: f.SignedReceipt,
    prefs_blob: bytes,
) -> dict[str, str]:
    first = records[0]
    case = f.CaseInfo(
        case_id=CASE_ID,
        client_id=CLIENT_ID,
        counselor_id=COUNSELOR_ID,
        state="assigned",
        topic="anxiety",
        language="en",
        epoch=EPOCH,
        last_seq=len(records),
        created_at=1_699_999_990_000,
    )
    frames: list[msgspec.Struct] = [
        f.Hello(id="1", client="vectors/1"),
        f.Challenge(
            id="1",
            nonce=CHALLENGE_NONCE,
            server_key=server.sign_pk,
            min_opslimit=OPSLIMIT,
            min_memlimit=MEMLIMIT,
        ),
        f.Register(
            id="2",
            handle="alice",
            salt=SALT,
            opslimit=OPSLIMIT,
            memlimit=MEMLIMIT,
            auth_key=keys.auth_key,
            sign_pk=client.sign_pk,
            box_pk=client.box_pk,
            box_sig=crypto.sign_box_key(client),
            wrapped_keys=wrapped,
        ),
        f.Registered(id="2", account_id=CLIENT_ID, role="client"),
        f.Prelogin(id="3", handle="alice"),
        f.PreloginResult(id="3", salt=SALT, opslimit=OPSLIMIT, memlimit=MEMLIMIT),
        f.Login(id="4", handle="alice", auth_key=keys.auth_key),
        f.LoginResult(
            id="4",
            account_id=CLIENT_ID,
            role="client",
            sign_pk=client.sign_pk,
            box_pk=client.box_pk,
            box_sig=crypto.sign_box_key(client),
            cert=None,
            wrapped_keys=wrapped,
            token="tok_0123456789abcdef",
            token_expires=1_700_043_200_000,
        ),
        f.AuthRequest(id="5", account_id=CLIENT_ID, token="tok_0123456789abcdef", sig=auth_sig),
        f.Welcome(
            id="5",
            account_id=CLIENT_ID,
            handle="alice",
            role="client",
            session_id="sess-0001",
            cases=[case],
        ),
        f.CaseOpen(id="6", topic="anxiety", language="en"),
        f.CaseOpened(id="6", case=case),
        f.CaseAssigned(case=case),
        f.CaseKeyDeposit(
            id="7",
            case_id=CASE_ID,
            epoch=EPOCH,
            commitment=commitment,
            commitment_sig=commitment_sig,
            escrow=crypto.NO_ESCROW,
            seals=[f.KeySeal(account_id=COUNSELOR_ID, sealed=sealed)],
        ),
        f.Ok(id="7"),
        f.CaseKeyNew(case_id=CASE_ID, epoch=EPOCH),
        f.CaseKeys(id="8", case_id=CASE_ID),
        f.CaseKeysResult(
            id="8",
            case_id=CASE_ID,
            keys=[
                f.EpochKey(
                    epoch=EPOCH,
                    creator_id=CLIENT_ID,
                    commitment=commitment,
                    commitment_sig=commitment_sig,
                    escrow=crypto.NO_ESCROW,
                    sealed=sealed,
                    sealed_for=[CLIENT_ID, COUNSELOR_ID],
                )
            ],
        ),
        f.CaseKeyShare(
            id="8s",
            case_id=CASE_ID,
            epoch=EPOCH,
            seal=f.KeySeal(account_id=COUNSELOR_ID, sealed=sealed),
        ),
        f.MsgSend(
            id="9",
            case_id=CASE_ID,
            epoch=EPOCH,
            client_msg_id=first.client_msg_id,
            nonce=first.nonce,
            ciphertext=first.ciphertext,
        ),
        f.MsgAck(
            id="9",
            case_id=CASE_ID,
            client_msg_id=first.client_msg_id,
            seq=first.seq,
            chain_hash=first.chain_hash,
            duplicate=False,
        ),
        f.MsgNew(message=first),
        f.Sync(id="10", case_id=CASE_ID, after_seq=0, limit=500),
        f.SyncResult(
            id="10",
            case_id=CASE_ID,
            messages=records,
            last_seq=len(records),
            has_more=False,
            receipts=[receipt],
        ),
        f.Receipt(
            id="11",
            case_id=CASE_ID,
            kind="read",
            up_to_seq=receipt.up_to_seq,
            chain_hash=receipt.chain_hash,
            sig=receipt.sig,
        ),
        f.ReceiptNew(
            case_id=CASE_ID,
            account_id=COUNSELOR_ID,
            kind="read",
            up_to_seq=receipt.up_to_seq,
            chain_hash=receipt.chain_hash,
            sig=receipt.sig,
        ),
        f.Typing(id="12", case_id=CASE_ID, active=True),
        f.TypingNew(case_id=CASE_ID, account_id=COUNSELOR_ID, active=True),
        f.DirectoryGet(id="13", account_ids=[COUNSELOR_ID]),
        f.DirectoryResult(
            id="13",
            entries=[
                f.DirectoryEntry(
                    account_id=COUNSELOR_ID,
                    handle="carol",
                    role="counselor",
                    sign_pk=cert.sign_pk,
                    box_pk=cert.box_pk,
                    box_sig=_counselor_box_sig(),
                    cert=cert,
                )
            ],
        ),
        f.CaseList(id="14"),
        f.CaseListResult(id="14", cases=[case]),
        f.CaseClose(id="15", case_id=CASE_ID),
        f.CaseClosed(case_id=CASE_ID),
        f.CaseQueue(
            case_id=CASE_ID,
            queue=f.QueueInfo(position=2, counselors_online=1, specialists_online=0),
        ),
        f.Ping(id="16"),
        f.Pong(id="16"),
        f.ErrorFrame(code="forbidden", message="case is closed", id="17"),
        f.ErrorFrame(code="malformed", message="frame is not valid JSON", id=None),
        f.Logout(id="18"),
        f.AccountAttest(id="24", box_sig=crypto.sign_box_key(client)),
        f.PrefsGet(id="25"),
        f.PrefsResult(id="25", blob=None, version=0),
        f.PrefsPut(id="26", blob=prefs_blob, version=0),
        f.PrefsResult(id="26", blob=prefs_blob, version=1),
        *_escrow_frames(client, commitment, commitment_sig, sealed),
    ]
    out: dict[str, str] = {}
    for frame in frames:
        name = str(type(frame).__struct_config__.tag)
        if name in out:  # a second example of a type: without an id, or a later answer
            name += ".no_id" if getattr(frame, "id", None) is None else ".2"
        out[name] = frame_text(frame)
    return out


# Escrow frames (docs/DISPUTES.md): a 1-of-1 policy with fixed keys; the capsule and the
# sealed reason use the fixed-ephemeral SealedBox above, so they too are deterministic.
OFFICER_SIGN_SEED = _seq(0x70, 32)
OFFICER_BOX_SECRET = _seq(0x90, 32)
ORG_SIGN_SEED = _seq(0xB0, 32)


def _counselor_box_sig() -> bytes:
    return crypto.sign_box_key(identity(COUNSELOR_SIGN_SEED, COUNSELOR_BOX_SECRET))


def _escrow_frames(
    client: crypto.Identity, commitment: bytes, commitment_sig: bytes, sealed: bytes
) -> list[msgspec.Struct]:
    from nacl.signing import SigningKey

    from protocol import escrow

    officer = identity(OFFICER_SIGN_SEED, OFFICER_BOX_SECRET)
    org = SigningKey(ORG_SIGN_SEED)
    policy = escrow.sign_policy(
        org,
        f.EscrowPolicy(
            version=1,
            officers=[
                f.EscrowOfficer(name="officer1", box_pk=officer.box_pk, sign_pk=officer.sign_pk)
            ],
            threshold=1,
            not_before=1_699_000_000_000,
            not_after=1_731_000_000_000,
            org_sign_pk=bytes(org.verify_key),
        ),
    )
    fp = escrow.policy_fingerprint(policy.policy)
    binding = crypto.lp(b"chat.capsule.v1", CASE_ID.encode(), crypto.u64(EPOCH), CASE_KEY)
    capsule = f.Capsule(
        policy_fingerprint=fp,
        subsets=[
            f.CapsuleLayer(
                officers=[0],
                sealed=sealed_box_with_ephemeral(binding, officer.box_pk, SEAL_EPHEMERAL_SECRET),
            )
        ],
    )
    reason = [sealed_box_with_ephemeral(b"unfair treatment", officer.box_pk, SEAL_EPHEMERAL_SECRET)]
    ts = 1_700_000_100_000
    info = f.DisputeInfo(request_id="dsp_0001", case_id=CASE_ID, state="pending", created_at=ts)
    return [
        f.PolicyGet(id="19"),
        f.PolicyResult(id="19", policy=policy, terms_version=1, consented=False),
        f.ConsentAccept(
            id="20",
            terms_version=1,
            policy_fingerprint=fp,
            sig=escrow.sign_consent(client, CLIENT_ID, 1, fp),
        ),
        f.CaseCapsule(id="21", case_id=CASE_ID, epoch=EPOCH, capsule=capsule),
        f.DisputeRequest(
            id="22",
            case_id=CASE_ID,
            timestamp=ts,
            policy_fingerprint=fp,
            reason_ct=reason,
            sig=escrow.sign_dispute(client, CASE_ID, "all", ts, fp, reason),
        ),
        f.DisputeCreated(id="22", dispute=info),
        f.DisputeList(id="23"),
        f.DisputeListResult(id="23", disputes=[info]),
        f.DisputeUpdated(dispute=msgspec.structs.replace(info, state="approved")),
    ]


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    web_ok = make_web_protocol.check()
    if args.check:
        if not web_ok:
            print(f"{make_web_protocol.OUTPUT} is out of date: run scripts/make_vectors.py")
            return 1
        print(f"{make_web_protocol.OUTPUT} is up to date")
    elif not web_ok:
        make_web_protocol.write()
        print(f"wrote {make_web_protocol.OUTPUT}")
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    str(args.output),
                    "regenerated",
                    n=1,
                )
            )
            print(f"{args.output} is out of date: run scripts/make_vectors.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
