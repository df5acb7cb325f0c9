"""The connection state machine: which frames are legal when, and every transition.

Everything that decides a transition lives in this file (h11's rule). The hub's
connection adapter (``chat_server/session.py``) only moves bytes: it tells a
:class:`SessionMachine` what happened (a frame arrived, a request succeeded, a frame
did not decode, the auth timer fired) and carries out the decisions it returns (a
:class:`Close` with its code and reason). Sans-I/O: no sockets, no clock, no randomness;
the challenge nonce is chosen by the caller and handed in.

States::

    UNAUTHENTICATED --hello answered--> CHALLENGED --auth succeeded--> AUTHENTICATED
           |                                |                                |
           +--------------------------------+---- logout or any close ------> CLOSING

``UNAUTHENTICATED`` and ``CHALLENGED`` are the two sub-states of the wire's
"unauthenticated" (docs/PROTOCOL.md section 7): the same frames are legal in both,
except that ``hello`` is answered once per connection and ``auth`` needs the nonce that
``hello`` was answered with. A refused request changes nothing (a failed ``auth`` may be
retried on the same nonce); a successful ``auth`` spends the nonce. ``CLOSING`` accepts
nothing and is final.

Events, as methods of :class:`SessionMachine`:

* :meth:`~SessionMachine.check`: a frame arrived; raises the named error if it is illegal
  now (``NotAuthenticated`` before auth, ``InvalidFrame`` otherwise);
* :meth:`~SessionMachine.challenge_issued`, :meth:`~SessionMachine.authenticated`: the
  server answered ``hello``, accepted ``auth``;
* :meth:`~SessionMachine.handled`: a request succeeded (``logout`` closes with 1000);
* :meth:`~SessionMachine.undecodable`: a frame did not decode (too big: 1009;
  :data:`~protocol.limits.MAX_MALFORMED_IN_A_ROW` malformed in a row: 1007);
* :meth:`~SessionMachine.auth_deadline`: the auth timer fired (4001 unless authenticated);
* :meth:`~SessionMachine.close`: the connection is closing, whatever the reason.

An event that cannot happen in the current state (``authenticated`` without a pending
challenge, say) is a bug of the caller and raises :class:`TransitionError`.
"""

from __future__ import annotations

import dataclasses
import enum

from . import frames as f
from .errors import (
    RESUMABLE_CLOSE_CODES,
    CloseCode,
    FrameTooBig,
    InvalidFrame,
    MalformedFrame,
    NotAuthenticated,
    RemoteError,
    UnsupportedVersion,
)
from .limits import MAX_MALFORMED_IN_A_ROW

__all__ = [
    "POST_AUTH_FRAMES",
    "PRE_AUTH_FRAMES",
    "Close",
    "SessionMachine",
    "SessionState",
    "TransitionError",
]


