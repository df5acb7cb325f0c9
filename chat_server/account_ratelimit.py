"""Per-account rate limits that hold across every hub node (GCRA, atomically in Redis).

``chat_server/ratelimit.py`` limits one session's frames inside one process. An account
with sessions on several nodes needs one budget shared by all of them: this module keeps
it in Redis, decided by one Lua script per request (``register_script``, so the check
and the update are one atomic step however many nodes ask at once).

The algorithm is GCRA (the generic cell rate algorithm), which is a token bucket of
``burst`` tokens refilled at ``rate_per_s`` stored as one number per account: the
"theoretical arrival time" (TAT) at which the bucket will be full again. A request of
``n`` tokens is allowed when ``max(TAT, now) + n·T - burst·T <= now`` (``T = 1/rate``);
then ``TAT`` moves on by ``n·T``. The key expires when ``TAT`` passes, so a full bucket
costs no memory. docs/DECISIONS.md says what came from Signal-Server's leaky bucket and
where this differs.

Contract:

* ``take(account_id, n=1)`` answers :class:`RateDecision` (allowed, how long to wait,
  tokens left) and never raises for a Redis failure: :class:`RedisAccountRateLimiter`
  then asks its local fallback (the same algorithm, this node's memory only), counts it,
  and goes on. During a Redis outage an account's budget is therefore per node.
* Time is Redis's clock (``TIME``), so skewed node clocks do not matter; tests may
  inject a clock (``now_us``) to step time exactly.
* :class:`LocalAccountRateLimiter` holds at most ``max_keys`` accounts; past that it
  forgets full buckets first, then the oldest (lenient, counted), never grows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from protocol.errors import RateLimited

from .logs import log_event
from .redis_client import RedisSettings, make_client

__all__ = [
    "AccountRateLimiter",
    "LocalAccountRateLimiter",
    "RateDecision",
    "RateLimit",
    "RateLimiterStats",
    "RedisAccountRateLimiter",
    "gcra",
    "require",
]


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """A named budget: ``burst`` tokens at once, refilled at ``rate_per_s``."""

    name: str
    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1 or not self.name or ":" in self.name:
            raise ValueError("a rate limit needs a positive rate, burst >= 1 and a plain name")

    @property
    def interval_us(self) -> int:
        """Microseconds to earn one token (T)."""
        return max(1, round(1_000_000 / self.rate_per_s))


@dataclasses.dataclass(frozen=True)
class RateDecision:
    allowed: bool
    #: When refused: milliseconds until the same request would be allowed; else 0.
    retry_after_ms: int
    #: Whole tokens left after this request (if refused: left now).
    remaining: int


@dataclasses.dataclass
class RateLimiterStats:
    allowed: int = 0
    refused: int = 0
    #: Decisions made by the local fallback because Redis failed.
    fallbacks: int = 0
    #: Accounts the local limiter forgot before their bucket was full (memory bound).
    forgotten: int = 0


class AccountRateLimiter(Protocol):
    @property
    def limit(self) -> RateLimit: ...

    @property
    def stats(self) -> RateLimiterStats: ...

    async def take(self, account_id: str, amount: int = 1) -> RateDecision: ...

    async def peek(self, account_id: str) -> RateDecision: ...


def gcra(
    tat_us: int | None, now_us: int, limit: RateLimit, amount: int
) -> tuple[RateDecision, int | None]:
    """One GCRA step: the decision and the new TAT (None: unchanged). Pure; the Lua
    script below is this function, line for line."""
    interval = limit.interval_us
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + amount * interval
    allow_at = new_tat - limit.burst * interval
    if allow_at > now_us:
        remaining = (limit.burst * interval - (tat - now_us)) // interval
        return RateDecision(False, math.ceil((allow_at - now_us) / 1000), remaining), None
    remaining = (limit.burst * interval - (new_tat - now_us)) // interval
    return RateDecision(True, 0, remaining), new_tat


def _check_amount(limit: RateLimit, amount: int) -> None:
    if not 1 <= amount <= limit.burst:
        raise ValueError("amount must be between 1 and the burst")


def _count(stats: RateLimiterStats, decision: RateDecision) -> RateDecision:
    if decision.allowed:
        stats.allowed += 1
    else:
        stats.refused += 1
    return decision


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class LocalAccountRateLimiter:
    """The same budget in this process's memory: for one node, and as the fallback."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_keys: int = 100_000,
        now_us: Callable[[], int] = _monotonic_us,
    ) -> None:
        self.limit = limit
        self.stats = RateLimiterStats()
        self._max_keys = max_keys
        self._now_us = now_us
        self._tat: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._tat)

    async def take(self, account_id: str, amount: int = 1) -> RateDecision:
        return self.take_now(account_id, amount)

    async def peek(self, account_id: str) -> RateDecision:
        return self.peek_now(account_id)

    def peek_now(self, account_id: str) -> RateDecision:
        """Would one token be granted now? Takes nothing and counts nothing."""
        return gcra(self._tat.get(account_id), self._now_us(), self.limit, 1)[0]

    def take_now(self, account_id: str, amount: int = 1) -> RateDecision:
        """``take`` without an await, for callers that are not coroutines."""
        _check_amount(self.limit, amount)
        now = self._now_us()
        decision, new_tat = gcra(self._tat.get(account_id), now, self.limit, amount)
        if new_tat is not None:
            self._tat.pop(account_id, None)  # re-insert: dict order is last-use order
            self._tat[account_id] = new_tat
            if len(self._tat) > self._max_keys:
                self._shrink(now)
        return _count(self.stats, decision)

    def _shrink(self, now: int) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]  # full again: forgetting it changes nothing
        while len(self._tat) > self._max_keys:
            del self._tat[next(iter(self._tat))]
            self.stats.forgotten += 1


