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

from protocol import PROTOCOL_VERSION, chain, codec, crypto, opening  # noqa: E402
from protocol import frames as f  # noqa: E402
from scripts import make_web_protocol  # noqa: E402

OUTPUT = ROOT / "docs" / "test-vectors.json"
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
    for seq, (who, cmid, body, ts, nonce) in enumerate(MESSAGES, start=1):
        sender, sender_id = people[who]
        env = crypto.Envelope(body=body, ts=ts, client_msg_id=cmid)
        envelope_json = msgspec.json.encode(env)
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
                "inner_plaintext": hx(sig + envelope_json),
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
        },
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
            client, keys, wrapped, auth_sig, commitment, commitment_sig, sealed, records, server
        ),
    }


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
                )
            ],
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
            id="10", case_id=CASE_ID, messages=records, last_seq=len(records), has_more=False
        ),
        f.Receipt(id="11", case_id=CASE_ID, kind="read", up_to_seq=3),
        f.ReceiptNew(case_id=CASE_ID, account_id=COUNSELOR_ID, kind="read", up_to_seq=3),
        f.Typing(id="12", case_id=CASE_ID, active=True),
        f.TypingNew(case_id=CASE_ID, account_id=COUNSELOR_ID, active=True),
        f.DirectoryGet(id="13", account_ids=[COUNSELOR_ID]),
        f.DirectoryResult(
            id="13",
            entries=[
                f.DirectoryEntry(
                    account_id=CLIENT_ID,
                    handle="alice",
                    role="client",
                    sign_pk=client.sign_pk,
                    box_pk=client.box_pk,
                )
            ],
        ),
        f.CaseList(id="14"),
        f.CaseListResult(id="14", cases=[case]),
        f.CaseClose(id="15", case_id=CASE_ID),
        f.CaseClosed(case_id=CASE_ID),
        f.Ping(id="16"),
        f.Pong(id="16"),
        f.ErrorFrame(code="forbidden", message="case is closed", id="17"),
        f.ErrorFrame(code="malformed", message="frame is not valid JSON", id=None),
        f.Logout(id="18"),
        *_escrow_frames(client, commitment, commitment_sig, sealed),
    ]
    out: dict[str, str] = {}
    for frame in frames:
        name = str(type(frame).__struct_config__.tag)
        if name in out:
            name += ".no_id"
        out[name] = frame_text(frame)
    return out


# Escrow frames (docs/DISPUTES.md): a 1-of-1 policy with fixed keys; the capsule and the
# sealed reason use the fixed-ephemeral SealedBox above, so they too are deterministic.
OFFICER_SIGN_SEED = _seq(0x70, 32)
OFFICER_BOX_SECRET = _seq(0x90, 32)
ORG_SIGN_SEED = _seq(0xB0, 32)


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
