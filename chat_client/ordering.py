"""What this client has seen of each case's order, and what contradicts it (V2 section 4).

Web counterpart: web_client/src/ordering.js.

For every case the processor has delivered from, :class:`Ordering` keeps a window of
the records from seq 1 on (loaded once per process from the hub, then extended as
records are delivered) with their verified envelopes. It answers two questions:

* **Sending**: the (prev_seq, prev_hash, n) the next message signs: the last record
  seen, and this account's counter (the highest own ``n`` seen in the case or handed
  out in this process, plus one). The outbox seals ``n`` into the bytes once, so a
  resend keeps it.
* **Checking**: after each change, protocol.transcript's ``check_order`` and
  ``check_receipts`` over the window, plus "a seq seen before now has another chain
  hash". Each new finding becomes a :class:`WarningEvent` naming the seq and kind,
  reported once.

Pure bookkeeping: no I/O (the processor fetches and opens records and calls in).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from protocol import crypto
from protocol import frames as f
from protocol.transcript import OrderProblem, check_order, check_receipts

from .models import Message, WarningEvent

__all__ = ["Ordering"]

_ZERO_HASH = bytes(32)


@dataclasses.dataclass
class _Window:
    records: list[f.MessageRecord] = dataclasses.field(default_factory=list)
    opened: dict[int, crypto.Envelope] = dataclasses.field(default_factory=dict)
    hashes: dict[int, bytes] = dataclasses.field(default_factory=dict)
    receipts: dict[tuple[str, str], f.SignedReceipt] = dataclasses.field(default_factory=dict)
    own_n: int = 0

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else 0


class Ordering:
    """See the module docstring. ``account_id`` is ours (for the counter)."""

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id
        self._cases: dict[str, _Window] = {}
        # (case, seq) -> the chain hash an earlier process saw there (the stored cursor)
        self._prior: dict[tuple[str, int], bytes] = {}
        self._reported: set[tuple[str, int, str, str]] = set()

    def loaded(self, case_id: str) -> bool:
        return case_id in self._cases

    def start(self, case_id: str) -> None:
        """Open an (empty) window for a case whose history starts here (cursor 0)."""
        self._cases.setdefault(case_id, _Window())

    def last_seq(self, case_id: str) -> int:
        window = self._cases.get(case_id)
        return window.last_seq if window else 0

    def chain_hash_at(self, case_id: str, seq: int) -> bytes | None:
        """The chain hash this client saw at ``seq`` (None: not seen)."""
        window = self._cases.get(case_id)
        seen = window.hashes.get(seq) if window else None
        return seen if seen is not None else self._prior.get((case_id, seq))

    def seen_hashes(self, case_id: str, seq: int) -> set[bytes]:
        """Every chain hash this client saw at ``seq`` (this process and the cursor an
        earlier one stored): more than one, or one unlike the hub's, is a rewrite."""
        window = self._cases.get(case_id)
        seen = {h for h in (self._prior.get((case_id, seq)),) if h is not None}
        if window is not None and seq in window.hashes:
            seen.add(window.hashes[seq])
        return seen

    # -- recording -------------------------------------------------------------------

    def add(self, record: f.MessageRecord, message: Message) -> list[WarningEvent]:
        """Append a delivered record (in seq order; an older seq is only compared)."""
        window = self._cases.setdefault(record.case_id, _Window())
        warnings = self._compare(window, record)
        if record.seq <= window.last_seq:
            return warnings
        window.records.append(record)
        window.hashes[record.seq] = record.chain_hash
        if message.envelope is not None:
            window.opened[record.seq] = message.envelope
            if record.sender_id == self._account_id:
                window.own_n = max(window.own_n, message.envelope.n)
        return warnings

    def compare(self, record: f.MessageRecord) -> list[WarningEvent]:
        """A record presented again (history, resync): warn if its chain hash changed."""
        return self._compare(self._cases.get(record.case_id, _Window()), record)

    def seen_before(self, case_id: str, seq: int, chain_hash: bytes | None) -> None:
        """What a previous process saw (the stored cursor), compared when presented."""
        if chain_hash is not None and seq > 0:
            self._prior[(case_id, seq)] = chain_hash

    def vanished(self, case_id: str, seq: int) -> list[WarningEvent]:
        """The hub no longer presents ``seq``, which this client received before."""
        problem = OrderProblem(
            seq,
            "dropped",
            "hub",
            f"seq {seq}, which this client received before, is no longer in the history",
        )
        warning = self._report(case_id, problem)
        return [warning] if warning is not None else []

    def add_receipts(self, case_id: str, receipts: Iterable[f.SignedReceipt]) -> None:
        window = self._cases.setdefault(case_id, _Window())
        for r in receipts:
            window.receipts[(r.account_id, r.kind)] = r

    # -- sending ---------------------------------------------------------------------

    def next_order(self, case_id: str) -> tuple[int, bytes, int]:
        """(prev_seq, prev_hash, n) for the next message we compose in ``case_id``."""
        window = self._cases.setdefault(case_id, _Window())
        window.own_n += 1
        if not window.records:
            return 0, _ZERO_HASH, window.own_n
        last = window.records[-1]
        return last.seq, last.chain_hash, window.own_n

    # -- checking --------------------------------------------------------------------

    def has_receipts(self, case_id: str) -> bool:
        """Are there signed receipts within what was seen (whose check needs keys)?"""
        window = self._cases.get(case_id)
        return window is not None and any(
            r.up_to_seq <= window.last_seq for r in window.receipts.values()
        )

    def check(self, case_id: str, sign_pks: Mapping[str, bytes]) -> list[WarningEvent]:
        """New findings of check_order / check_receipts over the case's window."""
        window = self._cases.get(case_id)
        if window is None:
            return []
        problems = check_order(window.records, window.opened)
        relevant = [r for r in window.receipts.values() if r.up_to_seq <= window.last_seq]
        problems += check_receipts(case_id, window.records, relevant, sign_pks)
        return [w for p in problems if (w := self._report(case_id, p)) is not None]

    def _compare(self, window: _Window, record: f.MessageRecord) -> list[WarningEvent]:
        seen = window.hashes.get(record.seq, self._prior.get((record.case_id, record.seq)))
        if seen is None or seen == record.chain_hash:
            return []
        problem = OrderProblem(
            record.seq,
            "rewritten",
            record.sender_id,
            f"seen chain hash changed: seq {record.seq} is not the record this client saw "
            "before (the history up to it was rewritten)",
        )
        warning = self._report(record.case_id, problem)
        return [warning] if warning is not None else []

    def _report(self, case_id: str, problem: OrderProblem) -> WarningEvent | None:
        key = (case_id, problem.seq, problem.kind, problem.detail)
        if key in self._reported:
            return None
        self._reported.add(key)
        return WarningEvent(case_id, problem.kind, str(problem), problem.seq)
