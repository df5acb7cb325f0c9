"""The dispatch tables: frame type -> use case, one table per kind of caller.

Which frames are legal when is decided by protocol/session.py; these tables only say who
handles them. :data:`GUEST_ROUTES` serves connections that have not authenticated (the
handler gets a :class:`~chat_server.context.Guest`), :data:`ROUTES` authenticated ones
(a :class:`~chat_server.context.Caller`). Their keys are exactly the state machine's
``PRE_AUTH_FRAMES`` and ``POST_AUTH_FRAMES`` (tests/chat_server/test_router.py).

Each entry is made by :func:`guest` or :func:`caller`, whose signature ties the frame
type to the handler's frame parameter, so mypy --strict refuses an entry whose handler
takes another frame type or another context, or returns something the session cannot
apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import msgspec

from protocol import frames as f

from .context import Caller, Challenged, Guest, SignedIn
from .handlers import auth, cases, disputes, escrow, messages, prefs
from .hub import Hub

__all__ = [
    "GUEST_ROUTES",
    "ROUTES",
    "GuestResult",
    "GuestRoute",
    "Reply",
    "Route",
    "caller",
    "guest",
]

#: What a use case for an authenticated caller answers with: a reply frame, or None
#: (it answered itself, later: ``msg.send`` is acked after its commit).
Reply: TypeAlias = msgspec.Struct | None
#: What a use case before authentication answers with; the two outcomes move the state.
GuestResult: TypeAlias = msgspec.Struct | Challenged | SignedIn

_F = TypeVar("_F", bound=msgspec.Struct)

#: A table entry once checked: its frame argument has the type of the entry's key.
Route: TypeAlias = Callable[[Hub, Caller, Any], Awaitable[Reply]]
GuestRoute: TypeAlias = Callable[[Hub, Guest, Any], Awaitable[GuestResult]]


def guest(
    frame_type: type[_F], handler: Callable[[Hub, Guest, _F], Awaitable[GuestResult]]
) -> tuple[type[msgspec.Struct], GuestRoute]:
    """An entry of :data:`GUEST_ROUTES`: ``handler`` takes ``frame_type`` frames."""
    return frame_type, handler


def caller(
    frame_type: type[_F], handler: Callable[[Hub, Caller, _F], Awaitable[Reply]]
) -> tuple[type[msgspec.Struct], Route]:
    """An entry of :data:`ROUTES`: ``handler`` takes ``frame_type`` frames."""
    return frame_type, handler


GUEST_ROUTES: dict[type[msgspec.Struct], GuestRoute] = dict(
    [
        guest(f.Hello, auth.hello),
        guest(f.Ping, auth.ping),
        guest(f.Register, auth.register),
        guest(f.Prelogin, auth.prelogin),
        guest(f.Login, auth.login),
        guest(f.AuthRequest, auth.auth),
    ]
)

ROUTES: dict[type[msgspec.Struct], Route] = dict(
    [
        caller(f.MsgSend, messages.msg_send),
        caller(f.Sync, messages.sync),
        caller(f.Receipt, messages.receipt),
        caller(f.Typing, messages.typing),
        caller(f.Ping, auth.ping),
        caller(f.Logout, auth.logout),
        caller(f.DirectoryGet, cases.directory_get),
        caller(f.CaseOpen, cases.case_open),
        caller(f.CaseList, cases.case_list),
        caller(f.CaseKeyDeposit, cases.case_key),
        caller(f.CaseKeys, cases.case_keys),
        caller(f.CaseKeyShare, cases.case_key_share),
        caller(f.CaseClose, cases.case_close),
        # escrow and disputes (docs/DISPUTES.md)
        caller(f.PolicyGet, escrow.policy_get),
        caller(f.ConsentAccept, escrow.consent),
        caller(f.CaseCapsule, escrow.case_capsule),
        caller(f.DisputeRequest, disputes.dispute_request),
        caller(f.DisputeList, disputes.dispute_list),
        # protocol version 2 (docs/PROTOCOL.md)
        caller(f.AccountAttest, auth.account_attest),
        caller(f.PrefsGet, prefs.prefs_get),
        caller(f.PrefsPut, prefs.prefs_put),
    ]
)
