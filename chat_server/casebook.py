"""The casebook: who takes part in which case, opening cases, matching and assignment.

Several hub processes may share one database, so this cache holds only what can never
change once known:

* a case's **participants** once a counselor is assigned (the client is fixed when the
  case opens and an assigned counselor is never replaced; a waiting case is not cached,
  since its counselor is still to come);
* that a case is **closed** (closing is final).

Everything else about a case (its state, its epoch, its chain head) is read fresh by
the verbs that depend on it, or decided inside the database by the verb itself:
``msg.send`` in ``append_batch`` under the case row lock, ``case.key`` by a conditional
UPDATE on state and epoch, ``case.close`` and assignment by conditional UPDATEs. So a case
closed through another hub is refused here on the very next request, and no verb acts on
a stale :class:`~storage.records.CaseRecord`.

Matching takes the counselors online on *any* node from presence (with expiry, so a
killed node's counselors stop being chosen) and their records from the database; the
conditional UPDATE of ``assign`` decides between nodes, so no case is assigned twice.
A case cannot be left waiting by a race between a case opened on one node and a
counselor arriving on another: the opener commits the case before it reads presence,
and the arriving counselor's node writes presence before it reads the waiting cases
(``auth``), so at least one of the two sees the other (docs/DECISIONS.md 32).

Unknown and foreign cases get the same answer (``Forbidden``), so case ids cannot be
probed (docs/DECISIONS.md 5).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable

from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import Forbidden
from storage.engine import Database
from storage.records import AccountRecord, CaseRecord

from .logs import log_event
from .matching import choose_counselor, queue_places
from .presence import Presence
from .registry import SessionRegistry

__all__ = ["Casebook", "case_info"]

_NOT_A_PARTICIPANT = "not a participant of this case"


def case_info(case: CaseRecord) -> f.CaseInfo:
    """A case as the wire describes it."""
    return f.CaseInfo(
        case_id=case.id,
        client_id=case.client_id,
        counselor_id=case.counselor_id,
        state=case.state,
        topic=case.topic,
        language=case.language,
        epoch=case.epoch,
        last_seq=case.last_seq,
        created_at=case.created_at,
    )


class Casebook:
    """Cases as the hub's use cases need them. See the module docstring."""

    __slots__ = (
        "_closed",
        "_db",
        "_match_lock",
        "_offered",
        "_participants",
        "_presence",
        "_queue_said",
        "_registry",
    )

    def __init__(self, db: Database, registry: SessionRegistry, presence: Presence) -> None:
        self._db = db
        self._registry = registry
        self._presence = presence
        #: case id -> (client, counselor): filled once a counselor is assigned.
        self._participants: dict[str, tuple[str, ...]] = {}
        self._closed: set[str] = set()
        self._match_lock = asyncio.Lock()
        #: waiting case id -> the queue place its client was last told (case.queue).
        self._queue_said: dict[str, f.QueueInfo] = {}
        #: Languages known to be offered: they only grow (no counselor is ever removed),
        #: so a hit needs no database read, on any node.
        self._offered: frozenset[str] = frozenset()

    # -- reading ---------------------------------------------------------------------

    async def participants(self, case_id: str, account_id: str) -> tuple[str, ...]:
        """The case's participants, if ``account_id`` is one of them (else Forbidden).

        Served from the cache for assigned and closed cases; says nothing about the
        case's state (state-sensitive verbs use :meth:`fresh` or decide in the database).
        """
        known = self._participants.get(case_id)
        if known is None:
            known = (await self.fresh(case_id, account_id)).participants
        elif account_id not in known:
            raise Forbidden(_NOT_A_PARTICIPANT)
        return known

    async def fresh(self, case_id: str, account_id: str) -> CaseRecord:
        """The case as committed now, if ``account_id`` takes part in it (else Forbidden)."""
        case = await self._db.cases.get(case_id)
        if case is None or account_id not in case.participants:
            raise Forbidden(_NOT_A_PARTICIPANT)
        self.learn((case,))
        return case

    def known_closed(self, case_id: str) -> bool:
        """True if the case is known to be closed (False means: read it to know)."""
        return case_id in self._closed

    def learn(self, cases: Iterable[CaseRecord]) -> None:
        """Remember what cannot change about ``cases`` (read anywhere, any time)."""
        for case in cases:
            if case.counselor_id is not None:
                self._participants[case.id] = case.participants
            if case.state == "closed":
                self._closed.add(case.id)

    async def for_account(self, account_id: str) -> list[CaseRecord]:
        """Every case ``account_id`` takes part in, newest first, read fresh."""
        cases = await self._db.cases.for_account(account_id)
        self.learn(cases)
        return cases

    # -- changing --------------------------------------------------------------------

    async def open(self, client_id: str, topic: str, language: str) -> CaseRecord:
        """Open a case for ``client_id`` and assign it to an online counselor if one fits."""
        case = await self._db.cases.create(
            client_id=client_id,
            topic=topic,
            language=language,
            case_id="case_" + secrets.token_hex(10),
            now_ms=now_ms(),
        )
        log_event("case.opened", case=case.id, account=client_id)
        async with self._match_lock:
            counselors = await self.online_counselors()
            if not counselors:
                return case
            counts = await self._db.cases.open_counts([c.id for c in counselors])
            return await self._assign(case, counselors, counts)

    async def match_waiting(self) -> None:
        """Assign every waiting case that an online counselor can take (oldest first)."""
        async with self._match_lock:
            counselors = await self.online_counselors()
            if not counselors:
                return
            waiting = await self._db.cases.waiting()
            if not waiting:
                return
            counts = await self._db.cases.open_counts([c.id for c in counselors])
            for case in waiting:
                await self._assign(case, counselors, counts)
        await self.announce_queue()

    async def languages_offered(self, language: str) -> frozenset[str]:
        """The languages counselors of the service speak (or will: unused invites), read
        again only when ``language`` is not among those already known."""
        if language not in self._offered:
            self._offered = self._offered | await self._db.accounts.languages_offered()
        return self._offered

    async def queue(self, case: CaseRecord) -> f.QueueInfo | None:
        """Where ``case`` stands if it is waiting (None otherwise)."""
        if case.state != "waiting":
            return None
        places = queue_places(await self._db.cases.waiting(), await self.online_counselors())
        place = places.get(case.id)
        if place is not None:
            self._queue_said[case.id] = place
        return place

    async def announce_queue(self) -> None:
        """Tell each waiting case's client its new place, if it changed (``case.queue``)."""
        waiting = await self._db.cases.waiting()
        places = queue_places(waiting, await self.online_counselors())
        for case_id in set(self._queue_said) - set(places):
            del self._queue_said[case_id]
        for case in waiting:
            place = places[case.id]
            if self._queue_said.get(case.id) != place:
                self._queue_said[case.id] = place
                self._registry.publish((case.client_id,), f.CaseQueue(case_id=case.id, queue=place))

    async def online_counselors(self) -> list[AccountRecord]:
        """Counselors with a live session on any node (presence), as stored."""
        ids = await self._presence.online_counselors()
        if not ids:
            return []
        return [a for a in await self._db.accounts.by_ids(sorted(ids)) if a.role == "counselor"]

    async def close(self, case_id: str) -> CaseRecord | None:
        """Close the case; the closed record, or None if it was already closed (by
        anyone, on any hub: the conditional UPDATE decides, so exactly one closer wins)."""
        closed = await self._db.cases.close(case_id, now_ms())
        self._closed.add(case_id)
        if closed is not None:
            self.learn((closed,))
        return closed

    async def _assign(
        self, case: CaseRecord, counselors: list[AccountRecord], counts: dict[str, int]
    ) -> CaseRecord:
        chosen = choose_counselor(
            counselors, topic=case.topic, language=case.language, open_cases=counts
        )
        if chosen is None:
            return case
        assigned = await self._db.cases.assign(case.id, chosen.id, now_ms())
        if assigned is None:  # another hub assigned (or someone closed) it first
            fresh = await self._db.cases.get(case.id)
            if fresh is None:
                return case
            self.learn((fresh,))
            return fresh
        counts[chosen.id] = counts.get(chosen.id, 0) + 1
        self.learn((assigned,))
        log_event("case.assigned", case=case.id, counselor=chosen.id)
        self._registry.publish(assigned.participants, f.CaseAssigned(case=case_info(assigned)))
        return assigned
