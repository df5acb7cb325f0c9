"""The cross-node event bus: how one hub process tells the others what just happened.

A node publishes small events (frames to push to some accounts' sessions, "this case
changed", "this counselor came online", "close these sessions") and every other node
hands them to its ``on_event`` callback. Two implementations share the :class:`EventBus`
interface: :class:`RedisBus` (Redis pub/sub, for several processes) and
:class:`LocalBus` (in-process, for a single node or several hubs in one test process).

Contract (what the session registry may rely on):

* ``publish(event, nodes=None)`` never blocks and never raises. It queues the event and
  returns True, or drops it and returns False, counting why in :class:`BusStats`
  (disconnected, queue full, too big). The caller's hot path never waits on Redis.
* A node never receives its own events. Others receive each event at most once, in
  publication order per publisher, while both are connected. ``nodes=[...]`` sends to
  those nodes only (their own channel) instead of to everyone.
* The bus is a **wake-up path, not storage**: events queued or in flight when Redis goes
  away are lost. The database stays the source of truth; after every reconnection the
  bus calls ``on_reconnect(since_ms)``, with the wall-clock time at which it last had
  proof that the link was alive, so the owner can catch its sessions up from the
  database from then on (``chat_server/catchup.py``).
* Memory is bounded: at most ``max_queue`` events and ``max_queue_bytes`` bytes wait to
  be written, and one envelope is at most ``MAX_ENVELOPE_BYTES``.
* ``close()`` stops everything; after it ``publish`` returns False.

Envelopes are msgpack (msgspec) with a version ``v``: a node drops (and counts) an
envelope of another version or that does not decode. Adding an optional field keeps
``v``; adding an event kind or changing a meaning bumps it. One Redis message carries
one envelope or, when several wait for the same channel, a msgpack array of them (a
*bundle*, at most ``MAX_ENVELOPE_BYTES``): a commit's fan-out then costs each node a
few Redis messages to parse instead of one per message (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeAlias

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from .logs import log_event
from .redis_client import RedisSettings, backoff_delay, make_client

__all__ = [
    "BUS_VERSION",
    "MAX_ENVELOPE_BYTES",
    "BusEvent",
    "BusStats",
    "CaseChanged",
    "Deliver",
    "Envelope",
    "EventBus",
    "Evict",
    "LocalBus",
    "LocalNetwork",
    "OnEvent",
    "OnReconnect",
    "PresenceChanged",
    "RedisBus",
    "Resync",
    "SignOut",
    "bundle",
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
]

BUS_VERSION = 2
#: Largest envelope published or accepted: a frame is at most 64 KiB
#: (protocol/limits.py), so this leaves room for a few frames and their recipients.
MAX_ENVELOPE_BYTES = 512 * 1024


# -- events ----------------------------------------------------------------------


class Deliver(msgspec.Struct, tag="deliver", frozen=True):
    """Push ``frames`` (already-encoded server frames) to every live session of
    ``accounts`` on the receiving node, in order."""

    accounts: tuple[str, ...]
    frames: tuple[bytes, ...]


class CaseChanged(msgspec.Struct, tag="case", frozen=True):
    """A case's state, participants or epoch changed: drop any cached copy."""

    case_id: str


class PresenceChanged(msgspec.Struct, tag="presence", frozen=True):
    """A counselor came online or went offline somewhere (matching may have work)."""

    account_id: str
    online: bool


class Evict(msgspec.Struct, tag="evict", frozen=True):
    """Close these sessions of ``account_id`` (the cross-node session cap chose them)."""

    account_id: str
    session_ids: tuple[str, ...]


class SignOut(msgspec.Struct, tag="signout", frozen=True):
    """Close every session of ``account_id`` (``logout{all}``; its tokens are revoked)."""

    account_id: str


class Resync(msgspec.Struct, tag="resync", frozen=True):
    """Events the sender published since ``since_ms`` (wall clock, milliseconds) may
    not have reached anyone: catch your sessions up from the database from then on."""

    since_ms: int


BusEvent: TypeAlias = Deliver | CaseChanged | PresenceChanged | Evict | SignOut | Resync


class Envelope(msgspec.Struct, frozen=True):
    """What travels: the bus version, the publishing node, one event."""

    v: int
    node: str
    event: BusEvent


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)
_payload_decoder = msgspec.msgpack.Decoder(Envelope | list[Envelope])


def encode_envelope(node: str, event: BusEvent) -> bytes:
    return _encoder.encode(Envelope(BUS_VERSION, node, event))


