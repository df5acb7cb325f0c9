"""Terminal output and the two long-running CLI modes: ``chat`` and ``watch``.

Message text is printed only to the user's own terminal (stdout), never to a log.
Every human-readable line marks verification: ``✓`` verified, ``✗ UNVERIFIED`` otherwise,
and an unverified message never shows a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from protocol import errors as pe
from protocol.frames import CaseInfo, QueueInfo

from .errors import CaseNotReady
from .models import (
    WAITING_FOR_KEY,
    CaseAssignedEvent,
    CaseClosedEvent,
    ConnectionEvent,
    KeyPendingEvent,
    Message,
    MessageEvent,
    QueueEvent,
    ReceiptEvent,
    TypingEvent,
    WarningEvent,
)
from .safetext import escape, escape_json, lines
from .sdk import ChatClient
from .wording import queue_place

__all__ = [
    "DEFAULT_BACKLOG",
    "Names",
    "Printer",
    "case_json",
    "case_tag",
    "describe_case",
    "format_message",
    "message_json",
    "run_chat",
    "run_watch",
    "show_messages",
]

VERIFIED_MARK = "✓"
UNVERIFIED_MARK = "✗ UNVERIFIED"
#: Messages ``chat`` shows before the live ones, unless --backlog says otherwise.
DEFAULT_BACKLOG = 20


def clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def case_tag(case_id: str) -> str:
    """The short case tag every message line starts with (the web page shows the same)."""
    return case_id[-6:]


class Names:
    """account_id -> handle, from the directory; falls back to the id on any error.
    Handles come escaped for the terminal (the directory is the hub's word)."""

    def __init__(self, client: ChatClient) -> None:
        self._client = client
        self._names: dict[str, str] = {client.account_id: client.handle}

    async def resolve(self, account_ids: Iterable[str]) -> None:
        missing = [a for a in dict.fromkeys(account_ids) if a not in self._names]
        if not missing:
            return
        with contextlib.suppress(pe.ProtocolError):
            for entry in await self._client.directory(missing):
                self._names[entry.account_id] = entry.handle

    def __getitem__(self, account_id: str) -> str:
        return escape(self._names.get(account_id, account_id))


def message_json(message: Message, names: Names | None = None) -> dict[str, Any]:
    return {
        "case_id": message.case_id,
        "seq": message.seq,
        "epoch": message.epoch,
        "sender_id": message.sender_id,
        "sender": names[message.sender_id] if names else None,
        "client_msg_id": message.client_msg_id,
        "ts": message.ts,
        "verified": message.verified,
        "body": message.body,
        "error": message.error,
    }


def case_json(case: CaseInfo) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "state": case.state,
        "topic": case.topic,
        "language": case.language,
        "client_id": case.client_id,
        "counselor_id": case.counselor_id,
        "epoch": case.epoch,
        "last_seq": case.last_seq,
        "created_at": case.created_at,
    }


def format_message(message: Message, names: Names, *, me: str = "") -> str:
    """``[tag #seq hh:mm:ss] who ✓: body``; a body's further lines are indented, and
    everything the sender chose is escaped (:mod:`chat_client.safetext`)."""
    who = "me" if message.sender_id == me else names[message.sender_id]
    head = f"[{case_tag(message.case_id)} #{message.seq} {clock(message.ts)}] {who}"
    if message.verified:
        return f"{head} {VERIFIED_MARK}: {lines(message.body or '')}"
    if message.error == WAITING_FOR_KEY:
        return f"{head}: ({WAITING_FOR_KEY}: shown once their device shares it)"
    return f"{head} {UNVERIFIED_MARK} ({escape(message.error or '')}) - content withheld"


def describe_case(case: CaseInfo, with_: str = "") -> str:
    """``case_… (tag abc123) with calm-river: topic anxiety, language en, opened 12:00:00``."""
    return (
        f"{case.case_id} (tag {case_tag(case.case_id)}){with_}: topic {escape(case.topic)}, "
        f"language {escape(case.language)}, opened {clock(case.created_at)}"
    )


