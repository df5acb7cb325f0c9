"""V2 section 5 on the client: a signed envelope in any but the one canonical encoding is
rejected as "noncanonical" by open_record (docs/test-vectors.json envelope_negative)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nacl.bindings
import pytest

from chat_client.casekeys import open_record
from protocol import crypto
from protocol.chain import GENESIS, chain_hash
from protocol.frames import CaseInfo, DirectoryEntry, MessageRecord

ROOT = Path(__file__).resolve().parents[2]
NEGATIVE = json.loads((ROOT / "docs" / "test-vectors.json").read_text())["envelope_negative"]
CASE = CaseInfo(
    case_id="case_1",
    client_id="acc_client",
    counselor_id="acc_counselor",
    state="assigned",
    topic="anxiety",
    language="en",
    epoch=1,
    last_seq=0,
    created_at=0,
)
SENDER = crypto.Identity.generate()
ENTRY = DirectoryEntry(
    account_id="acc_client",
    handle="client",
    role="client",
    sign_pk=SENDER.sign_pk,
    box_pk=SENDER.box_pk,
    box_sig=crypto.sign_box_key(SENDER),
)
CMID = "cmid-AAAAAAAAAAAAAAAA"  # the id the vectors' envelopes carry


def signed_record(key: bytes, envelope_bytes: bytes) -> MessageRecord:
    """A record whose (possibly malformed) envelope is really signed by the sender and
    encrypted under the case key: only the canonical-encoding check can refuse it."""
    sig = SENDER.sign(crypto.message_transcript("case_1", 1, CMID, "acc_client", envelope_bytes))
    padded = nacl.bindings.sodium_pad(sig + envelope_bytes, 1024)
    nonce = bytes(24)
    aad = crypto.message_aad("case_1", 1, "acc_client", CMID)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, aad, nonce, key)
    h = chain_hash(
        GENESIS,
        case_id="case_1",
        seq=1,
        epoch=1,
        sender_id="acc_client",
        client_msg_id=CMID,
        nonce=nonce,
        ciphertext=ct,
    )
    return MessageRecord(
        case_id="case_1",
        seq=1,
        epoch=1,
        sender_id="acc_client",
        client_msg_id=CMID,
        nonce=nonce,
        ciphertext=ct,
        chain_hash=h,
        server_ts=1,
    )


def test_canonical_envelope_verifies() -> None:
    key = crypto.new_case_key()
    envelope = crypto.Envelope(
        body="hi", ts=1, client_msg_id=CMID, prev_seq=0, prev_hash=bytes(32), n=1
    )
    record = signed_record(key, crypto.encode_envelope(envelope))
    message = open_record(record, case=CASE, key=key, sender=ENTRY, prev_hash=GENESIS)
    assert message.verified and message.body == "hi" and message.envelope == envelope


@pytest.mark.parametrize("vector", NEGATIVE, ids=[v["name"] for v in NEGATIVE])
def test_negative_vector_is_rejected_as_noncanonical(vector: dict[str, str]) -> None:
    key = crypto.new_case_key()
    record = signed_record(key, base64.b64decode(vector["bytes_b64"]))
    message = open_record(record, case=CASE, key=key, sender=ENTRY, prev_hash=GENESIS)
    assert not message.verified and message.body is None and message.envelope is None
    assert message.error is not None and message.error.startswith("noncanonical:"), vector
