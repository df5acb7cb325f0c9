"""Errors the SDK raises, and the one place where server error frames become exceptions.

Hierarchy::

    ClientError                  base of everything the SDK itself raises
    ├── ConnectFailed            the server could not be reached (CLI exit 4)
    ├── SessionEnded             the server closed the session for good (non-resumable code)
    ├── ClientClosed             the client was closed while the call was pending
    ├── RequestInterrupted       the link dropped before a non-idempotent request was answered
    ├── KeyStoreError            the local key store is missing, corrupt or already taken
    ├── KdfTooWeak               the caller's Argon2id limits are not the server's
    ├── WeakPassphrase           the passphrase fails the length / zxcvbn rule (policy.py)
    ├── CaseNotReady             the client's key is not shared with us yet (or unknown case)
    └── SecurityRefusal          the hub presented something we must not trust (CLI exit 5)
        ├── KdfDowngrade         prelogin/challenge KDF below the floor or not as remembered
        ├── KeyChanged           a contact's pinned keys changed (contacts.py)
        ├── KeyNotSigned         a directory entry's box key is unsigned or badly signed
        └── UncertifiedCounselor the org key is pinned and the counselor has no valid cert

Errors reported by the server arrive as the typed classes of :mod:`protocol.errors`
(``AuthFailed``, ``Forbidden``, ...), built by :func:`remote_error`. A failed signature,
MAC or commitment is :class:`protocol.errors.CryptoError` (also "wrong passphrase").
"""

from __future__ import annotations

from protocol import errors as pe
from protocol.frames import ErrorFrame

__all__ = [
    "CaseNotReady",
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "KdfDowngrade",
    "KdfTooWeak",
    "KeyChanged",
    "KeyNotSigned",
    "KeyStoreError",
    "RequestInterrupted",
    "SecurityRefusal",
    "SessionEnded",
    "UncertifiedCounselor",
    "WeakPassphrase",
    "remote_error",
]


class ClientError(Exception):
    """Base class of the errors raised by the client SDK itself."""


class ConnectFailed(ClientError):
    """The server could not be reached (refused, DNS, TLS, handshake, timeout)."""


class SessionEnded(ClientError):
    """The server closed the connection with a code after which we must not reconnect."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        meaning = _CLOSE_MEANINGS.get(code, "connection closed by the server")
        super().__init__(f"{meaning} (close code {code}{': ' + reason if reason else ''})")


class ClientClosed(ClientError):
    """The client was closed; pending and later calls fail with this."""


class RequestInterrupted(ClientError):
    """The connection dropped before the server answered a request that is unsafe to
    repeat blindly (``case.open``, ``case.close``); check the state and retry if needed."""


class KeyStoreError(ClientError):
    """The local key store is missing, unreadable, or holds another account."""


class KdfTooWeak(ClientError):
    """The requested Argon2id limits are not the ones the server requires (each server
    registers every account at one announced cost)."""


class CaseNotReady(ClientError):
    """The case cannot carry our messages yet (its client has not shared its key with
    us, the counselor, yet) or is unknown."""


class WeakPassphrase(ClientError):
    """A new passphrase is shorter than 10 characters or zxcvbn rates it below 3."""


class SecurityRefusal(ClientError):
    """The hub (or the network) presented something that would weaken the end-to-end
    protection; the client refused and sent nothing that depends on it. The message
    names what was detected and what to do."""


class KdfDowngrade(SecurityRefusal):
    """Argon2id parameters below the client floor, or different from the salt and limits
    the key store remembers for this handle."""


class KeyChanged(SecurityRefusal):
    """A contact's keys differ from the ones pinned on first use."""


class KeyNotSigned(SecurityRefusal):
    """A directory entry's box key carries no valid signature by its identity key."""


class UncertifiedCounselor(SecurityRefusal):
    """An organisation key is pinned and the counselor has no certificate valid under
    it, so the case key is not sealed to them."""


_CLOSE_MEANINGS: dict[int, str] = {
    pe.CloseCode.NORMAL: "session closed normally (logged out)",
    pe.CloseCode.INVALID_DATA: "the server rejected repeated malformed frames",
    pe.CloseCode.POLICY: "the server closed the session for a policy violation",
    pe.CloseCode.TOO_BIG: "a frame was too big for the server",
    pe.CloseCode.AUTH_TIMEOUT: "authentication timed out",
    pe.CloseCode.SESSION_LIMIT: "too many sessions for this account",
    pe.CloseCode.REPLACED: "this session was replaced by a newer one (too many devices)",
}


def remote_error(frame: ErrorFrame) -> pe.RemoteError:
    """The typed exception for a server ``error`` frame (generic RemoteError if unknown);
    the code -> class map is the protocol's own (:data:`protocol.errors.ERROR_CLASSES`)."""
    return pe.remote_error(frame.code, frame.message, frame.retry_after_ms)
