"""Backoff and close-code classification."""

from __future__ import annotations

from chat_client.connection import Backoff, CloseInfo, is_resumable


def test_backoff_doubles_from_0_2_to_10_with_jitter() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(12)]
    bases = [min(10.0, 0.2 * 2**i) for i in range(12)]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= delay <= base
    backoff.reset()
    assert backoff.next_delay() <= 0.2


def test_resumable_codes() -> None:
    for code in (1001, 1006, 1011, 1013, 4008):
        assert is_resumable(CloseInfo(code, ""))
    for code in (1000, 1007, 1008, 1009, 4001, 4002, 4003, 4009):
        assert not is_resumable(CloseInfo(code, ""))
    assert is_resumable(CloseInfo(1000, "handshake timed out", local=True))
    assert not is_resumable(CloseInfo(1001, "", by_client=True))
