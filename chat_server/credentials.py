"""What the hub keeps instead of secrets: token and invite-code hashes, and the login
decoys that make an unknown handle answer like a known one.

Session tokens and invite codes are stored only as BLAKE2b hashes (each with its own
personalisation), so a database reader cannot log in or register with them. This module
imports no handler, so ``chat-server admin invite-counselor`` and tests can hash a code
without loading the hub.

:class:`LoginDecoys` serves ``prelogin`` and ``login`` for handles that do not exist
(docs/DECISIONS.md 5): a stable fake salt per handle (keyed BLAKE2b, the key derived from
the server's data key, so it survives restarts and differs between deployments) and an
Argon2id hash of nothing to verify against, so both answers take the time a real one does.
"""

from __future__ import annotations

import nacl.hash
import nacl.pwhash
import nacl.utils
from nacl.encoding import RawEncoder

__all__ = ["LoginDecoys", "invite_code_hash", "token_hash"]


def _hash(data: bytes, person: bytes, key: bytes = b"", size: int = 32) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key, person=person, encoder=RawEncoder)


def token_hash(token: str) -> bytes:
    """What the database stores of a session token."""
    return _hash(token.encode(), b"chat-token-hash1")


def invite_code_hash(code: str) -> bytes:
    """What the database stores of an invite code (surrounding blanks ignored)."""
    return _hash(code.strip().encode(), b"chat-invite-hsh1")


class LoginDecoys:
    """Answers about handles that do not exist, indistinguishable from real ones."""

    __slots__ = ("_salt_key", "dummy_auth_hash")

    def __init__(self, data_key: bytes, *, opslimit: int, memlimit: int) -> None:
        self._salt_key = _hash(data_key, b"chat-fake-saltk1")
        #: Verified against when the handle is unknown, so a login takes the same time.
        self.dummy_auth_hash: bytes = nacl.pwhash.argon2id.str(
            nacl.utils.random(32), opslimit=opslimit, memlimit=memlimit
        )

    def salt(self, handle: str) -> bytes:
        """The same 16 bytes for the same handle, every time (prelogin must not vary)."""
        return _hash(handle.encode(), b"chat-fake-salt01", self._salt_key, 16)
