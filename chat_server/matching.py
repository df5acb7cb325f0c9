"""Case matching: which online counselor gets a new case. Pure; the hub supplies the facts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from storage.records import AccountRecord

__all__ = ["choose_counselor"]


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
