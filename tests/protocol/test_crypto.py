"""Crypto envelope: round trips, and every way verification must fail."""

from __future__ import annotations

import dataclasses

import msgspec
import nacl.bindings
import nacl.hash
import nacl.secret
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.encoding import RawEncoder
from nacl.signing import SigningKey

from protocol import crypto, frames, opening
from protocol.crypto import Envelope, Identity
from protocol.errors import CryptoError, Noncanonical
from protocol.limits import MAX_CIPHERTEXT_BYTES, MAX_MESSAGE_CHARS, PADDING_BUCKETS

OPS, MEM = 1, 8192  # the cheapest Argon2id parameters the protocol accepts

ALICE = Identity.from_secret_bytes(bytes(range(64)))
BOB = Identity.from_secret_bytes(bytes(range(64, 128)))
MALLORY = Identity.from_secret_bytes(bytes(range(128, 192)))
KEY = bytes(range(100, 132))
CASE, EPOCH, SENDER, CMID = "case-1", 1, "acct-alice", "cmid-0001"

ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


def envelope(body: str = "hello", cmid: str = CMID) -> Envelope:
    return Envelope(
        body=body, ts=1_700_000_000_000, client_msg_id=cmid, prev_seq=0, prev_hash=bytes(32), n=1
    )


def encrypt(env: Envelope | None = None, **kw: object) -> tuple[bytes, bytes]:
    args: dict[str, object] = {"case_id": CASE, "epoch": EPOCH, "sender_id": SENDER}
    args.update(kw)
    return crypto.encrypt_message(KEY, ALICE, envelope=env or envelope(), **args)  # type: ignore[arg-type]


def decrypt(nonce: bytes, ciphertext: bytes, **kw: object) -> Envelope:
    args: dict[str, object] = {
        "case_key": KEY,
        "sender_sign_pk": ALICE.sign_pk,
        "case_id": CASE,
        "epoch": EPOCH,
        "sender_id": SENDER,
        "client_msg_id": CMID,
        "nonce": nonce,
        "ciphertext": ciphertext,
    }
    args.update(kw)
    return opening.decrypt_message(**args)  # type: ignore[arg-type]


def raw_seal(
    inner: bytes, cmid: str = CMID, nonce: bytes = bytes(24), *, padded: bool = False
) -> bytes:
    """Encrypt arbitrary inner plaintext under KEY with the AAD decrypt() expects,
    padded to its bucket unless ``padded`` says it already is."""
    aad = crypto.message_aad(CASE, EPOCH, SENDER, cmid)
    inner = inner if padded else crypto.pad(inner)
    return bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(inner, aad, nonce, KEY))


# -- encodings ---------------------------------------------------------------------


def test_lp_and_u64() -> None:
    assert crypto.lp() == b""
    assert crypto.lp(b"") == bytes(4)
    assert crypto.lp(b"ab", b"c") == b"\x00\x00\x00\x02ab\x00\x00\x00\x01c"
    assert crypto.lp(b"ab", b"c") != crypto.lp(b"a", b"bc")
    assert crypto.u64(1) == b"\x00" * 7 + b"\x01"
    assert crypto.u64(2**64 - 1) == b"\xff" * 8
    with pytest.raises(OverflowError):
        crypto.u64(-1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=4), st.lists(st.binary(max_size=8), max_size=4))
def test_lp_is_injective(a: list[bytes], b: list[bytes]) -> None:
    if a != b:
        assert crypto.lp(*a) != crypto.lp(*b)


# -- login keys ----------------------------------------------------------------------


def test_login_keys_are_deterministic_and_split() -> None:
    salt = bytes(16)
    keys = crypto.derive_login_keys("correct horse", salt, OPS, MEM)
    assert keys == crypto.derive_login_keys("correct horse", salt, OPS, MEM)
    assert len(keys.auth_key) == len(keys.wrap_key) == 32
    assert keys.auth_key != keys.wrap_key
    assert keys.auth_key.hex() not in repr(keys)
    assert crypto.derive_login_keys("correct horsf", salt, OPS, MEM) != keys
    assert crypto.derive_login_keys("correct horse", bytes(15) + b"\x01", OPS, MEM) != keys
    assert crypto.derive_login_keys("correct horse", salt, OPS + 1, MEM) != keys