# KEYS[1] the account's bucket; ARGV: interval_us, burst, amount, now_us ('' = Redis TIME),
# take ('1': spend the tokens if allowed; '0': only ask, as peek does)
# -> {allowed 0/1, retry_after_us, remaining}. Mirrors gcra() above.
_GCRA = """
local interval, burst, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local stored = redis.call('GET', KEYS[1])
local tat = stored and tonumber(stored) or now
if tat < now then tat = now end
local new_tat = tat + amount * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now, math.floor((burst * interval - (tat - now)) / interval)}
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
             math.max(1, math.ceil((new_tat - now) / 1000)))
end
return {1, 0, math.floor((burst * interval - (new_tat - now)) / interval)}
"""


class RedisAccountRateLimiter:
    """The budget in Redis, shared by all nodes; the local limiter when Redis fails."""

    def __init__(
        self,
        settings: RedisSettings,
        limit: RateLimit,
        *,
        fallback: LocalAccountRateLimiter | None = None,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        self.limit = limit
        self.stats = RateLimiterStats()
        self._prefix = f"{settings.prefix}rl:{limit.name}:"
        self._redis = make_client(settings)
        self._script = self._redis.register_script(_GCRA)
        self._fallback = fallback or LocalAccountRateLimiter(limit)
        self._now_us = now_us

    async def take(self, account_id: str, amount: int = 1) -> RateDecision:
        _check_amount(self.limit, amount)
        now = "" if self._now_us is None else str(self._now_us())
        try:
            allowed, retry_us, remaining = await self._script(
                keys=[self._prefix + account_id],
                args=[self.limit.interval_us, self.limit.burst, amount, now, "1"],
            )
        except Exception as exc:
            self.stats.fallbacks += 1
            log_event("ratelimit.fallback", logging.WARNING, error=type(exc).__name__)
            return _count(self.stats, self._fallback.take_now(account_id, amount))
        decision = RateDecision(bool(allowed), math.ceil(int(retry_us) / 1000), int(remaining))
        return _count(self.stats, decision)

    async def peek(self, account_id: str) -> RateDecision:
        """Would one token be granted now? Takes nothing (the local fallback's answer
        when Redis fails)."""
        now = "" if self._now_us is None else str(self._now_us())
        try:
            allowed, retry_us, remaining = await self._script(
                keys=[self._prefix + account_id],
                args=[self.limit.interval_us, self.limit.burst, 1, now, "0"],
            )
        except Exception as exc:
            self.stats.fallbacks += 1
            log_event("ratelimit.fallback", logging.WARNING, error=type(exc).__name__)
            return self._fallback.peek_now(account_id)
        return RateDecision(bool(allowed), math.ceil(int(retry_us) / 1000), int(remaining))

    async def close(self) -> None:
        await self._redis.aclose()


async def require(limiter: AccountRateLimiter, account_id: str, what: str) -> None:
    """Take one token of ``account_id``'s budget, or raise ``RateLimited`` saying when
    ``what`` may be asked again."""
    decision = await limiter.take(account_id)
    if not decision.allowed:
        seconds = max(1, -(-decision.retry_after_ms // 1000))
        raise RateLimited(
            f"too many {what}; try again in {seconds} s", retry_after_ms=decision.retry_after_ms
        )