def decode_envelope(raw: bytes) -> Envelope:
    """The envelope in ``raw``; ``ValueError`` for anything this node cannot act on
    (too big, not msgpack, unknown kind, another version, a bundle)."""
    (envelope,) = _decode(_decoder, raw)
    return envelope


def _decode(decoder: msgspec.msgpack.Decoder[Any], raw: bytes) -> list[Envelope]:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ValueError("envelope too big")
    try:
        decoded = decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError("undecodable envelope") from exc
    envelopes = decoded if isinstance(decoded, list) else [decoded]
    if any(e.v != BUS_VERSION for e in envelopes):
        raise ValueError("unsupported bus version")
    return envelopes


def decode_payload(raw: bytes) -> list[Envelope]:
    """The envelopes of one Redis message (one, or a bundle); ``ValueError`` as for
    :func:`decode_envelope` (a bundle with one unusable envelope is refused whole)."""
    return _decode(_payload_decoder, raw)


def bundle(envelopes: list[bytes]) -> list[bytes]:
    """Redis messages for encoded ``envelopes`` in order: each alone, or as many as fit
    in ``MAX_ENVELOPE_BYTES`` joined into a msgpack array (its header, then the
    elements as they are: no re-encoding)."""
    payloads: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for raw in envelopes:
        if chunk and size + len(raw) + 5 > MAX_ENVELOPE_BYTES:
            payloads.append(_joined(chunk))
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw)
    if chunk:
        payloads.append(_joined(chunk))
    return payloads


def _joined(chunk: list[bytes]) -> bytes:
    if len(chunk) == 1:
        return chunk[0]
    n = len(chunk)
    header = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return header + b"".join(chunk)


#: Called with every envelope from another node. Runs in the bus's receiving task: it
#: must not block; whatever it raises is logged and counted, and the bus goes on.
OnEvent: TypeAlias = Callable[[Envelope], None]
#: Called after the bus (re)connected following a period without Redis, with the wall
#: clock (ms) at which the link was last known to work: events from then on may have
#: been missed (by this node, and its own publications by the others).
OnReconnect: TypeAlias = Callable[[int], None]


@dataclasses.dataclass
class BusStats:
    """Counters since start (read by chat_server/metrics.py; no ids in here)."""

    published: int = 0
    dropped_disconnected: int = 0
    dropped_overflow: int = 0
    dropped_too_big: int = 0
    #: Queued, then lost because the connection broke before or while writing them.
    dropped_error: int = 0
    received: int = 0
    invalid: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    connect_failures: int = 0