class SessionState(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"
    #: Still unauthenticated on the wire: ``hello`` was answered and its nonce is pending.
    CHALLENGED = "challenged"
    AUTHENTICATED = "authenticated"
    CLOSING = "closing"


#: Requests legal before authentication (in UNAUTHENTICATED and CHALLENGED).
PRE_AUTH_FRAMES: frozenset[type[object]] = frozenset(
    {f.Hello, f.Register, f.Prelogin, f.Login, f.AuthRequest, f.Ping}
)
#: Requests legal once authenticated.
POST_AUTH_FRAMES: frozenset[type[object]] = frozenset(
    {
        f.Ping,
        f.Logout,
        f.DirectoryGet,
        f.CaseOpen,
        f.CaseList,
        f.CaseKeyDeposit,
        f.CaseKeys,
        f.CaseKeyShare,
        f.MsgSend,
        f.Sync,
        f.Receipt,
        f.Typing,
        f.CaseClose,
        f.PolicyGet,
        f.ConsentAccept,
        f.CaseCapsule,
        f.DisputeRequest,
        f.DisputeList,
        f.AccountAttest,
        f.PrefsGet,
        f.PrefsPut,
    }
)

_ALLOWED: dict[SessionState, frozenset[type[object]]] = {
    SessionState.UNAUTHENTICATED: PRE_AUTH_FRAMES,
    SessionState.CHALLENGED: PRE_AUTH_FRAMES,
    SessionState.AUTHENTICATED: POST_AUTH_FRAMES,
    SessionState.CLOSING: frozenset(),
}
_PRE_AUTH_STATES = frozenset({SessionState.UNAUTHENTICATED, SessionState.CHALLENGED})


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    """A decision: close the connection with ``code`` and ``reason`` (after what is queued)."""

    code: CloseCode
    reason: str

    @property
    def resumable(self) -> bool:
        """Whether a client should reconnect and sync after this close."""
        return self.code in RESUMABLE_CLOSE_CODES


class TransitionError(RuntimeError):
    """The caller reported an event that cannot happen in the current state (a bug)."""


class SessionMachine:
    """The protocol state of one connection. See the module docstring."""

    __slots__ = ("_challenge", "_malformed", "_state")

    def __init__(self) -> None:
        self._state = SessionState.UNAUTHENTICATED
        self._challenge: bytes | None = None
        self._malformed = 0

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def challenge(self) -> bytes | None:
        """The nonce ``hello`` was answered with, until an ``auth`` succeeds."""
        return self._challenge

    @property
    def authenticating(self) -> bool:
        """True before a successful ``auth`` (and not closing): the auth timer runs."""
        return self._state in _PRE_AUTH_STATES

    # -- inbound frames --------------------------------------------------------

    def check(self, frame: object) -> None:
        """A frame decoded: raise the named error if it may not be handled now."""
        self._malformed = 0
        state = self._state
        kind = type(frame)
        if kind in _ALLOWED[state]:
            if state is SessionState.CHALLENGED and kind is f.Hello:
                raise InvalidFrame("hello was already sent on this connection")
            if state is SessionState.UNAUTHENTICATED and kind is f.AuthRequest:
                raise InvalidFrame("send hello first to get a challenge")
            return
        if state in _PRE_AUTH_STATES:
            raise NotAuthenticated(f"{_tag(frame)} requires an authenticated session")
        raise InvalidFrame(f"{_tag(frame)} is not allowed in state {state.value}")

    def undecodable(self, error: RemoteError) -> Close | None:
        """A frame did not decode (``error`` is what it gets answered with, unless closed).

        A frame of another protocol version closes the connection (1008) after its
        ``unsupported_version`` answer: a version-1 client cannot go on to speak 2."""
        if isinstance(error, FrameTooBig):
            return self._closing(Close(CloseCode.TOO_BIG, "frame too big"))
        if isinstance(error, UnsupportedVersion):
            return self._closing(Close(CloseCode.POLICY, "unsupported protocol version"))
        self._malformed = self._malformed + 1 if isinstance(error, MalformedFrame) else 0
        if self._malformed >= MAX_MALFORMED_IN_A_ROW:
            return self._closing(Close(CloseCode.INVALID_DATA, "too many malformed frames"))
        return None

    # -- what the server did ---------------------------------------------------

    def challenge_issued(self, nonce: bytes) -> None:
        """``hello`` was answered with ``nonce``; ``auth`` must sign it."""
        if self._state is not SessionState.UNAUTHENTICATED:
            raise TransitionError(f"challenge issued in state {self._state.value}")
        self._challenge = nonce
        self._state = SessionState.CHALLENGED

    def authenticated(self) -> None:
        """``auth`` succeeded: the connection speaks for an account; the nonce is spent."""
        if self._state is not SessionState.CHALLENGED:
            raise TransitionError(f"authenticated in state {self._state.value}")
        self._challenge = None
        self._state = SessionState.AUTHENTICATED

    def handled(self, frame: object) -> Close | None:
        """A request succeeded (and was answered). A ``logout`` closes with 1000."""
        if type(frame) is f.Logout:
            return self._closing(Close(CloseCode.NORMAL, "logged out"))
        return None

    def auth_deadline(self) -> Close | None:
        """The auth timer fired: close with 4001 unless the connection authenticated."""
        if self._state in _PRE_AUTH_STATES:
            return self._closing(Close(CloseCode.AUTH_TIMEOUT, "authentication timeout"))
        return None

    def close(self) -> None:
        """The connection is closing (any reason, either side): nothing is accepted now."""
        self._state = SessionState.CLOSING
        self._challenge = None

    def _closing(self, decision: Close) -> Close:
        self.close()
        return decision


def _tag(frame: object) -> str:
    config = getattr(type(frame), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return str(tag) if tag is not None else type(frame).__name__
