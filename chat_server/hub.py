"""The hub: the services of one hub process, composed, and passed to every use case.

Nothing here decides anything; each room has its own module:

===================  ===============================================================
``registry``         live sessions by account, ``publish``, ``deliver`` (acks, fan-out)
``casebook``         case lookup and participants, opening, matching, assignment
``committer``        group commit of ``msg.send``; delivers through the registry
``catchup``          after the bus may have lost events: sessions caught up from the DB
``disputes``         dispute requests, approvals, export; the watcher
``decoys``           answers for handles that do not exist (``credentials.py``)
``guard``            bounds on unauthenticated work: Argon2 slots, login/register buckets
``bus``              events to and from the other nodes (Redis, or in-process)
``presence``         who is online on any node; the cluster-wide session cap
``limiter()``        per-account rate limits shared by every node
``metrics``          this node's Prometheus metrics
===================  ===============================================================

With ``Config.redis_url`` the bus, presence and rate limits live in Redis and any
number of processes share the database; without it, the in-process implementations
serve a single node through the same interfaces.

The process holds no one's private key: ``server_key`` is the hub's own signing-only
key (it signs chain heads). ``stopping`` is set by :meth:`shutdown`; from then on new
requests are refused with ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from protocol.clock import now_ms
from protocol.crypto import ServerKey
from protocol.errors import CloseCode
from storage.engine import Database

from .account_ratelimit import (
    AccountRateLimiter,
    LocalAccountRateLimiter,
    RateLimit,
    RedisAccountRateLimiter,
)
from .bus import Envelope, EventBus, LocalBus, RedisBus, Resync
from .casebook import Casebook
from .catchup import CatchUp
from .committer import GroupCommitter
from .config import Config
from .credentials import LoginDecoys
from .disputes import DisputeService, DisputeWatcher
from .guard import AuthGuard
from .logs import log_event
from .memory import Trimmer
from .metrics import HubMetrics
from .presence import LocalPresence, Presence, RedisPresence
from .redis_client import RedisSettings
from .registry import SessionRegistry

__all__ = ["Hub"]

#: How long a draining node waits for its last bus events to be written to Redis.
_FLUSH_S = 2.0


class Hub:
    """One hub process's services (see the module docstring).

    ``bus`` and ``presence`` may be given (tests join several hubs in one process
    through a ``LocalNetwork``); otherwise they follow ``config.redis_url``.
    """

    def __init__(
        self,
        config: Config,
        db: Database,
        server_key: ServerKey,
        *,
        bus: EventBus | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.server_key = server_key
        self.node_id = config.resolved_node_id()
        self.metrics = HubMetrics(self.node_id)
        #: Gives freed memory back to the OS after slow consumers are cut (memory.py).
        self.trimmer = Trimmer()
        self._redis = (
            RedisSettings(config.redis_url, prefix=config.redis_prefix)
            if config.redis_url
            else None
        )
        self.bus: EventBus = bus or (
            RedisBus(self._redis, self.node_id) if self._redis else LocalBus(self.node_id)
        )
        self.presence: Presence = presence or (
            RedisPresence(
                self._redis,
                self.node_id,
                ttl_s=config.presence_ttl_s,
                heartbeat_s=config.presence_heartbeat_s,
            )
            if self._redis
            else LocalPresence(self.node_id)
        )
        self._limiters: list[AccountRateLimiter] = []
        self.case_open_limit = self.limiter(RateLimit("case_open", *config.case_open_rate))
        self.dispute_limit = self.limiter(
            RateLimit("dispute_request", *config.dispute_request_rate)
        )
        #: Per account over all its sessions on this node: every request, and messages
        #: (in memory on purpose: they are asked on every frame; docs/DECISIONS.md).
        self.account_requests = LocalAccountRateLimiter(
            RateLimit("account_request", *config.account_request_rate)
        )
        self.account_messages = LocalAccountRateLimiter(
            RateLimit("account_message", *config.account_message_rate)
        )
        self.metrics.watch_rate_limiter("account_request", self.account_requests.stats)
        self.metrics.watch_rate_limiter("account_message", self.account_messages.stats)
        self.registry = SessionRegistry(
            config.max_sessions_per_account,
            node_id=self.node_id,
            bus=self.bus,
            presence=self.presence,
            metrics=self.metrics,
        )
        self.casebook = Casebook(db, self.registry, self.presence)
        self.committer = GroupCommitter(
            db.messages, self.registry, max_batch=config.commit_batch, metrics=self.metrics
        )
        self.catchup = CatchUp(
            db, self.registry, self.bus, after_reconnect=self._rematch, metrics=self.metrics
        )
        self.registry.on_publish_lost = self.catchup.publish_lost
        self.disputes = DisputeService(db)
        self.dispute_watcher = DisputeWatcher(db, self.registry)
        #: Bounds on what strangers can make this hub do (register, login, connect).
        self.guard = AuthGuard(config, self.limiter, config.resolved_data_key())
        guard = self.guard
        self.metrics.watch_guard(
            lambda: (guard.guests.total, guard.argon2.granted, guard.argon2.refused)
        )
        self.decoys = LoginDecoys(
            config.resolved_data_key(),
            opslimit=config.hash_opslimit,
            memlimit=config.hash_memlimit,
        )
        self.metrics.watch_bus(self.bus)
        self.metrics.watch_presence(self.presence.stats)
        self.stopping = False
        self._purger: asyncio.Task[None] | None = None
        #: Expired tokens deleted by this node so far.
        self.tokens_purged = 0

    def limiter(self, limit: RateLimit) -> AccountRateLimiter:
        """A per-account budget shared by every node (in Redis when configured, else in
        this process), counted in this node's metrics under ``limit.name``."""
        limiter: AccountRateLimiter = (
            RedisAccountRateLimiter(self._redis, limit)
            if self._redis
            else LocalAccountRateLimiter(limit)
        )
        self.metrics.watch_rate_limiter(limit.name, limiter.stats)
        self._limiters.append(limiter)
        return limiter

    async def start(self) -> None:
        """Start committing, heartbeating presence and listening to the other nodes
        (returns after the first attempt to reach Redis, whatever its outcome)."""
        self.committer.start()
        await self.presence.start()
        await self.bus.start(self._on_event, self.catchup.on_reconnect)
        self._purger = asyncio.create_task(self._purge_tokens(), name="token-purge")

    async def _purge_tokens(self) -> None:
        """Delete expired session tokens every ``token_purge_interval_s`` (every node
        does; the DELETE is idempotent). A failure is logged and retried next time."""
        while True:
            await asyncio.sleep(self.config.token_purge_interval_s)
            try:
                purged = await self.db.accounts.purge_expired_tokens(now_ms())
            except Exception as exc:
                log_event("tokens.purge_failed", logging.WARNING, error=type(exc).__name__)
                continue
            self.tokens_purged += purged
            if purged:
                log_event("tokens.purged", count=purged)

    def _on_event(self, envelope: Envelope) -> None:
        if isinstance(envelope.event, Resync):
            self.catchup.on_resync(envelope.event.since_ms)
        else:
            self.registry.on_event(envelope)

    async def _rematch(self) -> None:
        """After Redis was away: presence is rewritten, and cases that waited because
        only this node's counselors were visible meanwhile are matched."""
        await self.presence.heartbeat()
        await self.casebook.match_waiting()

    async def shutdown(self) -> None:
        """Drain this node: leave presence (its counselors get no new cases), refuse new
        work, finish pending commits (their acks and fan-out go out), close every session
        with 1001 (resumable: clients reconnect to another node), then leave the bus."""
        self.stopping = True
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.presence.close()
        await self.dispute_watcher.stop()
        await self.catchup.stop()
        await self.committer.stop()
        self.registry.close_all(CloseCode.GOING_AWAY, "server restarting: reconnect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.bus.flush(), _FLUSH_S)
        await self.bus.close()
        self.trimmer.cancel()
        for limiter in self._limiters:
            if isinstance(limiter, RedisAccountRateLimiter):
                await limiter.close()
        log_event("hub.stopped", logging.INFO)