class Printer:
    """Writes either human lines or JSON lines, flushing each (stdout may be a pipe)."""

    def __init__(self, *, as_json: bool, out: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout

    def json(self, value: Any) -> None:
        self.out.write(escape_json(json.dumps(value, ensure_ascii=False)) + "\n")
        self.out.flush()

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def emit(self, text: str, value: Any) -> None:
        """Print ``value`` as JSON in --json mode, else ``text``."""
        if self.as_json:
            self.json(value)
        else:
            self.line(text)


# -- watch ----------------------------------------------------------------------------


async def run_watch(
    client: ChatClient,
    printer: Printer,
    *,
    case_id: str | None,
    count: int | None,
    seconds: float | None,
) -> int:
    """Print incoming messages, and announce each case assigned to or closed for this
    account (with its id, topic and language), until ``count`` messages were printed or
    ``seconds`` passed.

    Returns 0 if ``count`` was reached (or none was asked for), 1 on a timeout short of
    ``count``."""
    names = Names(client)
    seen = 0
    known = {c.case_id: c for c in await client.cases()}
    if not printer.as_json:  # what is already on this account's desk
        for case in known.values():
            if case.state == "assigned" and case_id in (None, case.case_id):
                await _announce(client, printer, names, case, "open case")

    async def consume() -> None:
        nonlocal seen
        async for event in client.events():
            if isinstance(event, MessageEvent):
                message = event.message
                if case_id is not None and message.case_id != case_id:
                    continue
                await names.resolve([message.sender_id])
                printer.emit(
                    format_message(message, names, me=client.account_id),
                    message_json(message, names),
                )
                seen += 1
                if count is not None and seen >= count:
                    return
            elif isinstance(event, CaseAssignedEvent):
                case = known[event.case.case_id] = event.case
                if case_id is None or case.case_id == case_id:
                    await _announce_assigned(client, printer, names, case)
            elif isinstance(event, CaseClosedEvent):
                if case_id is None or event.case_id == case_id:
                    if event.case_id not in known:
                        known.update((c.case_id, c) for c in await client.cases())
                    _announce_closed(printer, event.case_id, known.get(event.case_id))
            elif isinstance(event, KeyPendingEvent):
                if case_id is None or event.case_id == case_id:
                    _key_pending(printer, event)
            elif isinstance(event, ConnectionEvent) and not printer.as_json:
                print(f"* {event.state}: {escape(event.detail)}", file=sys.stderr, flush=True)
            elif isinstance(event, WarningEvent):
                print(f"! WARNING {escape(event.text)}", file=sys.stderr, flush=True)

    try:
        await asyncio.wait_for(consume(), seconds)
    except TimeoutError:
        if count is not None and seen < count:
            print(f"timeout: received {seen} of {count} messages", file=sys.stderr)
            return 1
    return 0


async def _announce_assigned(
    client: ChatClient, printer: Printer, names: Names, case: CaseInfo
) -> None:
    await _announce(client, printer, names, case, "case assigned")


async def _announce(
    client: ChatClient, printer: Printer, names: Names, case: CaseInfo, what: str
) -> None:
    other = case.counselor_id if case.client_id == client.account_id else case.client_id
    await names.resolve([other] if other else [])
    with_ = f" with {names[other]}" if other else ""
    printer.emit(
        f"* {what}: {describe_case(case, with_)}; answer with: chat-client chat {case.case_id}",
        {"event": "case.assigned", "case": case_json(case)},
    )


def _key_pending(printer: Printer, event: KeyPendingEvent) -> None:
    printer.emit(
        f"* [{case_tag(event.case_id)}] {WAITING_FOR_KEY}: messages from #{event.seq} on "
        "are shown once their device shares it (it does when it is online)",
        {"event": "key.pending", "case_id": event.case_id, "epoch": event.epoch, "seq": event.seq},
    )


def _announce_closed(printer: Printer, case_id: str, case: CaseInfo | None) -> None:
    what = describe_case(case) if case is not None else f"{case_id} (tag {case_tag(case_id)})"
    printer.emit(
        f"* case closed: {what}",
        {"event": "case.closed", "case_id": case_id, "case": case_json(case) if case else None},
    )


async def show_messages(
    client: ChatClient, messages: list[Message], printer: Printer, names: Names
) -> None:
    """Print ``messages`` and tell their senders they were read."""
    await names.resolve(m.sender_id for m in messages)
    for m in messages:
        printer.emit(format_message(m, names, me=client.account_id), message_json(m, names))
    theirs = [m for m in messages if m.sender_id != client.account_id and m.verified]
    if theirs:
        await client.mark_read(theirs[-1].case_id, max(m.seq for m in theirs))


async def show_backlog(
    client: ChatClient, case_id: str, printer: Printer, names: Names, backlog: int
) -> int:
    """Show the last ``backlog`` messages of the case; the highest seq shown for good
    (messages waiting for the client's key come again, readable, once it arrives)."""
    history = await client.history(case_id)
    last = history[-backlog:] if backlog > 0 else []
    if last and not printer.as_json and len(last) < len(history):
        printer.line(f"* the last {len(last)} of {len(history)} messages (history {case_id})")
    await show_messages(client, last, printer, names)
    held = [m.seq for m in history if m.error == WAITING_FOR_KEY]
    return min(held) - 1 if held else max((m.seq for m in history), default=0)


# -- chat -----------------------------------------------------------------------------


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines of stdin as a queue (None at EOF). A daemon thread does the blocking read,
    so it never holds the process open after the chat ends."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return queue


async def run_chat(
    client: ChatClient, case: CaseInfo, printer: Printer, *, backlog: int = DEFAULT_BACKLOG
) -> int:
    """Interactive mode: show the case's last ``backlog`` messages, then print its
    messages as they arrive and send typed lines.

    Ends on EOF, ``/quit`` or when the case is closed. Messages from the other
    participant are acknowledged with a "read" receipt once printed."""
    names = Names(client)
    await names.resolve([a for a in (case.client_id, case.counselor_id) if a])
    other = case.counselor_id if case.client_id == client.account_id else case.client_id
    if not printer.as_json:
        peer = (
            f" with {names[other]}"
            if other
            else " (waiting for a counselor; write now, they read it once assigned)"
        )
        printer.line(f"* chatting in {describe_case(case, peer)} [{case.state}]; /quit to leave")
    shown = await show_backlog(client, case.case_id, printer, names, backlog)
    closed = asyncio.Event()

    async def show() -> None:
        typing_shown: dict[str, bool] = {}
        async for event in client.events():
            if isinstance(event, MessageEvent) and event.message.case_id == case.case_id:
                message = event.message
                if message.seq <= shown:
                    continue  # already in the backlog
                await names.resolve([message.sender_id])
                printer.emit(
                    format_message(message, names, me=client.account_id),
                    message_json(message, names),
                )
                if message.sender_id != client.account_id and message.verified:
                    await client.mark_read(case.case_id, message.seq)
            elif isinstance(event, TypingEvent) and event.case_id == case.case_id:
                if typing_shown.get(event.account_id) != event.active:
                    typing_shown[event.account_id] = event.active
                    if event.active:
                        _notice(printer, f"{names[event.account_id]} is typing…", event)
            elif isinstance(event, ReceiptEvent) and event.case_id == case.case_id:
                if printer.as_json:
                    printer.json({"event": "receipt", "kind": event.kind, "seq": event.up_to_seq})
            elif isinstance(event, ConnectionEvent):
                _notice(printer, f"{event.state}: {event.detail}", event)
            elif isinstance(event, WarningEvent) and event.case_id == case.case_id:
                print(f"! WARNING {event.text}", file=sys.stderr, flush=True)
            elif isinstance(event, CaseAssignedEvent) and event.case.case_id == case.case_id:
                await names.resolve([a for a in (event.case.counselor_id,) if a])
                who = names[event.case.counselor_id] if event.case.counselor_id else "?"
                _notice(printer, f"counselor {who} joined", event)
            elif isinstance(event, QueueEvent) and event.case_id == case.case_id:
                place = QueueInfo(
                    position=event.position,
                    counselors_online=event.counselors_online,
                    specialists_online=event.specialists_online,
                )
                _notice(printer, "waiting: " + queue_place(place, case.topic, case.language), event)
            elif isinstance(event, KeyPendingEvent) and event.case_id == case.case_id:
                _key_pending(printer, event)
            elif isinstance(event, CaseClosedEvent) and event.case_id == case.case_id:
                _notice(printer, "the case was closed", event)
                closed.set()
                return

    async def read_input() -> None:
        lines = _stdin_lines(asyncio.get_running_loop())
        while True:
            line = await lines.get()
            if line is None:
                return
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "/exit"):
                return
            if not text.strip():
                continue
            try:
                await client.send(case.case_id, text)
            except (pe.RemoteError, ValueError, CaseNotReady) as exc:
                _notice(printer, f"not sent: {exc}", None)

    shower = asyncio.create_task(show())
    reader = asyncio.create_task(read_input())
    try:
        done, _ = await asyncio.wait({shower, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise SessionEnded and the like
    finally:
        for task in (shower, reader):
            task.cancel()
        await asyncio.gather(shower, reader, return_exceptions=True)
    return 0


def _notice(printer: Printer, text: str, event: object) -> None:
    if printer.as_json:
        printer.json({"event": type(event).__name__ if event else "notice", "detail": text})
    else:
        printer.line(f"* {escape(text)}")
