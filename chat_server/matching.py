"""Case matching: which online counselor gets a new case. Pure; the hub supplies the facts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from protocol.frames import QueueInfo
from storage.records import AccountRecord, CaseRecord

__all__ = ["choose_counselor", "queue_places"]


def choose_counselor(
    counselors: Iterable[AccountRecord],
    *,
    topic: str,
    language: str,
    open_cases: Mapping[str, int],
) -> AccountRecord | None:
    """Pick the counselor for a case, or None when nobody online speaks its language.

    Language is a hard requirement (a counselor must be able to talk with the client);
    specialty is a preference; among equals the fewest open cases wins, then the lowest
    account id, so the choice is deterministic.
    """
    speakers = [c for c in counselors if c.role == "counselor" and language in c.languages]
    if not speakers:
        return None
    specialists = [c for c in speakers if topic in c.specialties] or speakers
    return min(specialists, key=lambda c: (open_cases.get(c.id, 0), c.id))


def queue_places(
    waiting: Sequence[CaseRecord], counselors: Iterable[AccountRecord]
) -> dict[str, QueueInfo]:
    """Where each waiting case stands: its place among the waiting cases of its language
    (``waiting`` is oldest first, the order matching takes them in), and how many online
    counselors speak its language, and of those list its topic."""
    online = [c for c in counselors if c.role == "counselor"]
    ahead: dict[str, int] = {}
    places: dict[str, QueueInfo] = {}
    for case in waiting:
        ahead[case.language] = ahead.get(case.language, 0) + 1
        speakers = [c for c in online if case.language in c.languages]
        places[case.id] = QueueInfo(
            position=ahead[case.language],
            counselors_online=len(speakers),
            specialists_online=sum(1 for c in speakers if case.topic in c.specialties),
        )
    return places
