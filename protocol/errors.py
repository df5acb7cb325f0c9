"""Every error the protocol can report, each with a stable code and close code.

Hierarchy::

    ProtocolError                 base; never raised directly
    ├── RemoteError               the peer sent something wrong (answered with an error frame)
    │   ├── MalformedFrame        not JSON / not an object            -> close 1007 after 3
    │   ├── UnknownType           "type" names no frame               -> error frame
    │   ├── InvalidFrame          schema violation, oversize value    -> error frame
    │   ├── UnsupportedVersion    "v" is not a version we speak       -> error frame
    │   ├── FrameTooBig           frame above MAX_FRAME_BYTES         -> close 1009
    │   ├── NotAuthenticated      request before auth                 -> error frame
    │   ├── AuthFailed            bad credentials / signature / token -> error frame
    │   ├── Forbidden             not a participant of the case       -> error frame
    │   ├── NotFound, Conflict, Duplicate, RateLimited, LimitExceeded, ConsentRequired,
    │   ├── Busy                  too much Argon2 work at once: retry after retry_after_ms
    │   ├── Replayed              a message nonce already stored in the case
    │   └── Unavailable           server shutting down: retry on a new connection
    └── CryptoError               a signature, MAC or commitment did not verify (local)
        └── Noncanonical          a signed envelope is not in its one encoding

Codes are part of the wire protocol (docs/PROTOCOL.md) and never change meaning.
Close codes 4000-4999 are ours (RFC 6455 section 7.4.2 leaves them to applications).
This module is the one home of both directions of the map: each class names its code,
and :data:`ERROR_CLASSES` / :func:`remote_error` turn a received code back into the
class, so every client raises the same typed errors; :data:`RESUMABLE_CLOSE_CODES` is
the one list of close codes after which a client reconnects and syncs.
"""

from __future__ import annotations

import enum

__all__ = [
    "ERROR_CLASSES",
    "RESUMABLE_CLOSE_CODES",
    "AuthFailed",
    "Busy",
    "CloseCode",
    "Conflict",
    "ConsentRequired",
    "CryptoError",
    "Duplicate",
    "ErrorCode",
    "Forbidden",
    "FrameTooBig",
    "InvalidFrame",
    "LimitExceeded",
    "MalformedFrame",
    "Noncanonical",
    "NotAuthenticated",
    "NotFound",
    "ProtocolError",
    "RateLimited",
    "RemoteError",
    "Replayed",
    "Unavailable",
    "UnknownType",
    "UnsupportedVersion",
    "remote_error",
]


class ErrorCode(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_BIG = "too_big"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"
    LIMIT_EXCEEDED = "limit_exceeded"
    CONSENT_REQUIRED = "consent_required"
    UNAVAILABLE = "unavailable"
    BUSY = "busy"
    REPLAYED = "replayed"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the hub uses (RFC 6455 section 7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect (to another node) and resume
    INVALID_DATA = 1007  # repeated malformed frames
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011  # unexpected failure; the reason is always generic
    TRY_AGAIN = 1013
    AUTH_TIMEOUT = 4001  # no successful auth in time
    SESSION_EXPIRED = 4002  # the session's token expired or was revoked: log in again
    SESSION_LIMIT = 4003  # too many sessions for this account
    SIGNED_OUT = 4004  # logout{all} ended every session of the account: sign in again
    SLOW_CONSUMER = 4008  # send queue overflowed: reconnect and sync, nothing is lost
    REPLACED = 4009  # evicted by a newer session when at the per-account limit


#: Close codes after which a client should reconnect and sync. Not 4001 (auth timeout):
#: a client that could not authenticate in time starts afresh instead of looping. A
#: connection lost without any close frame (1006, never sent) is resumable too.
RESUMABLE_CLOSE_CODES = frozenset(
    {CloseCode.GOING_AWAY, CloseCode.INTERNAL, CloseCode.TRY_AGAIN, CloseCode.SLOW_CONSUMER}
)


class ProtocolError(Exception):
    """Base class; ``code`` is the stable wire code. ``retry_after_ms``, when not None,
    says how long to wait before the same request can succeed (``rate_limited``,
    ``busy``)."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", *, retry_after_ms: int | None = None) -> None:
        super().__init__(message or self.code.value.replace("_", " "))
        self.retry_after_ms = retry_after_ms

    @property
    def message(self) -> str:
        return str(self)


class RemoteError(ProtocolError):
    """The peer sent something we refuse; reported to it as an error frame."""


class MalformedFrame(RemoteError):
    code = ErrorCode.MALFORMED


class UnknownType(RemoteError):
    code = ErrorCode.UNKNOWN_TYPE


class InvalidFrame(RemoteError):
    code = ErrorCode.INVALID


class UnsupportedVersion(RemoteError):
    code = ErrorCode.UNSUPPORTED_VERSION


class FrameTooBig(RemoteError):
    code = ErrorCode.TOO_BIG


class NotAuthenticated(RemoteError):
    code = ErrorCode.NOT_AUTHENTICATED


class AuthFailed(RemoteError):
    code = ErrorCode.AUTH_FAILED


class Forbidden(RemoteError):
    code = ErrorCode.FORBIDDEN


class NotFound(RemoteError):
    code = ErrorCode.NOT_FOUND


class Conflict(RemoteError):
    code = ErrorCode.CONFLICT


class Duplicate(RemoteError):
    code = ErrorCode.DUPLICATE


class RateLimited(RemoteError):
    code = ErrorCode.RATE_LIMITED


class LimitExceeded(RemoteError):
    code = ErrorCode.LIMIT_EXCEEDED


class ConsentRequired(RemoteError):
    code = ErrorCode.CONSENT_REQUIRED


class Busy(RemoteError):
    """Too much password-hashing work in progress (for everyone, or from this address);
    retry after ``retry_after_ms``."""

    code = ErrorCode.BUSY


class Replayed(RemoteError):
    """``msg.send`` carries a nonce already stored in the case: a replayed ciphertext."""

    code = ErrorCode.REPLAYED


class Unavailable(RemoteError):
    """The server is shutting down or overloaded; retry on a new connection."""

    code = ErrorCode.UNAVAILABLE


class CryptoError(ProtocolError):
    """A signature, MAC, or key commitment did not verify. Raised locally, never sent."""


class Noncanonical(CryptoError):
    """A message's signed envelope decodes, but its bytes are not the one canonical
    encoding (docs/PROTOCOL.md, "Canonical encoding"), so two readers might disagree."""


#: The class of every code a server sends in an ``error`` frame ("internal" is never
#: sent: internal failures close with 1011).
ERROR_CLASSES: dict[str, type[RemoteError]] = {
    cls.code.value: cls
    for cls in (
        MalformedFrame,
        UnknownType,
        InvalidFrame,
        UnsupportedVersion,
        FrameTooBig,
        NotAuthenticated,
        AuthFailed,
        Forbidden,
        NotFound,
        Conflict,
        Duplicate,
        RateLimited,
        LimitExceeded,
        ConsentRequired,
        Busy,
        Replayed,
        Unavailable,
    )
}


def remote_error(code: str, message: str = "", retry_after_ms: int | None = None) -> RemoteError:
    """The typed exception for an ``error`` frame's ``code`` and ``message``: its class
    from :data:`ERROR_CLASSES`, or a plain RemoteError for a code this version does not
    know (a newer server); an empty message becomes the code in words."""
    cls = ERROR_CLASSES.get(code, RemoteError)
    return cls(message or code.replace("_", " "), retry_after_ms=retry_after_ms)
