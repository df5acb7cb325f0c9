"""Per-case delivery cursors: the dedupe and gap rule, as a pure class.

The server delivers at least once; the client makes the effect exactly once by keeping,
per case, the last seq it delivered and that record's chain hash. A record is

* ``DUPLICATE`` if its seq is at or below the cursor (drop it),
* ``NEXT`` if it is exactly cursor + 1 (deliver it and advance),
* ``GAP`` if it is further ahead (sync from the cursor first, so nothing is skipped).

The chain hash of the last delivered record lets the next one be checked against
protocol/chain.py without keeping any history.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, Mapping

from protocol.chain import GENESIS

__all__ = ["Cursor", "CursorTracker", "Verdict"]


class Verdict(enum.Enum):
    DUPLICATE = "duplicate"
    NEXT = "next"
    GAP = "gap"


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """Last delivered seq of a case and its chain hash (None if not known)."""

    seq: int = 0
    chain_hash: bytes | None = GENESIS


class CursorTracker:
    """Mutable map case_id -> Cursor with the dedupe/gap rule. No I/O."""

    def __init__(self, initial: Mapping[str, Cursor] | None = None) -> None:
        self._cursors: dict[str, Cursor] = dict(initial or {})

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cursors

    def __iter__(self) -> Iterator[str]:
        return iter(self._cursors)

    def get(self, case_id: str) -> Cursor:
        return self._cursors.get(case_id, Cursor())

    def last(self, case_id: str) -> int:
        return self.get(case_id).seq

    def classify(self, case_id: str, seq: int) -> Verdict:
        last = self.last(case_id)
        if seq <= last:
            return Verdict.DUPLICATE
        if seq == last + 1:
            return Verdict.NEXT
        return Verdict.GAP

    def advance(self, case_id: str, seq: int, chain_hash: bytes) -> None:
        """Record delivery of ``seq``; only the next seq may be delivered."""
        last = self.last(case_id)
        if seq != last + 1:
            raise ValueError(f"cursor of {case_id} is at {last}; cannot deliver {seq}")
        self._cursors[case_id] = Cursor(seq, chain_hash)

    def raise_to(self, case_id: str, seq: int, chain_hash: bytes | None) -> bool:
        """Move the cursor forward to ``seq`` if it is ahead (never back). True if moved."""
        if seq <= self.last(case_id):
            return False
        self._cursors[case_id] = Cursor(seq, chain_hash)
        return True

    def snapshot(self) -> dict[str, Cursor]:
        return dict(self._cursors)