def test_login_key_split_is_blake2b_keyed_by_the_argon2id_master() -> None:
    salt = bytes(range(16))
    master = nacl.bindings.crypto_pwhash_alg(
        32, b"pass", salt, OPS, MEM, nacl.bindings.crypto_pwhash_ALG_ARGON2ID13
    )
    keys = crypto.derive_login_keys("pass", salt, OPS, MEM)
    for person, value in (
        (b"chat-auth-key-v1", keys.auth_key),
        (b"chat-wrap-key-v1", keys.wrap_key),
    ):
        assert value == nacl.hash.blake2b(
            b"", digest_size=32, key=master, person=person, encoder=RawEncoder
        )


def test_new_salt() -> None:
    assert len(crypto.new_salt()) == 16
    assert crypto.new_salt() != crypto.new_salt()


# -- identity and wrapping -----------------------------------------------------------


def test_identity() -> None:
    fresh = Identity.generate()
    assert len(fresh.sign_pk) == len(fresh.box_pk) == 32
    assert Identity.from_secret_bytes(fresh.secret_bytes()).sign_pk == fresh.sign_pk
    assert fresh.secret_bytes().hex() not in repr(fresh)
    assert Identity.generate().sign_pk != fresh.sign_pk
    # The box key is independent of the signing key (not its Curve25519 conversion).
    assert ALICE.box_pk != bytes(ALICE.signing_key.verify_key.to_curve25519_public_key())


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_identity_secret_must_be_64_bytes(size: int) -> None:
    with pytest.raises(CryptoError, match="64 bytes"):
        Identity.from_secret_bytes(bytes(size))


def test_wrap_round_trip() -> None:
    wrap_key = bytes(range(32))
    blob = crypto.wrap_identity(ALICE, wrap_key)
    assert len(blob) == 104
    assert opening.unwrap_identity(blob, wrap_key).secret_bytes() == ALICE.secret_bytes()
    assert crypto.wrap_identity(ALICE, wrap_key) != blob  # random nonce
    fixed = crypto.wrap_identity(ALICE, wrap_key, nonce=bytes(24))
    assert fixed[:24] == bytes(24)
    assert fixed == crypto.wrap_identity(ALICE, wrap_key, nonce=bytes(24))


def test_unwrap_with_the_wrong_key() -> None:
    blob = crypto.wrap_identity(ALICE, bytes(32))
    with pytest.raises(CryptoError, match="wrong passphrase"):
        opening.unwrap_identity(blob, bytes(31) + b"\x01")


@pytest.mark.parametrize("index", [0, 23, 24, 40, 103])
def test_unwrap_a_corrupted_blob(index: int) -> None:
    blob = bytearray(crypto.wrap_identity(ALICE, bytes(32)))
    blob[index] ^= 1
    with pytest.raises(CryptoError):
        opening.unwrap_identity(bytes(blob), bytes(32))


@pytest.mark.parametrize("blob", [b"", bytes(23), bytes(40)])
def test_unwrap_a_truncated_blob(blob: bytes) -> None:
    with pytest.raises(CryptoError):
        opening.unwrap_identity(blob, bytes(32))


def test_unwrap_a_blob_of_the_wrong_length() -> None:
    blob = bytes(nacl.secret.SecretBox(bytes(32)).encrypt(bytes(63)))
    with pytest.raises(CryptoError, match="64 bytes"):
        opening.unwrap_identity(blob, bytes(32))


def test_verify_signature() -> None:
    sig = ALICE.sign(b"m")
    crypto.verify_signature(ALICE.sign_pk, b"m", sig)
    for pk, msg, bad_sig in [
        (BOB.sign_pk, b"m", sig),
        (ALICE.sign_pk, b"n", sig),
        (ALICE.sign_pk, b"m", bytes(64)),
        (ALICE.sign_pk, b"m", sig[:63]),
        (ALICE.sign_pk[:31], b"m", sig),
    ]:
        with pytest.raises(CryptoError, match="signature does not verify"):
            crypto.verify_signature(pk, msg, bad_sig)


