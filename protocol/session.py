"""The session state machine: which frames are legal in which state.

Everything that decides a transition lives in this file (h11's rule). A connection
starts ``UNAUTHENTICATED``; a successful ``auth`` moves it to ``AUTHENTICATED``;
``logout`` or any close moves it to ``CLOSING``, where nothing is accepted.
"""

from __future__ import annotations

import enum

from . import frames as f
from .errors import InvalidFrame, NotAuthenticated

__all__ = ["SessionState", "check_allowed", "next_state"]


class SessionState(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"
    AUTHENTICATED = "authenticated"
    CLOSING = "closing"


_PRE_AUTH: frozenset[type[object]] = frozenset(
    {f.Hello, f.Register, f.Prelogin, f.Login, f.AuthRequest, f.Ping}
)
_POST_AUTH: frozenset[type[object]] = frozenset(
    {
        f.Ping,
        f.Logout,
        f.DirectoryGet,
        f.CaseOpen,
        f.CaseList,
        f.CaseKeyDeposit,
        f.CaseKeys,
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
    }
)

_ALLOWED: dict[SessionState, frozenset[type[object]]] = {
    SessionState.UNAUTHENTICATED: _PRE_AUTH,
    SessionState.AUTHENTICATED: _POST_AUTH,
    SessionState.CLOSING: frozenset(),
}


def check_allowed(state: SessionState, frame: object) -> None:
    """Raise a named error if ``frame`` is illegal in ``state``."""
    if type(frame) in _ALLOWED[state]:
        return
    if state is SessionState.UNAUTHENTICATED:
        raise NotAuthenticated(f"{_tag(frame)} requires an authenticated session")
    raise InvalidFrame(f"{_tag(frame)} is not allowed in state {state.value}")


def next_state(state: SessionState, frame: object, *, succeeded: bool) -> SessionState:
    """The state after ``frame`` was handled (``succeeded`` is False if it was refused)."""
    if not succeeded:
        return state
    if state is SessionState.UNAUTHENTICATED and isinstance(frame, f.AuthRequest):
        return SessionState.AUTHENTICATED
    if isinstance(frame, f.Logout):
        return SessionState.CLOSING
    return state


def _tag(frame: object) -> str:
    config = getattr(type(frame), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return str(tag) if tag is not None else type(frame).__name__
