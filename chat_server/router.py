"""The dispatch table: frame type -> use case. Which frames are legal when is in
protocol/session.py; this table only says who handles them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from protocol import frames as f

from .handlers import auth, cases, disputes, escrow, messages

__all__ = ["HANDLERS"]

Handler = Callable[[Any, Any, Any], Awaitable[msgspec.Struct | None]]

HANDLERS: dict[type[msgspec.Struct], Handler] = {
    f.Hello: auth.hello,
    f.Ping: auth.ping,
    f.Register: auth.register,
    f.Prelogin: auth.prelogin,
    f.Login: auth.login,
    f.AuthRequest: auth.auth,
    f.Logout: auth.logout,
    f.DirectoryGet: cases.directory_get,
    f.CaseOpen: cases.case_open,
    f.CaseList: cases.case_list,
    f.CaseKeyDeposit: cases.case_key,
    f.CaseKeys: cases.case_keys,
    f.CaseClose: cases.case_close,
    f.MsgSend: messages.msg_send,
    f.Sync: messages.sync,
    f.Receipt: messages.receipt,
    f.Typing: messages.typing,
    # escrow and disputes (docs/DISPUTES.md)
    f.PolicyGet: escrow.policy_get,
    f.ConsentAccept: escrow.consent,
    f.CaseCapsule: escrow.case_capsule,
    f.DisputeRequest: disputes.dispute_request,
    f.DisputeList: disputes.dispute_list,
}