def test_fingerprint() -> None:
    fp = crypto.fingerprint(ALICE.sign_pk)
    groups = fp.split(" ")
    assert len(groups) == 10
    assert all(len(g) == 4 and int(g, 16) >= 0 for g in groups)
    assert fp == crypto.fingerprint(ALICE.sign_pk)
    assert fp != crypto.fingerprint(BOB.sign_pk)
    digest = nacl.hash.blake2b(
        ALICE.sign_pk, digest_size=20, person=b"chat-fingerprnt1", encoder=RawEncoder
    )
    assert fp.replace(" ", "") == digest.hex()


# -- connection auth -------------------------------------------------------------------


def test_challenge() -> None:
    nonce = bytes(range(32))
    assert crypto.auth_transcript(nonce, "acct") == crypto.lp(b"chat.auth.v1", nonce, b"acct")
    sig = crypto.sign_challenge(ALICE, nonce, "acct")
    crypto.verify_challenge(ALICE.sign_pk, nonce, "acct", sig)


@pytest.mark.parametrize(
    ("pk", "nonce", "account"),
    [
        (BOB.sign_pk, bytes(range(32)), "acct"),
        (ALICE.sign_pk, bytes(range(1, 33)), "acct"),
        (ALICE.sign_pk, bytes(range(32)), "acct2"),
    ],
    ids=["other-identity", "other-nonce", "other-account"],
)
def test_challenge_signature_is_bound_to_nonce_account_and_key(
    pk: bytes, nonce: bytes, account: str
) -> None:
    sig = crypto.sign_challenge(ALICE, bytes(range(32)), "acct")
    with pytest.raises(CryptoError):
        crypto.verify_challenge(pk, nonce, account, sig)


# -- case keys -----------------------------------------------------------------------


def test_case_key_seal_and_open() -> None:
    k = crypto.new_case_key()
    assert len(k) == 32 and k != crypto.new_case_key()
    commitment = crypto.key_commitment(k, CASE, EPOCH)
    sealed = crypto.seal_case_key(k, BOB.box_pk)
    assert len(sealed) == 80
    assert crypto.seal_case_key(k, BOB.box_pk) != sealed  # ephemeral key per seal
    assert opening.open_case_key(sealed, BOB, CASE, EPOCH, commitment) == k


def test_sealed_key_to_the_wrong_recipient() -> None:
    sealed = crypto.seal_case_key(KEY, BOB.box_pk)
    commitment = crypto.key_commitment(KEY, CASE, EPOCH)
    with pytest.raises(CryptoError, match="does not open"):
        opening.open_case_key(sealed, ALICE, CASE, EPOCH, commitment)


@pytest.mark.parametrize("sealed", [b"", bytes(47), bytes(80)])
def test_garbage_sealed_key(sealed: bytes) -> None:
    with pytest.raises(CryptoError, match="does not open"):
        opening.open_case_key(sealed, BOB, CASE, EPOCH, bytes(32))


@pytest.mark.parametrize(
    ("case_id", "epoch", "key"),
    [("case-2", EPOCH, KEY), (CASE, EPOCH + 1, KEY), (CASE, EPOCH, bytes(32))],
    ids=["other-case", "other-epoch", "other-key"],
)
def test_commitment_mismatch(case_id: str, epoch: int, key: bytes) -> None:
    """A key committed for another case or epoch (or another key) is refused."""
    sealed = crypto.seal_case_key(KEY, BOB.box_pk)
    commitment = crypto.key_commitment(key, case_id, epoch)
    with pytest.raises(CryptoError, match="commitment"):
        opening.open_case_key(sealed, BOB, CASE, EPOCH, commitment)


def test_commitment_is_keyed_blake2b() -> None:
    expected = nacl.hash.blake2b(
        crypto.lp(CASE.encode(), crypto.u64(EPOCH)),
        digest_size=32,
        key=KEY,
        person=b"chat-key-commit1",
        encoder=RawEncoder,
    )
    assert crypto.key_commitment(KEY, CASE, EPOCH) == expected


