"""Operator metrics for one hub node, in the Prometheus format (``GET /metrics``).

Every metric is listed in docs/METRICS.md (a test keeps the two in step). Rules:

* **No content, no people in labels.** Label values come from closed sets the code
  defines: frame types of protocol/frames.py, error codes of protocol/errors.py, close
  codes, and a few reason/limit names. A peer-chosen string (an unknown frame type, an
  unknown code) is counted as ``unknown``, never used as a label, so a client cannot
  mint time series. The node id appears once, in ``target_info{node=...}``.
* **One registry per hub** (:attr:`HubMetrics.registry`), not the process-global
  default, so several hubs in one test process never collide.
* The bus, presence and shared rate limiters keep plain counters
  (``BusStats``/``PresenceStats``/``RateLimiterStats``); they are read at scrape time
  by a collector here, so those modules do not depend on prometheus_client.

The hot path calls ``frame_in``/``frame_out``/``error`` several times per message: each
is a dictionary lookup and an integer increment (a :class:`_Tally`, read at scrape
time), not a prometheus_client ``Counter.inc``, whose lock and checks cost several
times more. Everything runs on the event loop's thread, scrapes included.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from protocol.errors import CloseCode, ErrorCode
from protocol.frames import ClientFrame, ServerFrame

from .account_ratelimit import RateLimiterStats
from .bus import BusStats, EventBus
from .presence import PresenceStats

__all__ = ["CLIENT_FRAME_TYPES", "SERVER_FRAME_TYPES", "UNKNOWN", "HubMetrics"]

UNKNOWN = "unknown"

# No "<name>_created" series (one per counter child): they double the exposition for a
# start time that process_start_time_seconds already gives. A process-wide switch.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _tags(union: object) -> frozenset[str]:
    return frozenset(str(t.__struct_config__.tag) for t in typing.get_args(union))


CLIENT_FRAME_TYPES = _tags(ClientFrame)
SERVER_FRAME_TYPES = _tags(ServerFrame)
_ERROR_CODES = frozenset(code.value for code in ErrorCode)
_CLOSE_CODES = frozenset(str(int(code)) for code in CloseCode)

#: Messages per committed transaction (group commit joins up to ``commit_batch``).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Seconds from a batch's start to its commit (SQLite fsync to PostgreSQL round trips).
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Tally:
    """A labelled counter kept as plain integers, one per allowed value (and
    ``unknown``), exposed by :class:`_StatsCollector` at scrape time."""

    __slots__ = ("counts", "doc", "label", "name")

    def __init__(self, name: str, doc: str, label: str, allowed: Iterable[str]) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.counts = dict.fromkeys(sorted({*allowed, UNKNOWN}), 0)

    def inc(self, value: str, amount: int = 1) -> None:
        counts = self.counts
        if value in counts:
            counts[value] += amount
        else:
            counts[UNKNOWN] += amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, count in self.counts.items():
            family.add_metric([value], count)
        return family


class HubMetrics:
    """The metrics of one hub node. The wiring calls the recording methods."""

    def __init__(self, node_id: str, *, process: bool = True) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True, target_info={"node": node_id})
        r = self.registry
        self.connections_open = Gauge(
            "chat_connections_open", "WebSocket connections open now", registry=r
        )
        self.connections = Counter("chat_connections", "WebSocket connections accepted", registry=r)
        self.sessions_open = Gauge(
            "chat_sessions_open", "Authenticated sessions open now", registry=r
        )
        self.sessions = Counter("chat_sessions", "Sessions that authenticated", registry=r)
        self._frames_in = _Tally(
            "chat_frames_received", "Frames received, by frame type", "type", CLIENT_FRAME_TYPES
        )
        self._frames_out = _Tally(
            "chat_frames_sent", "Frames sent, by frame type", "type", SERVER_FRAME_TYPES
        )
        self._errors = _Tally(
            "chat_errors", "Error frames sent, by error code", "code", _ERROR_CODES
        )
        self._closes = _Tally(
            "chat_closes", "Connections closed by the hub, by close code", "code", _CLOSE_CODES
        )
        self.commits = Counter(
            "chat_commits", "Message transactions committed (group commit batches)", registry=r
        )
        self.commit_failures = Counter(
            "chat_commit_failures", "Message transactions that failed (nothing acked)", registry=r
        )
        self.messages_committed = Counter(
            "chat_messages_committed", "Messages stored (duplicates not counted)", registry=r
        )
        self.batch_size = Histogram(
            "chat_commit_batch_size",
            "Messages per committed transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "chat_commit_seconds",
            "Time to commit one batch of messages",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.catchups = Counter(
            "chat_catchups",
            "Passes that caught live sessions up from the database after a bus gap",
            registry=r,
        )
        self._stats = _StatsCollector()
        self._stats.tallies = (self._frames_in, self._frames_out, self._errors, self._closes)
        r.register(self._stats)
        if process:
            ProcessCollector(registry=r)

    # -- recording (hot path) --------------------------------------------------------

    def frame_in(self, frame_type: str) -> None:
        self._frames_in.inc(frame_type)

    def frame_out(self, frame_type: str, count: int = 1) -> None:
        self._frames_out.inc(frame_type, count)

    def error(self, code: str) -> None:
        self._errors.inc(code)

    def closed(self, close_code: int) -> None:
        self._closes.inc(str(close_code))

    def observe_commit(self, *, messages: int, stored: int, seconds: float, ok: bool) -> None:
        """One group-commit transaction: ``messages`` in the batch, ``stored`` of them
        new (the rest idempotent retries), how long it took, whether it committed."""
        if not ok:
            self.commit_failures.inc()
            return
        self.commits.inc()
        self.messages_committed.inc(stored)
        self.batch_size.observe(messages)
        self.commit_seconds.observe(seconds)

    # -- components that keep their own counters -------------------------------------

    def watch_bus(self, bus: EventBus) -> None:
        self._stats.bus = bus

    def watch_presence(self, stats: PresenceStats) -> None:
        self._stats.presence = stats

    def watch_guard(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """``read()`` -> (unauthenticated connections open, hash slots granted, hash
        requests refused busy) of ``guard.AuthGuard``, read at scrape time."""
        self._stats.guard = read

    def watch_rate_limiter(self, name: str, stats: RateLimiterStats) -> None:
        """``name`` is the limit's name from code (``RateLimit.name``), never an id."""
        self._stats.limiters[name] = stats

    # -- exposition ------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and Content-Type for ``GET /metrics``: the Prometheus text format,
        or OpenMetrics when the scraper's ``Accept`` asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _StatsCollector:
    """Reads the plain counters (the hot path's tallies, the bus, presence and rate
    limiters) at scrape time.
    Always yields every family (zero until a component is watched), so the set of
    metric names does not depend on configuration."""

    def __init__(self) -> None:
        self.bus: EventBus | None = None
        self.presence: PresenceStats | None = None
        self.limiters: dict[str, RateLimiterStats] = {}
        self.tallies: tuple[_Tally, ...] = ()
        self.guard: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)

    def collect(self) -> Iterator[Metric]:
        for tally in self.tallies:
            yield tally.family()
        yield from self._bus()
        yield from self._presence()
        yield from self._limiters()
        yield from self._guard()

    def _guard(self) -> Iterator[Metric]:
        guests, granted, busy = self.guard()
        yield GaugeMetricFamily(
            "chat_guests_open", "Unauthenticated connections open now", value=guests
        )
        yield CounterMetricFamily(
            "chat_hashes", "Password hashes (register, login) given a slot", value=granted
        )
        yield CounterMetricFamily(
            "chat_hashes_busy", "Password hash requests refused busy", value=busy
        )

    def _bus(self) -> Iterator[Metric]:
        bus = self.bus
        stats = bus.stats if bus is not None else BusStats()
        yield from _counters(_BUS_COUNTERS, stats)
        dropped = CounterMetricFamily(
            "chat_bus_dropped", "Events not published, by reason", labels=["reason"]
        )
        for reason in ("disconnected", "overflow", "too_big", "error"):
            dropped.add_metric([reason], getattr(stats, f"dropped_{reason}"))
        yield dropped
        yield GaugeMetricFamily(
            "chat_bus_connected",
            "1 while subscribed to Redis",
            value=int(bus is not None and bus.connected),
        )
        yield GaugeMetricFamily(
            "chat_bus_queued",
            "Events waiting to be written",
            value=bus.queued if bus is not None else 0,
        )

    def _presence(self) -> Iterator[Metric]:
        yield from _counters(_PRESENCE_COUNTERS, self.presence or PresenceStats())

    def _limiters(self) -> Iterator[Metric]:
        for name, doc, field in _LIMITER_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["limit"])
            for limit, stats in sorted(self.limiters.items()):
                family.add_metric([limit], getattr(stats, field))
            yield family


