"""The crypto envelope, as pure functions over bytes (PyNaCl / libsodium only).

Constructions (docs/PROTOCOL.md, "Cryptography", gives the exact byte layouts):

* Login keys: Argon2id(passphrase, salt) -> master; BLAKE2b keyed by master with
  personalisations ``chat-auth-key-v1`` / ``chat-wrap-key-v1`` / ``chat-prefs-key-2`` ->
  auth_key, wrap_key, prefs_key. The server only ever sees auth_key (and stores an
  Argon2id hash of it).
* Identity: an Ed25519 signing key and an independent X25519 box key, wrapped together
  with SecretBox (XSalsa20-Poly1305) under wrap_key. The identity key signs the box key
  (``box_sig``); the fingerprint and the safety number cover both keys.
* Counselor certificate: the organisation key signs (account, handle, both keys, time).
* Preferences blob: XChaCha20-Poly1305-IETF under prefs_key (opaque to the hub).
* Challenge: Ed25519 over a domain-separated transcript of the server nonce and account.
* Case key K (32 random bytes per epoch): SealedBox to each participant's X25519 key;
  commitment = BLAKE2b(case||epoch, key=K, person=``chat-key-commit1``), signed.
* Message: Ed25519 signature over (case, epoch, client_msg_id, sender, BLAKE2b(envelope)),
  then ``sig || envelope`` padded (ISO/IEC 7816-4, to a size bucket) and encrypted with
  XChaCha20-Poly1305-IETF under K, with the routing header as associated data. The
  envelope carries the sender's view of the case (prev_seq, prev_hash) and its running
  counter n, so participants sign the order (protocol/transcript.py checks it).
* Receipt: Ed25519 over (case, kind, up_to_seq, chain hash at up_to_seq).

Variable-length fields in every signed or hashed transcript are length-prefixed
(4-byte big-endian), so no two different field tuples share an encoding.

This module makes, seals, signs and verifies; the inverse operations that need a
private key to read something (unwrap an identity, open a case key, decrypt a message)
are in :mod:`protocol.opening`, which the hub and its storage may not import.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, Protocol

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils
from msgspec import Meta
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from .errors import CryptoError, Noncanonical
from .frames import CounselorCert, Id, Key32, ReceiptKind, SignedReceipt
from .limits import MAX_MESSAGE_CHARS, PADDING_BUCKETS

__all__ = [
    "NO_ESCROW",
    "Envelope",
    "Identity",
    "LoginKeys",
    "ServerKey",
    "Signer",
    "auth_transcript",
    "box_key_transcript",
    "counselor_cert_transcript",
    "decode_envelope",
    "derive_login_keys",
    "encode_envelope",
    "encrypt_message",
    "fingerprint",
    "fingerprint_v2",
    "key_commitment",
    "lp",
    "message_aad",
    "message_transcript",
    "new_case_key",
    "new_salt",
    "pad",
    "prefs_aad",
    "receipt_transcript",
    "safety_number",
    "seal_case_key",
    "seal_prefs",
    "sign_box_key",
    "sign_challenge",
    "sign_commitment",
    "sign_counselor_cert",
    "sign_receipt",
    "u64",
    "verify_box_key",
    "verify_challenge",
    "verify_commitment",
    "verify_counselor_cert",
    "verify_receipt",
    "verify_signature",
    "wrap_identity",
]

KEY_BYTES = 32
NONCE_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
SIG_BYTES = 64


def lp(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: each part as 4-byte big-endian length || bytes."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _blake2b(data: bytes, *, person: bytes, key: bytes = b"", size: int = 32) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key, person=person, encoder=RawEncoder)


# -- login ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class LoginKeys:
    auth_key: bytes
    wrap_key: bytes
    prefs_key: bytes


def new_salt() -> bytes:
    return nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)


def derive_login_keys(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> LoginKeys:
    """Argon2id (crypto_pwhash, ALG_ARGON2ID13) then a BLAKE2b-keyed split."""
    master = nacl.pwhash.argon2id.kdf(
        KEY_BYTES, passphrase.encode("utf-8"), salt, opslimit=opslimit, memlimit=memlimit
    )
    return LoginKeys(
        auth_key=_blake2b(b"", key=master, person=b"chat-auth-key-v1"),
        wrap_key=_blake2b(b"", key=master, person=b"chat-wrap-key-v1"),
        prefs_key=_blake2b(b"", key=master, person=b"chat-prefs-key-2"),
    )


# -- identity ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class Identity:
    """An account's private keys. Never leaves the client unwrapped."""

    signing_key: SigningKey
    box_key: PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate(), PrivateKey.generate())

    @classmethod
    def from_secret_bytes(cls, secret: bytes) -> Identity:
        if len(secret) != 2 * KEY_BYTES:
            raise CryptoError("identity secret must be 64 bytes")
        return cls(SigningKey(secret[:KEY_BYTES]), PrivateKey(secret[KEY_BYTES:]))

    def secret_bytes(self) -> bytes:
        return bytes(self.signing_key) + bytes(self.box_key)

    @property
    def sign_pk(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def box_pk(self) -> bytes:
        return bytes(self.box_key.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)


class Signer(Protocol):
    """Anything that signs with an Ed25519 key (an :class:`Identity`, a :class:`ServerKey`)."""

    @property
    def sign_pk(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclasses.dataclass(frozen=True, repr=False)
class ServerKey:
    """The hub's own key: Ed25519 only. It signs chain heads (protocol/chain.py) and
    nothing else, and there is no box key beside it because nothing is ever sealed to
    the server: the type cannot open anything."""

    signing_key: SigningKey

    @classmethod
    def from_seed(cls, seed: bytes) -> ServerKey:
        if len(seed) != KEY_BYTES:
            raise CryptoError("a server key seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def sign_pk(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)


def wrap_identity(identity: Identity, wrap_key: bytes, nonce: bytes | None = None) -> bytes:
    """SecretBox(wrap_key) over the 64 secret bytes; returns nonce || ciphertext (104 bytes)."""
    box = nacl.secret.SecretBox(wrap_key)
    return bytes(box.encrypt(identity.secret_bytes(), nonce))


def verify_signature(sign_pk: bytes, message: bytes, sig: bytes) -> None:
    try:
        VerifyKey(sign_pk).verify(message, sig)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise CryptoError("signature does not verify") from None


def fingerprint(public_key: bytes) -> str:
    """Fingerprint of one key (the org key, an officer's, the server's): BLAKE2b-160 in
    groups of four hex digits. An account's fingerprint is :func:`fingerprint_v2`."""
    digest = _blake2b(public_key, person=b"chat-fingerprnt1", size=20).hex()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


# -- account keys: the box key signature, fingerprint, safety number ----------------


def box_key_transcript(sign_pk: bytes, box_pk: bytes) -> bytes:
    return lp(b"chat.boxkey.v2", sign_pk, box_pk)


def sign_box_key(identity: Identity) -> bytes:
    """The identity key's signature over its own box key (``box_sig``)."""
    return identity.sign(box_key_transcript(identity.sign_pk, identity.box_pk))


def verify_box_key(sign_pk: bytes, box_pk: bytes, sig: bytes) -> None:
    """CryptoError unless ``sig`` is ``sign_pk``'s signature over ``box_pk``."""
    verify_signature(sign_pk, box_key_transcript(sign_pk, box_pk), sig)


def _fingerprint_v2_raw(sign_pk: bytes, box_pk: bytes) -> bytes:
    return _blake2b(lp(sign_pk, box_pk), person=b"chat-fingerprnt2", size=20)


def fingerprint_v2(sign_pk: bytes, box_pk: bytes) -> str:
    """An account's fingerprint, over both its keys: BLAKE2b-160, 8 groups of 5 hex."""
    digest = _fingerprint_v2_raw(sign_pk, box_pk).hex()
    return " ".join(digest[i : i + 5] for i in range(0, len(digest), 5))


def safety_number(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> str:
    """The number two people compare out of band: 60 digits in 12 groups of 5, the
    same whichever side computes it. ``a`` and ``b`` are (sign_pk, box_pk) pairs."""
    fa, fb = _fingerprint_v2_raw(*a), _fingerprint_v2_raw(*b)
    digest = _blake2b(lp(min(fa, fb), max(fa, fb)), person=b"chat-safetynum-2", size=64)
    return " ".join(
        f"{int.from_bytes(digest[5 * i : 5 * i + 5], 'big') % 100000:05d}" for i in range(12)
    )


# -- counselor certificates ------------------------------------------------------


def counselor_cert_transcript(
    account_id: str, handle: str, sign_pk: bytes, box_pk: bytes, issued_at: int
) -> bytes:
    return lp(
        b"chat.counselorcert.v2",
        account_id.encode(),
        handle.encode(),
        sign_pk,
        box_pk,
        u64(issued_at),
    )


def sign_counselor_cert(
    org: Signer, *, account_id: str, handle: str, sign_pk: bytes, box_pk: bytes, issued_at: int
) -> CounselorCert:
    """The organisation key certifies a counselor (offline, ``chat-escrow certify``)."""
    sig = org.sign(counselor_cert_transcript(account_id, handle, sign_pk, box_pk, issued_at))
    return CounselorCert(
        account_id=account_id,
        handle=handle,
        sign_pk=sign_pk,
        box_pk=box_pk,
        issued_at=issued_at,
        org_sign_pk=org.sign_pk,
        sig=sig,
    )


def verify_counselor_cert(
    cert: CounselorCert,
    org_sign_pk: bytes,
    *,
    account_id: str | None = None,
    sign_pk: bytes | None = None,
    box_pk: bytes | None = None,
) -> None:
    """CryptoError unless ``cert`` is signed by ``org_sign_pk`` and (for each one given)
    names this account and these keys."""
    if cert.org_sign_pk != org_sign_pk:
        raise CryptoError("counselor certificate is from another organisation key")
    verify_signature(
        org_sign_pk,
        counselor_cert_transcript(
            cert.account_id, cert.handle, cert.sign_pk, cert.box_pk, cert.issued_at
        ),
        cert.sig,
    )
    for name, given, certified in (
        ("account", account_id, cert.account_id),
        ("identity key", sign_pk, cert.sign_pk),
        ("box key", box_pk, cert.box_pk),
    ):
        if given is not None and given != certified:
            raise CryptoError(f"counselor certificate is for another {name}")


# -- connection auth -----------------------------------------------------------


def auth_transcript(nonce: bytes, account_id: str) -> bytes:
    return lp(b"chat.auth.v1", nonce, account_id.encode())


def sign_challenge(identity: Identity, nonce: bytes, account_id: str) -> bytes:
    return identity.sign(auth_transcript(nonce, account_id))


def verify_challenge(sign_pk: bytes, nonce: bytes, account_id: str, sig: bytes) -> None:
    verify_signature(sign_pk, auth_transcript(nonce, account_id), sig)


# -- case keys -----------------------------------------------------------------


def new_case_key() -> bytes:
    return nacl.utils.random(KEY_BYTES)


def key_commitment(case_key: bytes, case_id: str, epoch: int) -> bytes:
    return _blake2b(lp(case_id.encode(), u64(epoch)), key=case_key, person=b"chat-key-commit1")


#: The escrow binding of an epoch key made while the hub had no escrow policy.
NO_ESCROW = "none"


def _commitment_transcript(case_id: str, epoch: int, commitment: bytes, escrow: str) -> bytes:
    # v2: the creator also signs the escrow policy the key is made under ("none" without
    # one), so a key can never be escrowed under a policy its creator did not name.
    return lp(b"chat.keycommit.v2", case_id.encode(), u64(epoch), commitment, escrow.encode())


def sign_commitment(
    identity: Identity, case_id: str, epoch: int, commitment: bytes, *, escrow: str
) -> bytes:
    """The creator's signature over the key commitment and its escrow binding (the
    policy fingerprint in force when the key was made, or :data:`NO_ESCROW`)."""
    return identity.sign(_commitment_transcript(case_id, epoch, commitment, escrow))


def verify_commitment(
    sign_pk: bytes, case_id: str, epoch: int, commitment: bytes, sig: bytes, *, escrow: str
) -> None:
    verify_signature(sign_pk, _commitment_transcript(case_id, epoch, commitment, escrow), sig)


def seal_case_key(case_key: bytes, box_pk: bytes) -> bytes:
    return bytes(SealedBox(PublicKey(box_pk)).encrypt(case_key))


# -- receipts ------------------------------------------------------------------


def receipt_transcript(case_id: str, kind: str, up_to_seq: int, chain_hash: bytes) -> bytes:
    return lp(b"chat.receipt.v2", case_id.encode(), kind.encode(), u64(up_to_seq), chain_hash)


def sign_receipt(
    identity: Identity, case_id: str, kind: ReceiptKind, up_to_seq: int, chain_hash: bytes
) -> bytes:
    return identity.sign(receipt_transcript(case_id, kind, up_to_seq, chain_hash))


def verify_receipt(sign_pk: bytes, case_id: str, receipt: SignedReceipt) -> None:
    """CryptoError unless ``sign_pk`` signed this receipt for this case."""
    verify_signature(
        sign_pk,
        receipt_transcript(case_id, receipt.kind, receipt.up_to_seq, receipt.chain_hash),
        receipt.sig,
    )


# -- preferences blob ------------------------------------------------------------


def prefs_aad() -> bytes:
    return lp(b"chat.prefs.v2")


def seal_prefs(prefs_key: bytes, data: bytes, nonce: bytes | None = None) -> bytes:
    """nonce (24) || XChaCha20-Poly1305-IETF(data) under the account's prefs_key."""
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else nonce
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        data, prefs_aad(), nonce, prefs_key
    )


# -- messages ------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The plaintext of one message; only participants (and escrow) ever see it.

    ``prev_seq``/``prev_hash``: the last record (seq, chain_hash) the sender had seen in
    the case when composing (0 and 32 zero bytes if none); ``n``: the sender's running
    message counter in the case (1, 2, 3 ... without gaps). Its one encoding is msgspec
    JSON in this field order (:func:`encode_envelope`); anything else is refused."""

    kind: Literal["text"] = "text"
    body: str
    ts: Annotated[int, Meta(ge=0, le=2**53)]
    client_msg_id: Id
    prev_seq: Annotated[int, Meta(ge=0, le=2**53)]
    prev_hash: Key32
    n: Annotated[int, Meta(ge=1, le=2**53)]


_envelope_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """The canonical bytes of an envelope: compact JSON, fields in declared order."""
    return _envelope_encoder.encode(envelope)


def decode_envelope(envelope_bytes: bytes) -> Envelope:
    """Decode strictly and check the bytes are the canonical encoding.

    Noncanonical (a CryptoError) for anything else: invalid JSON or UTF-8, a missing,
    unknown or repeated field, another order, whitespace, a float where an int belongs,
    a lone surrogate, escapes msgspec would not write."""
    try:
        envelope = _envelope_decoder.decode(envelope_bytes)
        canonical = _envelope_encoder.encode(envelope)
    except (msgspec.DecodeError, msgspec.EncodeError, UnicodeError):
        raise Noncanonical("signed envelope is malformed") from None
    if canonical != envelope_bytes:
        raise Noncanonical("signed envelope is not in the canonical encoding")
    return envelope


def pad(data: bytes) -> bytes:
    """ISO/IEC 7816-4 padding (libsodium ``sodium_pad``) to the smallest bucket that
    holds ``data`` and the 0x80 marker; ValueError if none does."""
    bucket = next((b for b in PADDING_BUCKETS if len(data) < b), None)
    if bucket is None:
        raise ValueError(f"encoded message exceeds {PADDING_BUCKETS[-1] - 1} bytes")
    return nacl.bindings.sodium_pad(data, bucket)


def message_aad(case_id: str, epoch: int, sender_id: str, client_msg_id: str) -> bytes:
    """The routing header, bound to the ciphertext as associated data."""
    return lp(
        b"chat.msg.v1", case_id.encode(), u64(epoch), sender_id.encode(), client_msg_id.encode()
    )


def message_transcript(
    case_id: str, epoch: int, client_msg_id: str, sender_id: str, envelope_bytes: bytes
) -> bytes:
    digest = _blake2b(envelope_bytes, person=b"chat-msg-hash-v1")
    return lp(
        b"chat.msgsig.v1",
        case_id.encode(),
        u64(epoch),
        client_msg_id.encode(),
        sender_id.encode(),
        digest,
    )


def encrypt_message(
    case_key: bytes,
    identity: Identity,
    *,
    case_id: str,
    epoch: int,
    sender_id: str,
    envelope: Envelope,
    nonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Sign, pad, encrypt. Returns (nonce, ciphertext).

    ValueError if the body is longer than MAX_MESSAGE_CHARS or the signed envelope does
    not fit the largest padding bucket (JSON escapes and multi-byte characters can make
    a body of fewer characters too long in bytes)."""
    if len(envelope.body) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters")
    envelope_bytes = encode_envelope(envelope)
    sig = identity.sign(
        message_transcript(case_id, epoch, envelope.client_msg_id, sender_id, envelope_bytes)
    )
    padded = pad(sig + envelope_bytes)
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else nonce
    aad = message_aad(case_id, epoch, sender_id, envelope.client_msg_id)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        padded, aad, nonce, case_key
    )
    return nonce, ciphertext
