"""Who is online across all hub nodes: counselors available for matching, and every
account's live sessions (for a cluster-wide session cap), with expiry.

Two implementations share the :class:`Presence` interface: :class:`RedisPresence` (any
number of nodes) and :class:`LocalPresence` (one node, no Redis).

Contract:

* ``counselor_online``/``counselor_offline`` say whether a counselor is available on
  *this* node (set semantics: the caller decides, e.g. "has at least one session").
  ``online_counselors()`` is the union over all live nodes.
* ``session_opened(account, session, cap)`` records a session and returns how many the
  account now has across nodes and which older sessions (oldest first, never the new
  one) must close to stay within ``cap``; those are already removed from the count, and
  the caller closes them (locally, or through an ``Evict`` on the bus to their node).
  ``session_closed`` forgets one. ``session_count`` reads the count.
* **Expiry**: every entry a node writes lives ``ttl_s`` seconds unless the node's
  heartbeat (every ``heartbeat_s``) renews it, so a node killed without a goodbye
  vanishes within ``ttl_s`` (plus one heartbeat). ``close()`` removes this node's
  entries at once (graceful drain). All times are Redis's clock (``TIME`` inside the
  scripts), so nodes with skewed clocks agree on what has expired.
* **Redis is not required to be up**: every method keeps working on this node's own
  view when Redis fails (the answer then covers this node only), counts it in
  :class:`PresenceStats`, and never raises. The heartbeat rewrites everything this node
  holds, so a restarted, empty Redis is whole again after one heartbeat.

No names or handles are stored: account ids, node ids and session ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Protocol

from redis.asyncio import Redis

from .logs import log_event
from .redis_client import RedisSettings, make_client

__all__ = [
    "LocalPresence",
    "Presence",
    "PresenceStats",
    "RedisPresence",
    "SessionPlace",
    "SessionRef",
]


@dataclasses.dataclass(frozen=True, order=True)
class SessionRef:
    """One live session somewhere in the cluster."""

    node: str
    session_id: str


@dataclasses.dataclass(frozen=True)
class SessionPlace:
    """What :meth:`Presence.session_opened` decided."""

    #: Live sessions of the account across nodes, the new one included, evictions not.
    count: int
    #: Sessions to close to stay within the cap, oldest first (never the new one).
    evict: tuple[SessionRef, ...]


@dataclasses.dataclass
class PresenceStats:
    """Counters since start (read by chat_server/metrics.py)."""

    heartbeats: int = 0
    heartbeat_failures: int = 0
    #: Answers given from this node's own view because Redis failed.
    degraded: int = 0


class Presence(Protocol):
    """What the session registry and the casebook depend on (module doc: contract)."""

    @property
    def stats(self) -> PresenceStats: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def heartbeat(self) -> bool:
        """Write everything this node holds now (it also runs by itself); True if the
        shared store took it."""
        ...

    async def counselor_online(self, account_id: str) -> None: ...

    async def counselor_offline(self, account_id: str) -> None: ...

    async def online_counselors(self) -> frozenset[str]: ...

    async def session_opened(self, account_id: str, session_id: str, cap: int) -> SessionPlace: ...

    async def session_closed(self, account_id: str, session_id: str) -> None: ...

    async def session_count(self, account_id: str) -> int: ...


# -- this node's own view (also the whole of LocalPresence) -----------------------------


class _LocalView:
    """Counselors and sessions held by this node, sessions in opening order."""

    def __init__(self) -> None:
        self.counselors: set[str] = set()
        #: account -> {session id: opaque member string (Redis's name for it)}
        self.sessions: dict[str, dict[str, str]] = {}

    def open(self, account_id: str, session_id: str, member: str, cap: int) -> SessionPlace:
        live = self.sessions.setdefault(account_id, {})
        live[session_id] = member
        excess = max(0, len(live) - max(cap, 1))
        evicted = [sid for sid in live if sid != session_id][:excess]
        for sid in evicted:
            del live[sid]
        return SessionPlace(count=len(live), evict=tuple(SessionRef("", s) for s in evicted))

    def close(self, account_id: str, session_id: str) -> str | None:
        live = self.sessions.get(account_id)
        if live is None:
            return None
        member = live.pop(session_id, None)
        if not live:
            del self.sessions[account_id]
        return member

    def count(self, account_id: str) -> int:
        return len(self.sessions.get(account_id, ()))


class LocalPresence:
    """Presence for a single node: this process's view is the whole truth."""

    def __init__(self, node_id: str = "local") -> None:
        self._node_id = node_id
        self._view = _LocalView()
        self._stats = PresenceStats()

    @property
    def stats(self) -> PresenceStats:
        return self._stats

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._view = _LocalView()

    async def heartbeat(self) -> bool:
        return True

    async def counselor_online(self, account_id: str) -> None:
        self._view.counselors.add(account_id)

    async def counselor_offline(self, account_id: str) -> None:
        self._view.counselors.discard(account_id)

    async def online_counselors(self) -> frozenset[str]:
        return frozenset(self._view.counselors)

    async def session_opened(self, account_id: str, session_id: str, cap: int) -> SessionPlace:
        place = self._view.open(account_id, session_id, session_id, cap)
        return dataclasses.replace(
            place, evict=tuple(SessionRef(self._node_id, r.session_id) for r in place.evict)
        )

    async def session_closed(self, account_id: str, session_id: str) -> None:
        self._view.close(account_id, session_id)

    async def session_count(self, account_id: str) -> int:
        return self._view.count(account_id)


