"""The per-session token bucket (chat_server/ratelimit.py), on an injected clock."""

from __future__ import annotations

from chat_server.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, 3, clock=clock)  # (binary-exact steps: 1/8 s is half a token)
    for _ in range(3):
        bucket.take()
    clock.now += 0.125  # half a token
    assert not bucket.take()
    clock.now += 0.125  # the second half: one token
    assert bucket.take() and not bucket.take()
    clock.now += 60.0  # a long pause refills to the burst, no more
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_refused_frame_costs_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 1, clock=clock)
    assert bucket.take()
    for _ in range(5):
        assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()
