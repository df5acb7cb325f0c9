"""Case matching (chat_server/matching.py): language is required, specialty preferred,
then the fewest open cases, then the lowest account id."""

from __future__ import annotations

from chat_server.matching import choose_counselor, queue_places
from protocol.frames import QueueInfo
from storage.records import AccountRecord, CaseRecord, Role
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


def waiting_case(case_id: str, language: str, topic: str = "grief") -> CaseRecord:
    return CaseRecord(
        id=case_id,
        client_id=f"client-{case_id}",
        counselor_id=None,
        state="waiting",
        topic=topic,
        language=language,
        epoch=0,
        last_seq=0,
        chain_head=bytes(32),
        created_at=1,
    )


def test_queue_places_count_per_language_and_who_is_online() -> None:
    waiting = [
        waiting_case("c1", "en"),
        waiting_case("c2", "ur", "sleep"),
        waiting_case("c3", "en", "sleep"),
    ]
    online = [
        counselor("a", ("en",), ("sleep",)),
        counselor("b", ("en", "ur"), ("grief",)),
        counselor("x", ("en",), ("sleep",), role="client"),
    ]
    places = queue_places(waiting, online)
    assert places == {
        "c1": QueueInfo(position=1, counselors_online=2, specialists_online=1),
        "c2": QueueInfo(position=1, counselors_online=1, specialists_online=0),
        "c3": QueueInfo(position=2, counselors_online=2, specialists_online=1),
    }
    assert queue_places(waiting[:1], [])["c1"] == QueueInfo(
        position=1, counselors_online=0, specialists_online=0
    )