def test_commitment_signature() -> None:
    c = crypto.key_commitment(KEY, CASE, EPOCH)
    fp = "abcd " * 9 + "abcd"
    sig = crypto.sign_commitment(ALICE, CASE, EPOCH, c, escrow=fp)
    crypto.verify_commitment(ALICE.sign_pk, CASE, EPOCH, c, sig, escrow=fp)
    for pk, case_id, epoch, commitment, escrow in [
        (BOB.sign_pk, CASE, EPOCH, c, fp),
        (ALICE.sign_pk, "case-2", EPOCH, c, fp),
        (ALICE.sign_pk, CASE, 2, c, fp),
        (ALICE.sign_pk, CASE, EPOCH, bytes(32), fp),
        # The escrow binding is signed: no other policy, and not "none".
        (ALICE.sign_pk, CASE, EPOCH, c, crypto.NO_ESCROW),
        (ALICE.sign_pk, CASE, EPOCH, c, "dcba " * 9 + "dcba"),
    ]:
        with pytest.raises(CryptoError):
            crypto.verify_commitment(pk, case_id, epoch, commitment, sig, escrow=escrow)


# -- messages ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    body=st.text(max_size=MAX_MESSAGE_CHARS),
    case_id=ids,
    epoch=st.integers(min_value=1, max_value=2**31),
    sender_id=ids,
    cmid=ids,
    ts=st.integers(min_value=0, max_value=2**53),
    prev_seq=st.integers(min_value=0, max_value=2**53),
    prev_hash=st.binary(min_size=32, max_size=32),
    n=st.integers(min_value=1, max_value=2**53),
)
def test_message_round_trip(
    body: str,
    case_id: str,
    epoch: int,
    sender_id: str,
    cmid: str,
    ts: int,
    prev_seq: int,
    prev_hash: bytes,
    n: int,
) -> None:
    env = Envelope(
        body=body, ts=ts, client_msg_id=cmid, prev_seq=prev_seq, prev_hash=prev_hash, n=n
    )
    encoded = msgspec.json.encode(env)
    if 64 + len(encoded) >= PADDING_BUCKETS[-1]:  # long bodies of multi-byte characters
        with pytest.raises(ValueError, match="encoded message exceeds"):
            crypto.encrypt_message(
                KEY, ALICE, case_id=case_id, epoch=epoch, sender_id=sender_id, envelope=env
            )
        return
    nonce, ct = crypto.encrypt_message(
        KEY, ALICE, case_id=case_id, epoch=epoch, sender_id=sender_id, envelope=env
    )
    assert len(nonce) == 24
    bucket = min(b for b in PADDING_BUCKETS if b > 64 + len(encoded))
    assert len(ct) == bucket + 16 <= MAX_CIPHERTEXT_BYTES
    got = opening.decrypt_message(
        KEY,
        ALICE.sign_pk,
        case_id=case_id,
        epoch=epoch,
        sender_id=sender_id,
        client_msg_id=cmid,
        nonce=nonce,
        ciphertext=ct,
    )
    assert got == env


def test_longest_plain_message_fits() -> None:
    body = "x" * MAX_MESSAGE_CHARS
    nonce, ct = encrypt(envelope(body))
    assert len(ct) == PADDING_BUCKETS[-1] + 16 <= MAX_CIPHERTEXT_BYTES
    assert decrypt(nonce, ct).body == body


def test_a_body_too_long_in_bytes_is_refused_before_signing() -> None:
    # 4 UTF-8 bytes per character: within MAX_MESSAGE_CHARS, beyond the largest bucket.
    with pytest.raises(ValueError, match="encoded message exceeds 16383 bytes"):
        encrypt(envelope("\U0001f600" * 5000))


@pytest.mark.parametrize("body_len", [0, 1, 100, 130, 200, 1000, 5000, 8000])
def test_ciphertext_length_is_a_bucket(body_len: int) -> None:
    nonce, ct = encrypt(envelope("y" * body_len))
    assert len(ct) - 16 in PADDING_BUCKETS
    assert decrypt(nonce, ct).body == "y" * body_len


