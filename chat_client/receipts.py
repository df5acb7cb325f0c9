"""Delivered and read receipts the client sends by itself.

A message from the other participant is acknowledged "delivered" as the application
receives it (:meth:`ReceiptSender.delivered`, in the background) and "read" when the
application shows it (:meth:`ReceiptSender.read`, awaited). Each receipt goes out only
if it raises what this client already said for that case, so a burst of messages costs
one receipt per case, not one per message. Receipts are a courtesy to the other side:
failing to send one (the case was closed, the link dropped) is logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from protocol import errors as pe

from .errors import ClientError

__all__ = ["ReceiptKind", "ReceiptSender"]

log = logging.getLogger(__name__)

ReceiptKind = Literal["delivered", "read"]
#: How long close() waits for receipts still on their way.
FLUSH_S = 2.0


class ReceiptSender:
    """Sends receipts through ``send(case_id, kind, up_to_seq)``, each mark only upwards."""

    def __init__(self, send: Callable[[str, ReceiptKind, int], Awaitable[None]]) -> None:
        self._send = send
        self._said: dict[tuple[str, ReceiptKind], int] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def delivered(self, case_id: str, seq: int) -> None:
        """Say "delivered up to ``seq``" in the background."""
        if not self._raises(case_id, "delivered", seq):
            return
        task = asyncio.get_running_loop().create_task(self._say(case_id, "delivered", seq))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def read(self, case_id: str, seq: int) -> None:
        """Say "read up to ``seq``" now (read implies delivered)."""
        self._raises(case_id, "delivered", seq)
        if self._raises(case_id, "read", seq):
            await self._say(case_id, "read", seq)

    async def flush(self) -> None:
        """Wait (briefly) for the receipts still on their way."""
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._pending, return_exceptions=True), FLUSH_S
                )

    def _raises(self, case_id: str, kind: ReceiptKind, seq: int) -> bool:
        if seq <= self._said.get((case_id, kind), 0):
            return False
        self._said[(case_id, kind)] = seq
        return True

    async def _say(self, case_id: str, kind: ReceiptKind, seq: int) -> None:
        try:
            await self._send(case_id, kind, seq)
        except (pe.ProtocolError, ClientError) as exc:
            log.info("%s receipt not sent: %s", kind, type(exc).__name__)
