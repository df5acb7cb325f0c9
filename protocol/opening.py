"""Every function that turns sealed or encrypted bytes back into keys or plaintext.

Only key holders call these: participants' clients (unwrap their identity, open case
keys, decrypt messages) and, offline, dispute officers (open escrow capsules and
sealed reasons, via protocol/bundle.py's verification). They live apart from
``crypto.py`` and ``escrow.py``, which seal, sign and verify, so the promise "the hub
and its storage never decrypt" is an import rule: an import-linter contract in
pyproject.toml forbids ``chat_server`` and ``storage`` from importing this module, even
indirectly.

Constructions are those of docs/PROTOCOL.md 12 and 14 (libsodium only): SecretBox for
the wrapped identity, SealedBox for case keys, capsule layers and reasons,
XChaCha20-Poly1305-IETF plus Ed25519 for messages. Every failure is a
:class:`~protocol.errors.CryptoError` (escrow failures its subclasses).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import nacl.bindings
import nacl.exceptions
import nacl.secret
from nacl.public import PrivateKey, SealedBox

from . import crypto
from .crypto import SIG_BYTES, Envelope, Identity, lp, u64
from .errors import CryptoError
from .escrow import EscrowError, ForeignMaterial, InsufficientKeys, policy_fingerprint
from .frames import Capsule, EscrowPolicy
from .limits import PADDING_BUCKETS

__all__ = [
    "decrypt_message",
    "open_capsule",
    "open_case_key",
    "open_prefs",
    "open_reason",
    "unwrap_identity",
]


def unwrap_identity(blob: bytes, wrap_key: bytes) -> Identity:
    """The identity wrapped by :func:`protocol.crypto.wrap_identity` (wrong key: CryptoError)."""
    try:
        secret = nacl.secret.SecretBox(wrap_key).decrypt(blob)
    except nacl.exceptions.CryptoError:
        raise CryptoError("wrong passphrase or corrupted key blob") from None
    return Identity.from_secret_bytes(secret)


def open_case_key(
    sealed: bytes, identity: Identity, case_id: str, epoch: int, commitment: bytes
) -> bytes:
    """Open a sealed case key and check it against the (already verified) commitment."""
    try:
        case_key = bytes(SealedBox(identity.box_key).decrypt(sealed))
    except nacl.exceptions.CryptoError:
        raise CryptoError("sealed case key does not open") from None
    if not hmac.compare_digest(crypto.key_commitment(case_key, case_id, epoch), commitment):
        raise CryptoError("case key does not match its commitment")
    return case_key


def decrypt_message(
    case_key: bytes,
    sender_sign_pk: bytes,
    *,
    case_id: str,
    epoch: int,
    sender_id: str,
    client_msg_id: str,
    nonce: bytes,
    ciphertext: bytes,
) -> Envelope:
    """Decrypt, unpad, verify the sender's signature, then decode the envelope strictly
    (crypto.decode_envelope: Noncanonical unless its bytes are the canonical encoding).
    Raise CryptoError on any failure."""
    aad = crypto.message_aad(case_id, epoch, sender_id, client_msg_id)
    try:
        inner = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, aad, nonce, case_key
        )
    except (nacl.exceptions.CryptoError, ValueError):  # ValueError: shorter than the tag
        raise CryptoError("message does not decrypt (wrong key or altered)") from None
    if len(inner) not in PADDING_BUCKETS:
        raise CryptoError("message is not padded to a size bucket")
    try:
        unpadded = nacl.bindings.sodium_unpad(inner, len(inner))
    except (nacl.exceptions.CryptoError, ValueError):
        raise CryptoError("message padding is malformed") from None
    sig, envelope_bytes = unpadded[:SIG_BYTES], unpadded[SIG_BYTES:]
    crypto.verify_signature(
        sender_sign_pk,
        crypto.message_transcript(case_id, epoch, client_msg_id, sender_id, envelope_bytes),
        sig,
    )
    envelope = crypto.decode_envelope(envelope_bytes)
    if envelope.client_msg_id != client_msg_id:
        raise CryptoError("envelope belongs to another message")
    return envelope


def open_prefs(prefs_key: bytes, blob: bytes) -> bytes:
    """The plaintext of a preferences blob made by :func:`protocol.crypto.seal_prefs`."""
    nonce, ciphertext = blob[: crypto.NONCE_BYTES], blob[crypto.NONCE_BYTES :]
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, crypto.prefs_aad(), nonce, prefs_key
        )
    except (nacl.exceptions.CryptoError, ValueError):
        raise CryptoError("preferences blob does not decrypt (wrong key or altered)") from None


def open_capsule(
    capsule: Capsule,
    policy: EscrowPolicy,
    officer_keys: Mapping[int, PrivateKey],
    *,
    case_id: str,
    epoch: int,
    commitment: bytes,
) -> bytes:
    """Remove the seal layers of a subset the given officer keys cover; check the
    binding and the key commitment; return K.

    InsufficientKeys: no subset is covered; ForeignMaterial: the capsule was made for
    another policy, case or epoch, or does not hold the committed key.
    """
    if capsule.policy_fingerprint != policy_fingerprint(policy):
        raise ForeignMaterial("capsule is for another escrow policy")
    held = set(officer_keys)
    layer = next((c for c in capsule.subsets if set(c.officers) <= held), None)
    if layer is None:
        raise InsufficientKeys(
            f"need {policy.threshold} officer keys of this policy, have {len(held)}"
        )
    data = layer.sealed
    try:
        for index in layer.officers:
            data = bytes(SealedBox(officer_keys[index]).decrypt(data))
    except nacl.exceptions.CryptoError:
        raise ForeignMaterial("capsule layer does not open with the officer key") from None
    expected_prefix = lp(b"chat.capsule.v1", case_id.encode(), u64(epoch))
    if not data.startswith(expected_prefix) or len(data) != len(expected_prefix) + 4 + 32:
        raise ForeignMaterial("capsule is bound to another case or epoch")
    case_key = data[len(expected_prefix) + 4 :]
    if data[len(expected_prefix) : len(expected_prefix) + 4] != (32).to_bytes(4, "big"):
        raise ForeignMaterial("capsule binding is malformed")
    if not hmac.compare_digest(crypto.key_commitment(case_key, case_id, epoch), commitment):
        raise ForeignMaterial("capsule key does not match the signed key commitment")
    return case_key


def open_reason(sealed: bytes, box_key: PrivateKey) -> str:
    """A dispute reason sealed to one officer (:func:`protocol.escrow.seal_reasons`)."""
    try:
        return bytes(SealedBox(box_key).decrypt(sealed)).decode("utf-8")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError):
        raise EscrowError("reason does not open with this officer key") from None