def test_pad_uses_the_smallest_bucket_with_room_for_the_marker() -> None:
    assert crypto.pad(b"") == b"\x80" + bytes(255)
    assert len(crypto.pad(bytes(255))) == 256
    assert len(crypto.pad(bytes(256))) == 512  # 256 leaves no room for the marker
    assert crypto.pad(b"ab")[:3] == b"ab\x80"
    assert len(crypto.pad(bytes(16383))) == 16384
    with pytest.raises(ValueError, match="exceeds"):
        crypto.pad(bytes(16384))


def test_unpadded_or_wrongly_padded_plaintext_is_refused() -> None:
    inner = _signed_inner(crypto.encode_envelope(envelope()))
    with pytest.raises(CryptoError, match="not padded to a size bucket"):
        decrypt(bytes(24), raw_seal(inner, padded=True))  # no padding at all
    with pytest.raises(CryptoError, match="not padded to a size bucket"):
        decrypt(bytes(24), raw_seal(inner + b"\x80" + bytes(300 - len(inner) - 1), padded=True))
    with pytest.raises(CryptoError, match="padding is malformed"):
        decrypt(bytes(24), raw_seal(inner + bytes(256 - len(inner)), padded=True))  # no marker


def test_message_too_long() -> None:
    with pytest.raises(ValueError, match="longer than 8000"):
        encrypt(envelope("x" * (MAX_MESSAGE_CHARS + 1)))


def test_message_whose_encoding_is_too_big() -> None:
    with pytest.raises(ValueError, match="encoded message exceeds"):
        encrypt(envelope("\x01" * MAX_MESSAGE_CHARS))  # each becomes \u0001 in JSON


def test_nonce_is_random_unless_given() -> None:
    n1, c1 = encrypt()
    n2, c2 = encrypt()
    assert n1 != n2 and c1 != c2
    fixed = bytes(range(24))
    assert encrypt(nonce=fixed) == encrypt(nonce=fixed)
    assert encrypt(nonce=fixed)[0] == fixed