# -- Redis -------------------------------------------------------------------------

# Every script reads the time from Redis, so all nodes share one clock. Members of the
# counselor set are "node|account"; members of an account's session set are
# "opened_us|node|session" (zero-padded microseconds: sorting the strings sorts by age;
# Redis runs scripts one at a time, so no two opens share a microsecond).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS[1] counselor set; ARGV: ttl_ms, node, account... -> nothing.
# Rewrites this node's share: renews the listed accounts, drops its others.
_SYNC_COUNSELORS = (
    _NOW
    + """
local ttl, prefix = tonumber(ARGV[1]), ARGV[2] .. '|'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local keep = {}
for i = 3, #ARGV do keep[prefix .. ARGV[i]] = true end
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix and not keep[member] then
    redis.call('ZREM', KEYS[1], member)
  end
end
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, prefix .. ARGV[i]) end
return 0
"""
)

# KEYS[1] counselor set -> live members.
_LIVE = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n"

# KEYS[1] the account's session set; ARGV: ttl_ms, "node|session", cap
# -> {new member, live count, evicted members (oldest first)}.
_OPEN_SESSION = (
    _NOW
    + """
local ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local member = string.format('%016d', now_us) .. '|' .. ARGV[2]
redis.call('ZADD', KEYS[1], now + ttl, member)
local others = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if m ~= member then table.insert(others, m) end
end
table.sort(others)
local evicted = {}
for i = 1, #others + 1 - cap do
  table.insert(evicted, others[i])
  redis.call('ZREM', KEYS[1], others[i])
end
redis.call('PEXPIRE', KEYS[1], ttl)
return {member, redis.call('ZCARD', KEYS[1]), evicted}
"""
)

# KEYS[1] the account's session set; ARGV: ttl_ms, member... -> live count.
_RENEW_SESSIONS = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS[1] the account's session set -> live count.
_COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')\n"


