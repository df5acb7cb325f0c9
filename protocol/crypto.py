"""The crypto envelope, as pure functions over bytes (PyNaCl / libsodium only).

Constructions (docs/PROTOCOL.md, "Cryptography", gives the exact byte layouts):

* Login keys: Argon2id(passphrase, salt) -> master; BLAKE2b keyed by master with
  personalisations ``chat-auth-key-v1`` / ``chat-wrap-key-v1`` -> auth_key, wrap_key.
  The server only ever sees auth_key (and stores an Argon2id hash of it).
* Identity: an Ed25519 signing key and an independent X25519 box key, wrapped together
  with SecretBox (XSalsa20-Poly1305) under wrap_key.
* Challenge: Ed25519 over a domain-separated transcript of the server nonce and account.
* Case key K (32 random bytes per epoch): SealedBox to each participant's X25519 key;
  commitment = BLAKE2b(case||epoch, key=K, person=``chat-key-commit1``), signed.
* Message: Ed25519 signature over (case, epoch, client_msg_id, sender, BLAKE2b(envelope)),
  then ``sig || envelope`` encrypted with XChaCha20-Poly1305-IETF under K, with the
  routing header as associated data.

Variable-length fields in every signed or hashed transcript are length-prefixed
(4-byte big-endian), so no two different field tuples share an encoding.

This module makes, seals, signs and verifies; the inverse operations that need a
private key to read something (unwrap an identity, open a case key, decrypt a message)
are in :mod:`protocol.opening`, which the hub and its storage may not import.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from .errors import CryptoError
from .frames import Id
from .limits import MAX_CIPHERTEXT_BYTES, MAX_MESSAGE_CHARS

__all__ = [
    "NO_ESCROW",
    "Envelope",
    "Identity",
    "LoginKeys",
    "ServerKey",
    "Signer",
    "auth_transcript",
    "derive_login_keys",
    "encrypt_message",
    "fingerprint",
    "key_commitment",
    "lp",
    "message_aad",
    "message_transcript",
    "new_case_key",
    "new_salt",
    "seal_case_key",
    "sign_challenge",
    "sign_commitment",
    "u64",
    "verify_challenge",
    "verify_commitment",
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
    """Human-comparable fingerprint: BLAKE2b-160 in groups of four hex digits."""
    digest = _blake2b(public_key, person=b"chat-fingerprnt1", size=20).hex()
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


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


# -- messages ------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The plaintext of one message; only participants (and escrow) ever see it."""

    kind: Literal["text"] = "text"
    body: str
    ts: int
    client_msg_id: Id


_envelope_encoder = msgspec.json.Encoder()


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
    """Sign then encrypt. Returns (nonce, ciphertext)."""
    if len(envelope.body) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message longer than {MAX_MESSAGE_CHARS} characters")
    envelope_bytes = _envelope_encoder.encode(envelope)
    # JSON escapes can grow a body up to 6x (a control character is \u00XX), so an
    # 8000-character body may still not fit the ciphertext limit the server enforces.
    if SIG_BYTES + len(envelope_bytes) + TAG_BYTES > MAX_CIPHERTEXT_BYTES:
        raise ValueError(f"encoded message exceeds {MAX_CIPHERTEXT_BYTES} bytes")
    sig = identity.sign(
        message_transcript(case_id, epoch, envelope.client_msg_id, sender_id, envelope_bytes)
    )
    nonce = nacl.utils.random(NONCE_BYTES) if nonce is None else nonce
    aad = message_aad(case_id, epoch, sender_id, envelope.client_msg_id)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        sig + envelope_bytes, aad, nonce, case_key
    )
    return nonce, ciphertext