def test_ciphertext_layout() -> None:
    """Inner plaintext is sig(64) || envelope JSON; AAD is the routing header."""
    env = envelope("layout")
    nonce, ct = encrypt(env)
    aad = crypto.lp(
        b"chat.msg.v1", CASE.encode(), crypto.u64(EPOCH), SENDER.encode(), CMID.encode()
    )
    assert crypto.message_aad(CASE, EPOCH, SENDER, CMID) == aad
    inner = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, KEY)
    assert len(inner) == 256 and inner.rstrip(b"\x00").endswith(b"}\x80")
    inner = inner.rstrip(b"\x00")[:-1]
    sig, body = inner[:64], inner[64:]
    assert body == (
        b'{"kind":"text","body":"layout","ts":1700000000000,"client_msg_id":"cmid-0001",'
        b'"prev_seq":0,"prev_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","n":1}'
    )
    digest = nacl.hash.blake2b(body, digest_size=32, person=b"chat-msg-hash-v1", encoder=RawEncoder)
    transcript = crypto.lp(
        b"chat.msgsig.v1", CASE.encode(), crypto.u64(EPOCH), CMID.encode(), SENDER.encode(), digest
    )
    crypto.verify_signature(ALICE.sign_pk, transcript, sig)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_flipped_ciphertext_byte(data: st.DataObject) -> None:
    nonce, ct = encrypt()
    index = data.draw(st.integers(min_value=0, max_value=len(ct) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    altered = bytearray(ct)
    altered[index] ^= 1 << bit
    with pytest.raises(CryptoError, match="does not decrypt"):
        decrypt(nonce, bytes(altered))


def test_flipped_nonce_or_truncated_ciphertext() -> None:
    nonce, ct = encrypt()
    with pytest.raises(CryptoError):
        decrypt(bytes([nonce[0] ^ 1]) + nonce[1:], ct)
    with pytest.raises(CryptoError):
        decrypt(nonce, ct[:-1])
    with pytest.raises(CryptoError):
        decrypt(nonce, b"")


def test_wrong_key() -> None:
    nonce, ct = encrypt()
    with pytest.raises(CryptoError, match="does not decrypt"):
        decrypt(nonce, ct, case_key=bytes(32))


@pytest.mark.parametrize(
    "field",
    [
        {"case_id": "case-2"},
        {"case_id": "case-1 "},
        {"epoch": 2},
        {"sender_id": "acct-bob"},
        {"client_msg_id": "cmid-0002"},
    ],
    ids=["case", "case-suffix", "epoch", "sender", "client_msg_id"],
)
def test_wrong_aad_field(field: dict[str, object]) -> None:
    nonce, ct = encrypt()
    with pytest.raises(CryptoError, match="does not decrypt"):
        decrypt(nonce, ct, **field)


def test_signature_by_another_identity() -> None:
    nonce, ct = crypto.encrypt_message(
        KEY, MALLORY, case_id=CASE, epoch=EPOCH, sender_id=SENDER, envelope=envelope()
    )
    with pytest.raises(CryptoError, match="signature does not verify"):
        decrypt(nonce, ct)  # claims to be from ALICE
    assert decrypt(nonce, ct, sender_sign_pk=MALLORY.sign_pk) == envelope()


def test_verified_under_the_wrong_public_key() -> None:
    nonce, ct = encrypt()
    with pytest.raises(CryptoError, match="signature does not verify"):
        decrypt(nonce, ct, sender_sign_pk=BOB.sign_pk)


def _signed_inner(envelope_bytes: bytes, signed_cmid: str = CMID) -> bytes:
    digest = nacl.hash.blake2b(
        envelope_bytes, digest_size=32, person=b"chat-msg-hash-v1", encoder=RawEncoder
    )
    transcript = crypto.lp(
        b"chat.msgsig.v1",
        CASE.encode(),
        crypto.u64(EPOCH),
        signed_cmid.encode(),
        SENDER.encode(),
        digest,
    )
    return ALICE.sign(transcript) + envelope_bytes


def test_envelope_client_msg_id_mismatch() -> None:
    """A sender cannot reuse one signed envelope under another message's header."""
    inner = _signed_inner(crypto.encode_envelope(envelope(cmid="cmid-other")))
    with pytest.raises(CryptoError, match="another message"):
        decrypt(bytes(24), raw_seal(inner))


@pytest.mark.parametrize(
    "envelope_bytes",
    [
        b"not json",
        b"[]",
        b'{"kind":"text","body":"x","ts":1}',
        b'{"kind":"text","body":"x","ts":1,"client_msg_id":"cmid-0001"}',  # a v1 envelope
        b'{"kind":"image","body":"x","ts":1,"client_msg_id":"cmid-0001"}',
        b'{"kind":"text","body":"x","ts":1,"client_msg_id":"cmid-0001","extra":1}',
        b"\xff",
    ],
)
def test_signed_but_malformed_envelope(envelope_bytes: bytes) -> None:
    with pytest.raises(Noncanonical, match="malformed"):
        decrypt(bytes(24), raw_seal(_signed_inner(envelope_bytes)))


def test_signed_but_noncanonical_envelope() -> None:
    good = crypto.encode_envelope(envelope())
    spaced = good.replace(b'"kind":"text"', b'"kind": "text"')
    with pytest.raises(Noncanonical, match="not in the canonical encoding"):
        decrypt(bytes(24), raw_seal(_signed_inner(spaced)))
    assert decrypt(bytes(24), raw_seal(_signed_inner(good))) == envelope()


def test_decode_envelope_round_trips_and_rejects_re_encodings() -> None:
    env = envelope('caf\u00e9 \U0001f642 "q"\n')
    data = crypto.encode_envelope(env)
    assert crypto.decode_envelope(data) == env
    assert b"\xc3\xa9" in data  # non-ASCII stays raw UTF-8; only JSON's escapes are used
    for bad in (
        data.replace(b"\xc3\xa9", b"\\u00e9"),
        data.replace(b'"ts":1700000000000', b'"ts":1700000000000.0'),
        data + b" ",
    ):
        with pytest.raises(Noncanonical):
            crypto.decode_envelope(bad)


def test_inner_plaintext_shorter_than_a_signature() -> None:
    with pytest.raises(CryptoError, match="signature"):
        decrypt(bytes(24), raw_seal(b"short"))


def test_envelope_defaults_and_is_frozen() -> None:
    env = envelope()
    assert env.kind == "text"
    with pytest.raises(AttributeError):
        env.body = "x"  # type: ignore[misc]
    assert dataclasses.is_dataclass(crypto.LoginKeys)


def test_the_server_key_signs_and_cannot_open() -> None:
    key = crypto.ServerKey.from_seed(bytes(range(32)))
    assert key.sign_pk == bytes(SigningKey(bytes(range(32))).verify_key)
    sig = key.sign(b"transcript")
    crypto.verify_signature(key.sign_pk, b"transcript", sig)
    # Nothing is ever sealed to the hub: its key type has no box key to open with.
    assert not hasattr(key, "box_key") and not hasattr(key, "box_pk")
    with pytest.raises(CryptoError, match="32 bytes"):
        crypto.ServerKey.from_seed(bytes(31))


# -- version 2: box key signature, fingerprint, safety number, certificates ----------


def test_box_key_signature() -> None:
    sig = crypto.sign_box_key(ALICE)
    crypto.verify_box_key(ALICE.sign_pk, ALICE.box_pk, sig)
    assert crypto.box_key_transcript(ALICE.sign_pk, ALICE.box_pk) == crypto.lp(
        b"chat.boxkey.v2", ALICE.sign_pk, ALICE.box_pk
    )
    for sign_pk, box_pk, bad_sig in [
        (ALICE.sign_pk, MALLORY.box_pk, sig),  # a swapped box key
        (MALLORY.sign_pk, ALICE.box_pk, sig),
        (ALICE.sign_pk, ALICE.box_pk, crypto.sign_box_key(MALLORY)),
        (ALICE.sign_pk, ALICE.box_pk, bytes(64)),
    ]:
        with pytest.raises(CryptoError, match="signature does not verify"):
            crypto.verify_box_key(sign_pk, box_pk, bad_sig)


def test_fingerprint_v2_covers_both_keys() -> None:
    fp = crypto.fingerprint_v2(ALICE.sign_pk, ALICE.box_pk)
    groups = fp.split(" ")
    assert len(groups) == 8 and all(len(g) == 5 for g in groups)
    assert int("".join(groups), 16) >= 0
    assert crypto.fingerprint_v2(ALICE.sign_pk, MALLORY.box_pk) != fp
    assert crypto.fingerprint_v2(MALLORY.sign_pk, ALICE.box_pk) != fp
    assert crypto.fingerprint_v2(ALICE.box_pk, ALICE.sign_pk) != fp


def test_safety_number_is_symmetric_and_covers_both_keys() -> None:
    a, b = (ALICE.sign_pk, ALICE.box_pk), (BOB.sign_pk, BOB.box_pk)
    number = crypto.safety_number(a, b)
    assert number == crypto.safety_number(b, a)
    groups = number.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert crypto.safety_number(a, (BOB.sign_pk, MALLORY.box_pk)) != number


def cert_for(ident: Identity = BOB, **kw: object) -> frames.CounselorCert:
    args: dict[str, object] = {
        "account_id": "acct-bob",
        "handle": "bob",
        "sign_pk": ident.sign_pk,
        "box_pk": ident.box_pk,
        "issued_at": 1_700_000_000_000,
    }
    args.update(kw)
    return crypto.sign_counselor_cert(ORG_KEY, **args)  # type: ignore[arg-type]


ORG_KEY = crypto.ServerKey.from_seed(bytes(range(200, 232)))


def test_counselor_cert() -> None:
    cert = cert_for()
    assert isinstance(cert, frames.CounselorCert)
    assert cert.org_sign_pk == ORG_KEY.sign_pk
    crypto.verify_counselor_cert(cert, ORG_KEY.sign_pk)
    crypto.verify_counselor_cert(
        cert, ORG_KEY.sign_pk, account_id="acct-bob", sign_pk=BOB.sign_pk, box_pk=BOB.box_pk
    )
    with pytest.raises(CryptoError, match="another organisation key"):
        crypto.verify_counselor_cert(cert, MALLORY.sign_pk)
    with pytest.raises(CryptoError, match="another account"):
        crypto.verify_counselor_cert(cert, ORG_KEY.sign_pk, account_id="acct-mallory")
    with pytest.raises(CryptoError, match="another identity key"):
        crypto.verify_counselor_cert(cert, ORG_KEY.sign_pk, sign_pk=MALLORY.sign_pk)
    with pytest.raises(CryptoError, match="another box key"):
        crypto.verify_counselor_cert(cert, ORG_KEY.sign_pk, box_pk=MALLORY.box_pk)
    changes: list[tuple[str, object]] = [
        ("handle", "mallory"),
        ("box_pk", MALLORY.box_pk),
        ("issued_at", 1),
        ("account_id", "acct-other"),
        ("sig", bytes(64)),
    ]
    for field, value in changes:
        forged = msgspec.structs.replace(cert, **{field: value})
        with pytest.raises(CryptoError, match="signature does not verify"):
            crypto.verify_counselor_cert(forged, ORG_KEY.sign_pk)
    # An org-key swap inside the cert is caught by comparing with the pinned key.
    self_signed = crypto.sign_counselor_cert(
        crypto.ServerKey.from_seed(bytes(32)),
        account_id="acct-bob",
        handle="bob",
        sign_pk=BOB.sign_pk,
        box_pk=BOB.box_pk,
        issued_at=1,
    )
    with pytest.raises(CryptoError, match="another organisation key"):
        crypto.verify_counselor_cert(self_signed, ORG_KEY.sign_pk)


def test_receipt_signature() -> None:
    chain = bytes(range(32))
    sig = crypto.sign_receipt(ALICE, CASE, "read", 7, chain)
    receipt = frames.SignedReceipt(
        account_id="a", kind="read", up_to_seq=7, chain_hash=chain, sig=sig
    )
    crypto.verify_receipt(ALICE.sign_pk, CASE, receipt)
    assert crypto.receipt_transcript(CASE, "read", 7, chain) == crypto.lp(
        b"chat.receipt.v2", CASE.encode(), b"read", crypto.u64(7), chain
    )
    for bad in [
        msgspec.structs.replace(receipt, kind="delivered"),
        msgspec.structs.replace(receipt, up_to_seq=8),
        msgspec.structs.replace(receipt, chain_hash=bytes(32)),
    ]:
        with pytest.raises(CryptoError):
            crypto.verify_receipt(ALICE.sign_pk, CASE, bad)
    with pytest.raises(CryptoError):
        crypto.verify_receipt(BOB.sign_pk, CASE, receipt)
    with pytest.raises(CryptoError):
        crypto.verify_receipt(ALICE.sign_pk, "case-2", receipt)


def test_prefs_blob_round_trip() -> None:
    keys = crypto.derive_login_keys("pass", bytes(16), OPS, MEM)
    assert len({keys.auth_key, keys.wrap_key, keys.prefs_key}) == 3
    blob = crypto.seal_prefs(keys.prefs_key, b'{"pins":{}}')
    assert len(blob) == 24 + 16 + 11
    assert opening.open_prefs(keys.prefs_key, blob) == b'{"pins":{}}'
    assert crypto.seal_prefs(keys.prefs_key, b"x") != crypto.seal_prefs(keys.prefs_key, b"x")
    fixed = bytes(range(24))
    assert crypto.seal_prefs(keys.prefs_key, b"x", fixed)[:24] == fixed
    altered = blob[:-1] + bytes([blob[-1] ^ 1])
    for bad_key, bad_blob in [
        (keys.wrap_key, blob),
        (keys.prefs_key, altered),
        (keys.prefs_key, blob[:10]),
    ]:
        with pytest.raises(CryptoError, match="preferences blob does not decrypt"):
            opening.open_prefs(bad_key, bad_blob)
