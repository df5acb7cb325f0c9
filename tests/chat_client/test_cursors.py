"""The dedupe / gap rule of the cursor tracker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat_client.cursors import Cursor, CursorTracker, Verdict
from protocol.chain import GENESIS


def test_fresh_case_starts_at_zero_with_genesis() -> None:
    t = CursorTracker()
    assert t.get("c") == Cursor(0, GENESIS)
    assert t.classify("c", 1) is Verdict.NEXT
    assert t.classify("c", 2) is Verdict.GAP
    assert t.classify("c", 0) is Verdict.DUPLICATE


def test_advance_only_to_next() -> None:
    t = CursorTracker({"c": Cursor(3, b"h" * 32)})
    assert t.classify("c", 3) is Verdict.DUPLICATE
    with pytest.raises(ValueError):
        t.advance("c", 5, b"x" * 32)
    t.advance("c", 4, b"y" * 32)
    assert t.get("c") == Cursor(4, b"y" * 32)


def test_raise_to_never_goes_back() -> None:
    t = CursorTracker()
    assert t.raise_to("c", 5, None)
    assert not t.raise_to("c", 2, b"z" * 32)
    assert t.last("c") == 5
    assert "c" in t and list(t) == ["c"]
    assert t.snapshot() == {"c": Cursor(5, None)}


@given(st.lists(st.integers(min_value=1, max_value=30), max_size=200))
def test_any_arrival_order_delivers_each_seq_once_in_order(arrivals: list[int]) -> None:
    """Model of the processor: NEXT delivers, GAP syncs (delivers every missing seq up to
    the server's last), DUPLICATE drops. Whatever the server resends or reorders, the
    delivered sequence is 1..max with no repeat and no hole."""
    t = CursorTracker()
    delivered: list[int] = []
    for seq in arrivals:
        verdict = t.classify("c", seq)
        if verdict is Verdict.NEXT:
            t.advance("c", seq, b"")
            delivered.append(seq)
        elif verdict is Verdict.GAP:
            for s in range(t.last("c") + 1, seq + 1):  # the sync
                t.advance("c", s, b"")
                delivered.append(s)
    assert delivered == list(range(1, len(delivered) + 1))
    assert delivered[-1:] == ([max(arrivals)] if arrivals else [])
