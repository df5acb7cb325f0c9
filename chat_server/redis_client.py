"""The one place the hub makes Redis clients, and the back-off its Redis users share.

Every Redis user in the hub (the event bus, presence, the shared rate limiter) gets its
client from :func:`make_client`, so timeouts, retries and TLS are decided once:

* **Fail fast.** redis-py's own retries are off and socket timeouts are short. Each
  caller owns its recovery (the bus reconnects with jittered back-off, presence rewrites
  its entries on the next heartbeat, the rate limiter falls back to a local bucket), so
  no hub request ever waits on a dead Redis longer than one timeout, and the database
  stays the only thing a send waits for.
* **URLs as redis-py parses them**: ``redis://``, ``rediss://`` (TLS; CA and client
  certificate through the ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile`` query
  options), ``unix://``. Why this client and not ``asyncio-redis``: docs/DECISIONS.md.
* **One key prefix** (:attr:`RedisSettings.prefix`) in front of every key and channel,
  so several deployments, or test runs, can share one Redis.
"""

from __future__ import annotations

import dataclasses
import random

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisSettings", "backoff_delay", "make_client"]


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how long the hub waits for it."""

    url: str
    #: Put in front of every key and channel name (``chat:`` in production, a per-run
    #: prefix in tests). Keep it short: it is sent with every command.
    prefix: str = "chat:"
    #: Seconds to open a connection (TCP plus TLS plus AUTH).
    connect_timeout_s: float = 1.0
    #: Seconds any one command may take before the connection counts as broken.
    command_timeout_s: float = 2.0


def make_client(settings: RedisSettings) -> Redis:
    """A ``redis.asyncio.Redis`` for ``settings.url`` that fails fast (see module doc).

    Raises ``ValueError`` for a URL redis-py cannot parse (an unknown scheme), at once
    rather than at the first command. No connection is opened here.
    """
    return Redis.from_url(
        settings.url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.command_timeout_s,
        # Callers recover on their own schedule; a retry inside redis-py would only
        # hold the caller (the publish writer, a heartbeat) longer on a dead server.
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        socket_keepalive=True,
        decode_responses=False,
        client_name="counsel-chat",
    )


def backoff_delay(
    attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    Exponential with "equal jitter": half of ``min(cap, base * 2**attempt)`` is fixed
    and half is random, so a fleet of nodes that lost Redis at the same moment does not
    come back in lockstep, yet no node retries in a tight loop.
    """
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 32))
    jitter: float = (rng or _rng).uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


_rng = random.Random()
