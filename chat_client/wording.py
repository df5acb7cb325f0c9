"""The words ``chat-client`` uses for its everyday failures: one wording per meaning.

The hub deliberately answers the same for a case that does not exist and a case the
caller may not see (so nobody can probe for case ids); the client says so in one
sentence, whichever layer noticed (the hub, the SDK or the CLI's own look-up). The
README's "Messages" section lists these.
"""

from __future__ import annotations

from protocol import errors as pe
from protocol.frames import QueueInfo

from .errors import CaseNotReady

__all__ = [
    "BAD_HANDLE",
    "CONSENT_REQUIRED",
    "LANGUAGE_NOT_OFFERED",
    "NO_TERMINAL_TO_ASK",
    "case_closed",
    "case_error",
    "case_waiting",
    "no_such_case",
    "queue_place",
]

BAD_HANDLE = (
    "a handle is 3 to 32 characters: lowercase letters a-z, digits 0-9 and . _ -, "
    "starting with a letter or digit (e.g. calm-river)"
)
CONSENT_REQUIRED = (
    "you have not accepted this service's current terms: run `chat-client consent` first"
)
NO_TERMINAL_TO_ASK = (
    "no passphrase: there is no terminal to ask on; set CHAT_PASSPHRASE or use --passphrase-file"
)


#: How the hub's refusal of a language no counselor speaks begins (it lists the others).
LANGUAGE_NOT_OFFERED = "no counselor of this service speaks"


def queue_place(queue: QueueInfo, topic: str, language: str) -> str:
    """``number 2 in the queue for en; 1 counselor for en online, none for grief``."""
    where = f"number {queue.position} in the queue for {language}"
    if queue.counselors_online == 0:
        return f"{where}; no counselor for {language} is online now: the case waits for one"
    online = f"{queue.counselors_online} counselor{'s' if queue.counselors_online > 1 else ''}"
    topical = (
        f"none for {topic}"
        if queue.specialists_online == 0
        else f"{queue.specialists_online} for {topic}"
    )
    return f"{where}; {online} for {language} online, {topical}"


def no_such_case(case_id: str) -> str:
    return f"no case {case_id} for this account (it does not exist, or you are not in it)"


def case_closed(case_id: str) -> str:
    return f"case {case_id} is closed"


def case_waiting(case_id: str) -> str:
    return f"case {case_id} is waiting for a counselor"


#: The texts the hub and the SDK use for the three meanings above.
_NOT_VISIBLE = ("not a participant of this case", "unknown case", "no such case")
_CLOSED = ("case is closed",)
_WAITING = ("is waiting for a counselor", "not assigned to a counselor yet", "case is waiting")


def case_error(exc: BaseException, case_id: str) -> str | None:
    """The one wording for ``exc`` if it says a case is unknown/invisible, closed or
    waiting; None for anything else."""
    if not isinstance(exc, pe.Forbidden | pe.NotFound | CaseNotReady):
        return None
    text = str(exc)
    if any(t in text for t in _NOT_VISIBLE):
        return no_such_case(case_id)
    if any(t in text for t in _CLOSED):
        return case_closed(case_id)
    if any(t in text for t in _WAITING):
        return case_waiting(case_id)
    return None