class EventBus(Protocol):
    """What the session registry depends on (module doc states the contract)."""

    @property
    def node_id(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def stats(self) -> BusStats: ...

    @property
    def queued(self) -> int:
        """Events waiting to be written (bounded by the bus's queue limits)."""
        ...

    async def start(self, on_event: OnEvent, on_reconnect: OnReconnect) -> None: ...

    def publish(self, event: BusEvent, *, nodes: Iterable[str] | None = None) -> bool: ...

    async def wait_connected(self) -> None: ...

    async def flush(self) -> None:
        """Return once everything queued so far was written or dropped (bound it with
        ``asyncio.timeout``): a draining node's last events leave before it closes."""
        ...

    async def close(self) -> None: ...


def _encode_for_publish(
    connected: bool, node_id: str, event: BusEvent, stats: BusStats
) -> bytes | None:
    """The envelope to publish, or None (counted) when it cannot go out."""
    if not connected:
        stats.dropped_disconnected += 1
        return None
    raw = encode_envelope(node_id, event)
    if len(raw) > MAX_ENVELOPE_BYTES:
        stats.dropped_too_big += 1
        return None
    return raw


def _dispatch(on_event: OnEvent, envelope: Envelope, stats: BusStats) -> None:
    try:
        on_event(envelope)
    except Exception:
        stats.handler_errors += 1
        log_event("bus.handler_failed", logging.ERROR, exc=True, kind=type(envelope.event).__name__)


# -- in-process ------------------------------------------------------------------


class LocalNetwork:
    """Joins :class:`LocalBus` instances of one process, like one Redis would."""

    def __init__(self) -> None:
        self.members: dict[str, LocalBus] = {}


class LocalBus:
    """The bus without Redis: alone (``network=None``) every publish is a no-op that
    succeeds; on a shared :class:`LocalNetwork` events reach the other members on the
    next loop iteration, as they would through Redis."""

    def __init__(self, node_id: str, network: LocalNetwork | None = None) -> None:
        self._node_id = node_id
        self._network = network
        self._stats = BusStats()
        self._on_event: OnEvent | None = None
        self._started = False
        self._started_event = asyncio.Event()

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def connected(self) -> bool:
        return self._started

    @property
    def stats(self) -> BusStats:
        return self._stats

    @property
    def queued(self) -> int:
        return 0

    async def start(self, on_event: OnEvent, on_reconnect: OnReconnect) -> None:
        self._on_event = on_event
        self._started = True
        self._started_event.set()
        if self._network is not None:
            self._network.members[self._node_id] = self

    def publish(self, event: BusEvent, *, nodes: Iterable[str] | None = None) -> bool:
        if self._network is None and self._started:
            # A single node: nobody to tell, so nothing to encode (the hot path of
            # every delivery on a node without Redis).
            self._stats.published += 1
            return True
        raw = _encode_for_publish(self._started, self._node_id, event, self._stats)
        if raw is None:
            return False
        self._stats.published += 1
        if self._network is None:
            return True
        wanted = None if nodes is None else set(nodes)
        loop = asyncio.get_running_loop()
        for node, member in self._network.members.items():
            if node != self._node_id and (wanted is None or node in wanted):
                loop.call_soon(member._receive, raw)
        return True

    def _receive(self, raw: bytes) -> None:
        if not self._started or self._on_event is None:
            return
        self._stats.received += 1
        _dispatch(self._on_event, decode_envelope(raw), self._stats)

    async def wait_connected(self) -> None:
        await self._started_event.wait()

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._started = False
        self._started_event.clear()
        if self._network is not None:
            self._network.members.pop(self._node_id, None)


# -- Redis -----------------------------------------------------------------------


class RedisBus:
    """The bus on Redis pub/sub. Every node subscribes to ``{prefix}bus`` (events for
    everyone) and ``{prefix}bus:{node_id}`` (events for it alone).

    One supervising task connects, subscribes, then runs a reader (hands events to
    ``on_event``, pings when idle so a silent dead link is noticed) and a writer (drains
    the publish queue in pipelined batches). When either fails the connection is torn
    down, the queue dropped, and the supervisor reconnects after a jittered, exponential
    back-off; after it has resubscribed it calls ``on_reconnect``.
    """

    def __init__(
        self,
        settings: RedisSettings,
        node_id: str,
        *,
        max_queue: int = 10_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        write_batch: int = 256,
        ping_interval_s: float = 1.0,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if ":" in node_id or not node_id:
            raise ValueError("node id must be non-empty and contain no ':'")
        make_client(settings)  # a URL redis-py cannot parse fails here, not in the task
        self._settings = settings
        self._node_id = node_id
        self._broadcast = f"{settings.prefix}bus"
        self._channel_prefix = f"{settings.prefix}bus:"
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._write_batch = write_batch
        self._ping_interval_s = ping_interval_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rng = rng or random.Random()
        self._stats = BusStats()
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_event: OnEvent | None = None
        self._on_reconnect: OnReconnect | None = None
        #: Wall clock (ms) of the last sign of life from Redis (a message, a pong, a
        #: confirmed subscription): where a gap starts if the link dies now.
        self._heard_ms = _wall_ms()

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> BusStats:
        return self._stats

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def start(self, on_event: OnEvent, on_reconnect: OnReconnect) -> None:
        """Start connecting; return once the first attempt has succeeded or failed
        (a node runs without Redis, delivering locally only, until it is back)."""
        if self._task is not None:
            raise RuntimeError("bus already started")
        self._on_event, self._on_reconnect = on_event, on_reconnect
        self._heard_ms = _wall_ms()
        first_attempt = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._supervise(first_attempt), name="bus")
        await asyncio.shield(first_attempt)

    async def wait_connected(self) -> None:
        """Return once subscribed (at once if it is); bound it with ``asyncio.timeout``."""
        await self._connected.wait()

    def publish(self, event: BusEvent, *, nodes: Iterable[str] | None = None) -> bool:
        raw = _encode_for_publish(self._connected.is_set(), self._node_id, event, self._stats)
        if raw is None:
            return False
        channels = (
            [self._broadcast]
            if nodes is None
            else [self._channel_prefix + n for n in dict.fromkeys(nodes) if n != self._node_id]
        )
        need = len(raw) * len(channels)
        if (
            len(self._queue) + len(channels) > self._max_queue
            or self._queued_bytes + need > self._max_queue_bytes
        ):
            self._stats.dropped_overflow += 1
            return False
        for channel in channels:
            self._queue.append((channel, raw))
        self._queued_bytes += need
        self._empty.clear()
        self._wake.set()
        return True

    async def flush(self) -> None:
        await self._empty.wait()

    async def close(self) -> None:
        """Stop the supervisor and close the connections; idempotent."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop_queue(count=False)

    # -- the supervising task ------------------------------------------------------

    async def _supervise(self, first_attempt: asyncio.Future[None]) -> None:
        attempt = 0
        ever_started = False
        gap_since = self._heard_ms
        while not self._closing.is_set():
            client = make_client(self._settings)
            pubsub = client.pubsub()
            try:
                await self._subscribe(client, pubsub)
            except Exception as exc:  # whatever it was, the answer is: back off, retry
                self._stats.connect_failures += 1
                log_event("bus.connect_failed", logging.WARNING, error=type(exc).__name__)
            else:
                attempt = 0
                self._connected.set()
                log_event("bus.connected", node=self._node_id)
                if ever_started:
                    self._stats.reconnects += 1
                    self._call_reconnect(gap_since)
                if not first_attempt.done():
                    first_attempt.set_result(None)
                await self._serve(client, pubsub)
            finally:
                # Whatever happened, from here on events may be missed until the next
                # successful connection, which therefore calls on_reconnect. The gap
                # began when Redis last answered (a failed attempt moves nothing).
                if not ever_started or self._connected.is_set():
                    gap_since = self._heard_ms
                ever_started = True
                self._connected.clear()
                self._drop_queue(count=True)
                await _close_quietly(client, pubsub)
                if not first_attempt.done():
                    first_attempt.set_result(None)
            if self._closing.is_set():
                break
            delay = backoff_delay(
                attempt, base_s=self._backoff[0], cap_s=self._backoff[1], rng=self._rng
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _subscribe(self, client: Redis, pubsub: PubSub) -> None:
        """Subscribe and wait for Redis to confirm every channel, so an event published
        by another node after this returns is guaranteed to reach us."""
        channels = [self._broadcast, self._channel_prefix + self._node_id]
        deadline = asyncio.get_running_loop().time() + self._settings.connect_timeout_s * 2
        await pubsub.subscribe(*channels)
        confirmed = 0
        while confirmed < len(channels):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("subscription not confirmed")
            message = await pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1
        await client.ping()
        self._heard_ms = _wall_ms()

    async def _serve(self, client: Redis, pubsub: PubSub) -> None:
        """Run the reader and the writer until one of them fails (or we close)."""
        tasks = [
            asyncio.create_task(self._read(pubsub), name="bus-read"),
            asyncio.create_task(self._write(client), name="bus-write"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    log_event("bus.connection_lost", logging.WARNING, error=type(exc).__name__)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self._ping_interval_s)
            now = loop.time()
            if message is None:
                # Idle: a PING must come back (as a "pong" message) within a few
                # intervals, or the link is dead even if TCP has not said so.
                if now - last_heard > 3 * self._ping_interval_s:
                    raise TimeoutError("redis did not answer pings")
                await pubsub.ping()
                continue
            last_heard = now
            self._heard_ms = _wall_ms()
            if message["type"] == "message":
                self._receive(message["data"])

    def _receive(self, raw: Any) -> None:
        try:
            envelopes = decode_payload(raw if isinstance(raw, bytes) else bytes(raw))
        except (ValueError, TypeError):
            self._stats.invalid += 1
            return
        for envelope in envelopes:
            if envelope.node == self._node_id:
                continue  # our own broadcast coming back
            self._stats.received += 1
            if self._on_event is not None:
                _dispatch(self._on_event, envelope, self._stats)

    async def _write(self, client: Redis) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self._write_batch, len(self._queue)))
                ]
                self._queued_bytes -= sum(len(raw) for _, raw in batch)
                # Envelopes waiting for the same channel leave as one bundle (in order).
                by_channel: dict[str, list[bytes]] = {}
                for channel, raw in batch:
                    by_channel.setdefault(channel, []).append(raw)
                pipe = client.pipeline(transaction=False)
                for channel, raws in by_channel.items():
                    for payload in bundle(raws):
                        pipe.publish(channel, payload)
                try:
                    await pipe.execute()
                except BaseException:
                    self._stats.dropped_error += len(batch)
                    raise
                self._stats.published += len(batch)
            self._empty.set()

    def _drop_queue(self, *, count: bool) -> None:
        if count:
            self._stats.dropped_error += len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        self._empty.set()

    def _call_reconnect(self, since_ms: int) -> None:
        if self._on_reconnect is None:
            return
        try:
            self._on_reconnect(since_ms)
        except Exception:
            self._stats.handler_errors += 1
            log_event("bus.reconnect_handler_failed", logging.ERROR, exc=True)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _close_quietly(client: Redis, pubsub: PubSub) -> None:
    """Close a connection that may already be broken; nothing here may raise."""
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    with contextlib.suppress(Exception):
        await client.aclose()
