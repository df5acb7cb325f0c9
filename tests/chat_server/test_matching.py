"""Case matching (chat_server/matching.py): language is required, specialty preferred,
then the fewest open cases, then the lowest account id."""

from __future__ import annotations

from chat_server.matching import choose_counselor
from storage.records import AccountRecord, Role
from tests.helpers.usecases import account


def counselor(
    account_id: str,
    languages: tuple[str, ...],
    specialties: tuple[str, ...] = (),
    role: Role = "counselor",
) -> AccountRecord:
    return account(account_id, role, languages, specialties)


def choose(
    people: list[AccountRecord], topic: str = "grief", language: str = "en", **open_cases: int
) -> str | None:
    chosen = choose_counselor(people, topic=topic, language=language, open_cases=open_cases)
    return None if chosen is None else chosen.id


def test_nobody_who_speaks_the_language_means_no_one() -> None:
    assert choose([]) is None
    assert choose([counselor("a", ("ur",), ("grief",))]) is None


def test_a_client_account_is_never_chosen() -> None:
    assert choose([counselor("a", ("en",), ("grief",), role="client")]) is None


def test_specialty_wins_over_load() -> None:
    people = [counselor("a", ("en",)), counselor("b", ("en", "ur"), ("grief",))]
    assert choose(people, a=0, b=9) == "b"
    assert choose(people, topic="anxiety", a=1, b=0) == "b"  # no specialist: by load


def test_fewest_open_cases_then_lowest_id() -> None:
    people = [counselor(i, ("en",), ("grief",)) for i in ("c", "a", "b")]
    assert choose(people, a=2, b=1, c=1) == "b"
    assert choose(people) == "a"  # a counselor missing from open_cases holds none
