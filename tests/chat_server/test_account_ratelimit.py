"""chat_server/account_ratelimit.py: one GCRA budget per account across nodes, in the
real Redis (Lua) and in process, with the same decisions for the same history."""

from __future__ import annotations

import random

import pytest
import redis.asyncio

from chat_server.account_ratelimit import (
    LocalAccountRateLimiter,
    RateDecision,
    RateLimit,
    RedisAccountRateLimiter,
)
from chat_server.redis_client import RedisSettings
from tests.helpers.hubs import free_port

FIVE_PER_S = RateLimit("send", rate_per_s=5, burst=3)  # one token per 200 ms


class Clock:
    """Microseconds that move only when the test says so."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now = start_us

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1000)


@pytest.fixture
def settings(redis_url: str, redis_prefix: str) -> RedisSettings:
    return RedisSettings(redis_url, prefix=f"{redis_prefix}{random.getrandbits(32):x}:")


async def test_a_burst_then_refusals_that_say_when_to_retry() -> None:
    clock = Clock()
    limiter = LocalAccountRateLimiter(FIVE_PER_S, now_us=clock)
    taken = [await limiter.take("acc") for _ in range(3)]
    assert [d.remaining for d in taken] == [2, 1, 0] and all(d.allowed for d in taken)
    assert await limiter.take("acc") == RateDecision(False, 200, 0)
    assert (await limiter.take("other")).allowed  # budgets are per account
    clock.advance_ms(150)
    assert await limiter.take("acc") == RateDecision(False, 50, 0)
    clock.advance_ms(50)
    assert await limiter.take("acc") == RateDecision(True, 0, 0)
    clock.advance_ms(10_000)  # long idle: full again, never more than the burst
    assert await limiter.take("acc", 3) == RateDecision(True, 0, 0)
    assert limiter.stats.allowed == 6 and limiter.stats.refused == 2


async def test_redis_decides_exactly_as_the_local_limiter(settings: RedisSettings) -> None:
    """The Lua script and gcra() are the same algorithm: same history, same answers."""
    limit = RateLimit("eq", rate_per_s=15, burst=6)
    clock = Clock()
    local = LocalAccountRateLimiter(limit, now_us=clock)
    shared = RedisAccountRateLimiter(settings, limit, now_us=clock)
    rng = random.Random(12)
    try:
        answers = []
        for _ in range(400):
            clock.advance_ms(rng.choice([0, 0, 0, 1, 5, 13, 25, 60, 400]))
            account, amount = rng.choice(["a", "b", "c"]), rng.randint(1, 3)
            expected = await local.take(account, amount)
            assert await shared.take(account, amount) == expected
            answers.append(expected.allowed)
        assert 50 < sum(answers) < 350, sum(answers)  # both answers were exercised
        assert shared.stats.fallbacks == 0
    finally:
        await shared.close()


async def test_nodes_share_one_budget_and_full_buckets_cost_no_memory(
    settings: RedisSettings,
) -> None:
    slow = RateLimit("open", rate_per_s=0.01, burst=5)  # no refill during the test
    node_a = RedisAccountRateLimiter(settings, slow)
    node_b = RedisAccountRateLimiter(settings, slow)
    raw = redis.asyncio.Redis.from_url(settings.url)
    try:
        assert [(await node_a.take("acc")).allowed for _ in range(3)] == [True] * 3
        assert (await node_b.take("acc", 2)).allowed
        refused = await node_b.take("acc")
        assert not refused.allowed and refused.remaining == 0
        assert 99_000 <= refused.retry_after_ms <= 100_000  # one token per 100 s
        assert not (await node_a.take("acc")).allowed

        key = f"{settings.prefix}rl:open:acc"
        assert 400_000 <= await raw.pttl(key) <= 500_000  # until the bucket is full
        fast = RateLimit("fast", rate_per_s=1000, burst=2)
        assert (await RedisAccountRateLimiter(settings, fast).take("acc")).allowed
        assert await raw.pttl(f"{settings.prefix}rl:fast:acc") <= 1
    finally:
        await raw.aclose()
        await node_a.close()
        await node_b.close()


async def test_without_redis_the_local_bucket_decides_and_it_is_counted() -> None:
    dead = RedisSettings(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
    clock = Clock()
    limiter = RedisAccountRateLimiter(
        dead, FIVE_PER_S, fallback=LocalAccountRateLimiter(FIVE_PER_S, now_us=clock)
    )
    try:
        decisions = [await limiter.take("acc") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert limiter.stats.fallbacks == 4 and limiter.stats.refused == 1
    finally:
        await limiter.close()


async def test_the_local_limiter_forgets_full_buckets_first_and_stays_bounded() -> None:
    clock = Clock()
    limiter = LocalAccountRateLimiter(FIVE_PER_S, max_keys=10, now_us=clock)
    for n in range(10):
        await limiter.take(f"old{n}")
    clock.advance_ms(1000)  # the old buckets are full again
    for n in range(10):
        await limiter.take(f"new{n}")
    assert len(limiter) == 10 and limiter.stats.forgotten == 0
    for n in range(30):
        await limiter.take(f"more{n}")
    assert len(limiter) == 10 and limiter.stats.forgotten == 30


def test_amounts_and_limits_are_checked() -> None:
    limiter = LocalAccountRateLimiter(FIVE_PER_S)
    for amount in (0, 4):
        with pytest.raises(ValueError):
            limiter.take_now("acc", amount)
    for bad in (("x", 0, 1), ("x", 1, 0), ("", 1, 1), ("a:b", 1, 1)):
        with pytest.raises(ValueError):
            RateLimit(*bad)


async def test_peek_answers_like_take_without_taking(settings: RedisSettings) -> None:
    """``peek`` (failed-login buckets: checked before hashing, filled only by failures)
    says what one ``take`` would, in Redis exactly as in memory, and changes nothing."""
    limit = RateLimit("peek", rate_per_s=5, burst=3)
    clock = Clock()
    local = LocalAccountRateLimiter(limit, now_us=clock)
    shared = RedisAccountRateLimiter(settings, limit, now_us=clock)
    try:
        for limiter in (local, shared):
            assert await limiter.peek("acc") == RateDecision(True, 0, 2)
            for _ in range(3):
                assert (await limiter.take("acc")).allowed
            assert await limiter.peek("acc") == RateDecision(False, 200, 0)
            assert await limiter.peek("acc") == RateDecision(False, 200, 0)  # took nothing
        clock.advance_ms(200)
        assert await local.peek("acc") == await shared.peek("acc") == RateDecision(True, 0, 0)
        assert local.stats.allowed == 3 and local.stats.refused == 0  # peeks are not counted
    finally:
        await shared.close()


async def test_peek_falls_back_to_the_local_bucket() -> None:
    dead = RedisSettings(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
    limiter = RedisAccountRateLimiter(dead, FIVE_PER_S)
    try:
        assert (await limiter.peek("acc")).allowed
        assert limiter.stats.fallbacks == 1
    finally:
        await limiter.close()