#: (metric, help, field of the stats object) for counters read at scrape time.
_BUS_COUNTERS = (
    ("chat_bus_published", "Events written to Redis", "published"),
    ("chat_bus_received", "Events received from other nodes", "received"),
    ("chat_bus_invalid", "Envelopes dropped as undecodable", "invalid"),
    ("chat_bus_handler_errors", "Events whose handler raised", "handler_errors"),
    ("chat_bus_reconnects", "Reconnections to Redis after a loss", "reconnects"),
    ("chat_bus_connect_failures", "Failed attempts to connect to Redis", "connect_failures"),
)
_PRESENCE_COUNTERS = (
    ("chat_presence_heartbeats", "Presence heartbeats Redis took", "heartbeats"),
    ("chat_presence_heartbeat_failures", "Presence heartbeats that failed", "heartbeat_failures"),
    (
        "chat_presence_degraded",
        "Presence answers given from this node's view only (Redis failed)",
        "degraded",
    ),
)
_LIMITER_COUNTERS = (
    ("chat_ratelimit_allowed", "Shared rate limit: requests allowed", "allowed"),
    ("chat_ratelimit_refused", "Shared rate limit: requests refused", "refused"),
    (
        "chat_ratelimit_fallbacks",
        "Shared rate limit: decided locally because Redis failed",
        "fallbacks",
    ),
)


def _counters(table: tuple[tuple[str, str, str], ...], stats: object) -> Iterator[Metric]:
    for name, doc, field in table:
        yield CounterMetricFamily(name, doc, value=getattr(stats, field))
