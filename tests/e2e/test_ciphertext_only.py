"""The promise: after a real conversation, the database files and the server log hold
no plaintext, no passphrase and no personal data; only the participants can read it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chat_client import ChatClient, MessageEvent
from tests.helpers.hubs import TEST_KDF, start_hub

MARKERS = [f"MARKER-{i}-\u00e9t\u00e9-zq{i * 7919}x" for i in range(6)]
CLIENT_PASS = "PASSPHRASE-client-7c1d"
COUNSELOR_PASS = "PASSPHRASE-counselor-29af"
COUNSELOR_NAME = "Dr NAMEMARKER Qadir"
TOPIC = "topicmarkerzz"


def _files(tmp: Path) -> list[Path]:
    return [p for p in tmp.rglob("*") if p.is_file()]


async def test_no_plaintext_in_database_files_or_logs(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    async with start_hub(hub_dir) as hub:
        # Specialties are the counselor's public profile; the client's topic is private.
        code = await hub.invite_counselor(COUNSELOR_NAME, ("en",), ("anxiety",))
        counselor = await ChatClient.register(
            hub.url, "counselor-m", COUNSELOR_PASS, home=tmp_path / "c", invite=code, **TEST_KDF
        )
        client = await ChatClient.register(
            hub.url, "client-m", CLIENT_PASS, home=tmp_path / "a", **TEST_KDF
        )
        case = await client.open_case(TOPIC, "en")
        for i, marker in enumerate(MARKERS):
            sender = client if i % 2 == 0 else counselor
            await sender.send(case.case_id, f"turn {i}: {marker}")

        # The counselor really received and verified every marker (so the test is not
        # vacuous: the plaintext existed, just not on the server).
        seen = [m.body for m in await counselor.history(case.case_id)]
        assert seen == [f"turn {i}: {m}" for i, m in enumerate(MARKERS)]
        await asyncio.gather(client.close(), counselor.close())
        # Read the files while the hub still runs, so the -wal file is still there.
        live_files = {p: p.read_bytes() for p in _files(hub_dir)}

    assert any(p.name.endswith("-wal") for p in live_files), "expected a WAL file while live"
    files = {**live_files, **{p: p.read_bytes() for p in _files(hub_dir)}}
    assert any(p.suffix == ".db" for p in files) and any(p.name == "hub.log" for p in files)
    secrets = [*MARKERS, CLIENT_PASS, COUNSELOR_PASS, COUNSELOR_NAME, TOPIC, "turn 0"]
    for path, data in files.items():
        for secret in secrets:
            for form in {secret.encode(), secret.encode("utf-16-le"), secret.lower().encode()}:
                assert form not in data, f"{secret!r} found in {path.name}"
    # The client's own key store holds no plaintext either (only wrapped keys and cursors).
    for path in _files(tmp_path / "a"):
        data = path.read_bytes()
        assert all(m.encode() not in data for m in MARKERS) and CLIENT_PASS.encode() not in data


async def test_messages_from_a_live_stream_are_verified(tmp_path: Path) -> None:
    async with start_hub(tmp_path / "hub") as hub:
        code = await hub.invite_counselor()
        counselor = await ChatClient.register(
            hub.url, "live-counselor", COUNSELOR_PASS, home=tmp_path / "c", invite=code, **TEST_KDF
        )
        client = await ChatClient.register(
            hub.url, "live-client", CLIENT_PASS, home=tmp_path / "a", **TEST_KDF
        )
        case = await client.open_case("anxiety", "en")
        await client.send(case.case_id, "are you there?")

        async def first_message() -> MessageEvent:
            async for event in counselor.events():
                if isinstance(event, MessageEvent):
                    return event
            raise AssertionError("stream ended")

        event = await asyncio.wait_for(first_message(), 10)
        assert event.message.verified and event.message.body == "are you there?"
        assert event.message.sender_id == client.account_id
        await asyncio.gather(client.close(), counselor.close())
