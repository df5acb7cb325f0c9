"""What unauthenticated work may cost the hub (issue 13, item 5; docs/PROTOCOL.md 11).

``register`` and ``login`` each run one server-side Argon2id, the most expensive thing a
stranger can make the hub do. :class:`AuthGuard` bounds it:

* **Argon2 slots** (:class:`WorkGate`): at most ``argon2_concurrency`` hashes at once
  for everyone, and at most ``argon2_per_ip`` running or waiting per client address; a
  bounded number may wait for a slot. Over a bound: ``busy`` with ``retry_after_ms``.
* **Failed logins** are counted per handle and per address in leaky buckets (GCRA,
  ``account_ratelimit``; Signal-Server's RateLimiter is the model, docs/DECISIONS.md):
  a handle or address whose bucket is empty is answered ``rate_limited`` with
  ``retry_after_ms`` *before* any hashing, and only failures fill the buckets, so a
  user's own successful logins never lock them out.
* **Registrations** take one token per attempt from a per-address bucket, before hashing.
* **Unauthenticated connections** (:class:`GuestCounter`): at most ``max_guests`` in
  total and ``max_guests_per_ip`` per address; one more is closed at once with 1013
  (try again later).
* **Tarpit**: a refused ``login`` or ``register`` is answered after ``tarpit_s`` (at most
  its retry_after), and the connection reads nothing meanwhile, so a refused stranger
  costs the hub one cheap answer per ``tarpit_s`` per connection instead of one per
  round trip (the benchmark's hostile load was mostly refusals).

With ``--redis`` the buckets live in Redis (one budget for all nodes); the slots and the
connection counts are this node's own, since they bound this node's CPU and memory.
Bucket keys are keyed BLAKE2b hashes of the handle or address, so Redis holds neither.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable

import nacl.hash
from nacl.encoding import RawEncoder

from protocol.errors import Busy, RateLimited

from .account_ratelimit import AccountRateLimiter, RateLimit
from .config import Config
from .logs import log_event

__all__ = ["AuthGuard", "GuestCounter", "WorkGate", "client_address"]

#: What ``busy`` tells the client to wait: about one hash's time on a loaded hub.
BUSY_RETRY_MS = 500


def client_address(
    remote: object, forwarded_for: str | None, trusted_proxies: tuple[str, ...]
) -> str:
    """The address per-address limits count: the connection's own (``remote``, a socket
    address), or, when that is a trusted proxy, the last hop of its ``X-Forwarded-For``
    (the address the proxy itself saw; earlier hops are the client's word)."""
    host = str(remote[0]) if isinstance(remote, tuple) and remote else "unknown"
    if forwarded_for and host in trusted_proxies:
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return host


class WorkGate:
    """``total`` slots shared by everyone, at most ``per_ip`` held or awaited per address,
    at most ``queue`` callers waiting. ``slot(ip)`` raises Busy instead of queueing more.

    A freed slot goes to the waiting addresses in turn (round robin), not to the oldest
    waiter: a user waits behind at most one hash per other waiting address, however
    many requests each of those has queued."""

    def __init__(self, total: int, per_ip: int, queue: int) -> None:
        if total < 1 or per_ip < 1 or queue < 0:
            raise ValueError("a work gate needs total >= 1, per_ip >= 1, queue >= 0")
        self._free = total
        self._per_ip_max = per_ip
        self._queue_max = queue
        self._waiting = 0
        #: Waiters by address, the addresses in the order of their next turn.
        self._turns: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._per_ip: dict[str, int] = {}
        #: Slots granted and refusals so far (metrics, tests).
        self.granted = 0
        self.refused = 0

    def held_by(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    @contextlib.asynccontextmanager
    async def slot(self, ip: str) -> AsyncIterator[None]:
        held = self._per_ip.get(ip, 0)
        if held >= self._per_ip_max:
            self.refused += 1
            raise Busy(
                "too many logins or registrations from your address at once; retry shortly",
                retry_after_ms=BUSY_RETRY_MS,
            )
        if not self._free and self._waiting >= self._queue_max:
            self.refused += 1
            raise Busy("the server is busy; retry shortly", retry_after_ms=BUSY_RETRY_MS)
        self._per_ip[ip] = held + 1
        try:
            await self._acquire(ip)
            self.granted += 1
            try:
                yield
            finally:
                self._release()
        finally:
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]

    async def _acquire(self, ip: str) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.setdefault(ip, deque()).append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            else:
                self._forget(ip, turn)
            raise

    def _forget(self, ip: str, turn: asyncio.Future[None]) -> None:
        queue = self._turns.get(ip)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._turns[ip]

    def _release(self) -> None:
        """Hand the slot to the next waiting address (which then goes last), or free it."""
        while self._turns:
            ip, queue = next(iter(self._turns.items()))
            turn = queue.popleft()
            self._waiting -= 1
            if queue:
                self._turns.move_to_end(ip)
            else:
                del self._turns[ip]
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


class GuestCounter:
    """Unauthenticated connections, in total and per address (this node's)."""

    def __init__(self, total: int, per_ip: int) -> None:
        self._total_max = total
        self._per_ip_max = per_ip
        self.total = 0
        self._per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``, or False (not counted) over a bound."""
        held = self._per_ip.get(ip, 0)
        if self.total >= self._total_max or held >= self._per_ip_max:
            return False
        self._per_ip[ip] = held + 1
        self.total += 1
        return True

    def leave(self, ip: str) -> None:
        """The connection authenticated or closed (call once per admitted connection)."""
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)
        self.total = max(0, self.total - 1)


def _seconds(ms: int) -> int:
    return max(1, -(-ms // 1000))


class AuthGuard:
    """The limits on ``register`` and ``login`` (module docstring). ``limiter`` makes a
    named bucket (``Hub.limiter``: Redis when configured, else in memory)."""

    def __init__(
        self,
        config: Config,
        limiter: Callable[[RateLimit], AccountRateLimiter],
        key: bytes,
    ) -> None:
        self._key = nacl.hash.blake2b(
            key, digest_size=32, person=b"chat-limit-keys1", encoder=RawEncoder
        )
        self.argon2 = WorkGate(config.argon2_concurrency, config.argon2_per_ip, config.argon2_queue)
        self.guests = GuestCounter(config.max_guests, config.max_guests_per_ip)
        self._failed_handle = limiter(
            RateLimit("login_fail_handle", *config.login_fail_handle_rate)
        )
        self._failed_ip = limiter(RateLimit("login_fail_ip", *config.login_fail_ip_rate))
        self._register_ip = limiter(RateLimit("register_ip", *config.register_ip_rate))
        self._tarpit_s = config.tarpit_s

    async def tarpit(self, retry_after_ms: int | None = None) -> None:
        """Wait before answering a refused stranger (never longer than its retry_after)."""
        wait = self._tarpit_s
        if retry_after_ms is not None:
            wait = min(wait, retry_after_ms / 1000)
        if wait > 0:
            await asyncio.sleep(wait)

    def _id(self, kind: bytes, value: str) -> str:
        digest = nacl.hash.blake2b(
            kind + b"\0" + value.encode(),
            digest_size=16,
            key=self._key,
            person=b"chat-limit-key-1",
            encoder=RawEncoder,
        )
        return digest.hex()

    async def before_login(self, handle: str, ip: str) -> None:
        """Refuse (``rate_limited``) a login for a handle or from an address whose failed
        logins used up their bucket; nothing is counted here."""
        for limiter, key in (
            (self._failed_handle, self._id(b"handle", handle)),
            (self._failed_ip, self._id(b"ip", ip)),
        ):
            decision = await limiter.peek(key)
            if not decision.allowed:
                log_event("auth.login_throttled", limit=limiter.limit.name)
                await self.tarpit(decision.retry_after_ms)
                raise RateLimited(
                    f"too many failed logins; try again in {_seconds(decision.retry_after_ms)} s",
                    retry_after_ms=decision.retry_after_ms,
                )

    async def login_failed(self, handle: str, ip: str) -> None:
        """Count one failed login against the handle and the address."""
        await self._failed_handle.take(self._id(b"handle", handle))
        await self._failed_ip.take(self._id(b"ip", ip))

    async def before_register(self, ip: str) -> None:
        """Take one registration from the address's bucket, or ``rate_limited``."""
        decision = await self._register_ip.take(self._id(b"ip", ip))
        if not decision.allowed:
            log_event("auth.register_throttled")
            await self.tarpit(decision.retry_after_ms)
            raise RateLimited(
                "too many registrations from your address; try again in "
                f"{_seconds(decision.retry_after_ms)} s",
                retry_after_ms=decision.retry_after_ms,
            )
