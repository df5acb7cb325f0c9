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
from protocol.frames import CaseInfo

from .models import (
    CaseAssignedEvent,
    CaseClosedEvent,
    ConnectionEvent,
    Message,
    MessageEvent,
    ReceiptEvent,
    TypingEvent,
    WarningEvent,
)
from .sdk import ChatClient

__all__ = [
    "Names",
    "Printer",
    "case_json",
    "format_message",
    "message_json",
    "run_chat",
    "run_watch",
]

VERIFIED_MARK = "✓"
UNVERIFIED_MARK = "✗ UNVERIFIED"


def clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


class Names:
    """account_id -> handle, from the directory; falls back to the id on any error."""

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
        return self._names.get(account_id, account_id)


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
    who = "me" if message.sender_id == me else names[message.sender_id]
    head = f"[#{message.seq} {clock(message.ts)}] {who}"
    if message.verified:
        return f"{head} {VERIFIED_MARK}: {message.body}"
    return f"{head} {UNVERIFIED_MARK} ({message.error}) - content withheld"


class Printer:
    """Writes either human lines or JSON lines, flushing each (stdout may be a pipe)."""

    def __init__(self, *, as_json: bool, out: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout

    def json(self, value: Any) -> None:
        self.out.write(json.dumps(value, ensure_ascii=False) + "\n")
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
    """Print incoming messages until ``count`` were printed or ``seconds`` passed.

    Returns 0 if ``count`` was reached (or none was asked for), 1 on a timeout short of
    ``count``."""
    names = Names(client)
    seen = 0

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
            elif isinstance(event, ConnectionEvent) and not printer.as_json:
                print(f"* {event.state}: {event.detail}", file=sys.stderr, flush=True)
            elif isinstance(event, WarningEvent):
                print(f"! WARNING {event.text}", file=sys.stderr, flush=True)

    try:
        await asyncio.wait_for(consume(), seconds)
    except TimeoutError:
        if count is not None and seen < count:
            print(f"timeout: received {seen} of {count} messages", file=sys.stderr)
            return 1
    return 0


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


async def run_chat(client: ChatClient, case: CaseInfo, printer: Printer) -> int:
    """Interactive mode: print the case's messages as they arrive, send typed lines.

    Ends on EOF, ``/quit`` or when the case is closed. Incoming messages from the other
    participant are acknowledged with a "read" receipt once printed."""
    names = Names(client)
    await names.resolve([a for a in (case.client_id, case.counselor_id) if a])
    other = case.counselor_id if case.client_id == client.account_id else case.client_id
    if not printer.as_json:
        peer = names[other] if other else "(waiting for a counselor)"
        printer.line(f"* case {case.case_id} [{case.state}] with {peer}; /quit to leave")
    closed = asyncio.Event()

    async def show() -> None:
        typing_shown: dict[str, bool] = {}
        async for event in client.events():
            if isinstance(event, MessageEvent) and event.message.case_id == case.case_id:
                message = event.message
                await names.resolve([message.sender_id])
                printer.emit(
                    format_message(message, names, me=client.account_id),
                    message_json(message, names),
                )
                if message.sender_id != client.account_id:
                    with contextlib.suppress(pe.ProtocolError):
                        await client.receipt(case.case_id, "read", message.seq)
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
            except (pe.RemoteError, ValueError) as exc:
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
        printer.line(f"* {text}")
