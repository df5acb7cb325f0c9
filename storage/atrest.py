"""Encryption at rest of the personal data the service has to keep in readable form.

The hub stores message *content* only as end-to-end ciphertext it cannot open. A few
fields it must be able to read itself, and these are personal or sensitive: a
counselor's display name (shown to clients) and a case's topic (used for matching).
Since migration 0003 an account's login salt and wrapped identity blob are sealed too,
so a stolen database does not even give what an offline passphrase guess needs.
Those are stored encrypted with a server-side 32-byte *data key* from configuration,
so a copy of the database file alone does not reveal them.

Construction: libsodium's XChaCha20-Poly1305-IETF (``nacl.secret.Aead``), a fresh
random 24-byte nonce per value, and associated data naming the column and the row
(e.g. ``b"case.topic\\x00" + case_id``). The associated data binds a ciphertext to its
place: someone with write access to the database cannot move one case's topic onto
another case, or a display name into a topic column, without decryption failing.

Stored layout: ``version (1 byte, 0x01) || nonce (24) || ciphertext+tag``. The version
byte leaves room for key rotation (a later version can name a different key).
"""

from __future__ import annotations

import nacl.exceptions
import nacl.secret
import nacl.utils

__all__ = ["DATA_KEY_BYTES", "AtRestCipher", "AtRestError", "context"]

DATA_KEY_BYTES = nacl.secret.Aead.KEY_SIZE  # 32
_VERSION = b"\x01"
_NONCE_BYTES = nacl.secret.Aead.NONCE_SIZE  # 24


class AtRestError(Exception):
    """A stored value did not decrypt: wrong data key, or the row was tampered with."""


class AtRestCipher:
    """Seals and opens short text values under the server's data key.

    ``context`` names the column and row a value belongs to; the same context must be
    given to :meth:`open` as was given to :meth:`seal`.
    """

    __slots__ = ("_aead",)

    def __init__(self, data_key: bytes) -> None:
        if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"the data key must be exactly {DATA_KEY_BYTES} bytes")
        self._aead = nacl.secret.Aead(data_key)

    def seal(self, plaintext: str, context: bytes) -> bytes:
        """Encrypt ``plaintext`` (UTF-8) bound to ``context``; a new random nonce each call."""
        nonce = nacl.utils.random(_NONCE_BYTES)
        sealed: bytes = self._aead.encrypt(plaintext.encode(), context, nonce)
        # Aead.encrypt returns nonce || ciphertext (an EncryptedMessage, a bytes subclass).
        return _VERSION + bytes(sealed)

    def open(self, blob: bytes, context: bytes) -> str:
        """Decrypt a value written by :meth:`seal` with the same ``context``.

        Raises :class:`AtRestError` when the key is wrong or the value was altered or
        moved to another row or column.
        """
        if len(blob) < 1 + _NONCE_BYTES or blob[:1] != _VERSION:
            raise AtRestError("stored value has an unknown format")
        try:
            plain: bytes = self._aead.decrypt(bytes(blob[1:]), context)
        except nacl.exceptions.CryptoError as exc:
            raise AtRestError("stored value does not decrypt under the data key") from exc
        return plain.decode()

    def seal_bytes(self, plaintext: bytes, context: bytes) -> bytes:
        """:meth:`seal` for a binary value (a login salt, a wrapped key blob)."""
        nonce = nacl.utils.random(_NONCE_BYTES)
        return _VERSION + bytes(self._aead.encrypt(plaintext, context, nonce))

    def open_bytes(self, blob: bytes, context: bytes) -> bytes:
        """:meth:`open` for a value written by :meth:`seal_bytes`."""
        if len(blob) < 1 + _NONCE_BYTES or blob[:1] != _VERSION:
            raise AtRestError("stored value has an unknown format")
        try:
            return bytes(self._aead.decrypt(bytes(blob[1:]), context))
        except nacl.exceptions.CryptoError as exc:
            raise AtRestError("stored value does not decrypt under the data key") from exc

    def seal_optional(self, plaintext: str | None, context: bytes) -> bytes | None:
        """:meth:`seal`, passing None through (for nullable columns)."""
        return None if plaintext is None else self.seal(plaintext, context)

    def open_optional(self, blob: bytes | None, context: bytes) -> str | None:
        """:meth:`open`, passing None through (for nullable columns)."""
        return None if blob is None else self.open(blob, context)


def context(column: str, row_id: str | bytes) -> bytes:
    """The associated data for ``column`` of the row ``row_id``: ``column NUL row_id``."""
    rid = row_id.encode() if isinstance(row_id, str) else row_id
    return column.encode() + b"\x00" + rid