class RedisPresence:
    """Presence in Redis sorted sets whose scores are expiry times (module doc)."""

    def __init__(
        self,
        settings: RedisSettings,
        node_id: str,
        *,
        ttl_s: float = 15.0,
        heartbeat_s: float = 5.0,
    ) -> None:
        if not node_id or "|" in node_id or ":" in node_id:
            raise ValueError("node id must be non-empty, without '|' or ':'")
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError("the heartbeat must come more often than entries expire")
        self._node_id = node_id
        self._ttl_ms = int(ttl_s * 1000)
        self._heartbeat_s = heartbeat_s
        self._prefix = f"{settings.prefix}presence:"
        self._counselors_key = f"{self._prefix}counselors"
        self._redis: Redis = make_client(settings)
        self._sync_counselors = self._redis.register_script(_SYNC_COUNSELORS)
        self._live = self._redis.register_script(_LIVE)
        self._open = self._redis.register_script(_OPEN_SESSION)
        self._renew = self._redis.register_script(_RENEW_SESSIONS)
        self._count = self._redis.register_script(_COUNT)
        self._view = _LocalView()
        self._stats = PresenceStats()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Every write of this node's counselors rewrites its whole share from the view
        # as it is when sent. Two such writes in flight at once could reach Redis in
        # either order, and an older view landing last would drop a counselor until the
        # next heartbeat; so they go one at a time, each carrying the newest view.
        self._counselors_lock = asyncio.Lock()

    @property
    def stats(self) -> PresenceStats:
        return self._stats

    def _sessions_key(self, account_id: str) -> str:
        return f"{self._prefix}sessions:{account_id}"

    async def start(self) -> None:
        """Write this node's (empty) share and start the heartbeat."""
        if self._task is None:
            await self.heartbeat()
            self._task = asyncio.create_task(self._beat(), name="presence-heartbeat")

    async def close(self) -> None:
        """Stop the heartbeat and remove this node's entries (best effort; whatever
        cannot be removed now expires within the TTL). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        view, self._view = self._view, _LocalView()
        try:
            async with self._counselors_lock, self._redis.pipeline(transaction=False) as pipe:
                await self._sync_counselors(
                    keys=[self._counselors_key], args=[self._ttl_ms, self._node_id], client=pipe
                )
                for account_id, live in view.sessions.items():
                    pipe.zrem(self._sessions_key(account_id), *live.values())
                await pipe.execute()
        except Exception as exc:
            log_event("presence.close_failed", logging.WARNING, error=type(exc).__name__)
        await self._redis.aclose()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self.heartbeat()

    async def heartbeat(self) -> bool:
        """Renew (and after a Redis restart, rewrite) everything this node holds.
        Runs every ``heartbeat_s`` by itself; True when Redis took it."""
        try:
            # One round trip; the pipeline loads the scripts first if Redis lost them.
            async with self._counselors_lock, self._redis.pipeline(transaction=False) as pipe:
                await self._sync_counselors(
                    keys=[self._counselors_key],
                    args=[self._ttl_ms, self._node_id, *sorted(self._view.counselors)],
                    client=pipe,
                )
                for account_id, live in self._view.sessions.items():
                    await self._renew(
                        keys=[self._sessions_key(account_id)],
                        args=[self._ttl_ms, *live.values()],
                        client=pipe,
                    )
                await pipe.execute()
        except Exception as exc:
            self._stats.heartbeat_failures += 1
            log_event("presence.heartbeat_failed", logging.WARNING, error=type(exc).__name__)
            return False
        self._stats.heartbeats += 1
        return True

    def _degraded(self, what: str, exc: Exception) -> None:
        self._stats.degraded += 1
        log_event("presence.degraded", logging.WARNING, op=what, error=type(exc).__name__)

    # -- counselors ------------------------------------------------------------------

    async def counselor_online(self, account_id: str) -> None:
        if account_id not in self._view.counselors:
            self._view.counselors.add(account_id)
            await self._publish_counselors()

    async def counselor_offline(self, account_id: str) -> None:
        if account_id in self._view.counselors:
            self._view.counselors.discard(account_id)
            await self._publish_counselors()

    async def _publish_counselors(self) -> None:
        async with self._counselors_lock:
            try:
                await self._sync_counselors(
                    keys=[self._counselors_key],
                    args=[self._ttl_ms, self._node_id, *sorted(self._view.counselors)],
                )
            except Exception as exc:
                self._degraded("counselors", exc)

    async def online_counselors(self) -> frozenset[str]:
        try:
            members = await self._live(keys=[self._counselors_key])
        except Exception as exc:
            self._degraded("online_counselors", exc)
            return frozenset(self._view.counselors)
        return frozenset(m.decode().split("|", 1)[1] for m in members) | self._view.counselors

    # -- sessions --------------------------------------------------------------------

    async def session_opened(self, account_id: str, session_id: str, cap: int) -> SessionPlace:
        try:
            member_raw, count, evicted_raw = await self._open(
                keys=[self._sessions_key(account_id)],
                args=[self._ttl_ms, f"{self._node_id}|{session_id}", max(cap, 1)],
            )
        except Exception as exc:
            self._degraded("session_opened", exc)
            member = f"{time.time_ns() // 1000:016d}|{self._node_id}|{session_id}"
            place = self._view.open(account_id, session_id, member, cap)
            return dataclasses.replace(
                place, evict=tuple(SessionRef(self._node_id, r.session_id) for r in place.evict)
            )
        evict = tuple(_session_ref(m.decode()) for m in evicted_raw)
        live = self._view.sessions.setdefault(account_id, {})
        live[session_id] = member_raw.decode()
        for ref in evict:
            if ref.node == self._node_id:
                live.pop(ref.session_id, None)
        return SessionPlace(count=int(count), evict=evict)

    async def session_closed(self, account_id: str, session_id: str) -> None:
        member = self._view.close(account_id, session_id)
        if member is None:
            return
        try:
            await self._redis.zrem(self._sessions_key(account_id), member)
        except Exception as exc:
            self._degraded("session_closed", exc)  # it expires within the TTL anyway

    async def session_count(self, account_id: str) -> int:
        try:
            return int(await self._count(keys=[self._sessions_key(account_id)]))
        except Exception as exc:
            self._degraded("session_count", exc)
            return self._view.count(account_id)


def _session_ref(member: str) -> SessionRef:
    _, node, session_id = member.split("|", 2)
    return SessionRef(node, session_id)
