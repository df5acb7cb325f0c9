"""A client is told where they stand: ``open-case`` prints the queue position and who
is online for the case, a language no counselor of the service speaks is refused with
the ones offered, and a waiting client sees its position move (``chat``, QueueEvent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from chat_client import CaseAssignedEvent, ChatClient, QueueEvent
from tests.helpers.cli import CHAT_CLIENT, KDF, cli_env, run_cli
from tests.helpers.clients import (
    PASS_COUNSELOR,
    register_client,
    register_counselor,
    take_until,
)
from tests.helpers.hubs import TEST_KDF, RunningHub


async def offline_counselor(hub: RunningHub, home: Path, handle: str = "dr-ur") -> None:
    """A counselor account speaking en and ur, not online."""
    code = await hub.invite_counselor(handle, ("en", "ur"), ("grief",))
    rc, _, err = await run_cli(
        home, "register", f"--handle={handle}", "--invite", code, *KDF, url=hub.url
    )
    assert rc == 0, err


async def test_language_nobody_speaks_is_refused_with_the_offered_ones(
    hub: RunningHub, tmp_path: Path
) -> None:
    await offline_counselor(hub, tmp_path / "counselor")
    await hub.invite_counselor("Dr Fr", ("fr",), ())  # an unused invite counts too
    home = tmp_path / "client"
    rc, _, err = await run_cli(home, "register", "--handle=kim", *KDF, url=hub.url)
    assert rc == 0, err
    rc, out, err = await run_cli(home, "open-case", "--topic", "grief", "--language", "xx")
    assert rc == 2 and out == ""
    assert err.strip() == (
        "chat-client: no counselor of this service speaks 'xx'; languages offered: en, fr, ur"
    )
    rc, out, err = await run_cli(home, "--json", "cases")
    assert json.loads(out)["cases"] == []  # nothing was opened
    # Once a counselor for it is invited, the language is offered (read again on a miss).
    await hub.invite_counselor("Dr Xx", ("xx",), ())
    rc, out, err = await run_cli(home, "open-case", "--topic", "grief", "--language", "xx")
    assert rc == 0 and " waiting: number 1 in the queue for xx" in out, err


async def test_open_case_prints_position_and_who_is_online(hub: RunningHub, tmp_path: Path) -> None:
    await offline_counselor(hub, tmp_path / "counselor")
    first, second = tmp_path / "first", tmp_path / "second"
    for home, handle in ((first, "lee"), (second, "max")):
        rc, _, err = await run_cli(home, "register", f"--handle={handle}", *KDF, url=hub.url)
        assert rc == 0, err
    rc, out, err = await run_cli(first, "open-case", "--topic", "grief", "--language", "ur")
    assert rc == 0, err
    assert out.strip().split(" ", 1)[1] == (
        "waiting: number 1 in the queue for ur; "
        "no counselor for ur is online now: the case waits for one"
    )
    rc, out, err = await run_cli(
        second, "--json", "open-case", "--topic", "sleep", "--language", "ur"
    )
    assert rc == 0, err
    opened = json.loads(out)
    assert opened["state"] == "waiting"
    assert opened["queue"] == {"position": 2, "counselors_online": 0, "specialists_online": 0}

    # With a counselor online who speaks en but does not list the topic:
    counselor = await register_counselor(hub, tmp_path / "online", "dr-en")
    try:
        rc, out, err = await run_cli(first, "open-case", "--topic", "sleep", "--language", "en")
        assert rc == 0, err
        assert "assigned: a counselor has the case" in out
    finally:
        await counselor.close()


async def test_waiting_client_sees_its_position_move(hub: RunningHub, tmp_path: Path) -> None:
    await offline_counselor(hub, tmp_path / "counselor", "dr-ur")
    ahead = await register_client(hub, tmp_path / "ahead", "ahead")
    behind_home = tmp_path / "behind"
    rc, _, err = await run_cli(behind_home, "register", "--handle=behind", *KDF, url=hub.url)
    assert rc == 0, err
    behind = await register_client(hub, tmp_path / "behind-sdk", "behind-sdk")
    first = await ahead.open_case("grief", "ur")
    assert ahead.queue(first.case_id) is not None
    rc, out, err = await run_cli(behind_home, "open-case", "--topic", "grief", "--language", "ur")
    assert rc == 0 and "number 2 in the queue" in out, err
    case_id = out.split()[0]
    sdk_case = await behind.open_case("grief", "ur")
    queue = behind.queue(sdk_case.case_id)
    assert queue is not None and queue.position == 3

    chat = await asyncio.create_subprocess_exec(
        *CHAT_CLIENT,
        "--home",
        str(behind_home),
        "chat",
        case_id,
        env=cli_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert chat.stdout is not None and chat.stdin is not None
    seen: list[str] = []

    async def until(needle: str) -> None:
        while not any(needle in line for line in seen):
            line = await asyncio.wait_for(chat.stdout.readline(), 20)  # type: ignore[union-attr]
            assert line, "".join(seen)
            seen.append(line.decode())

    try:
        await until("/quit to leave")
        await asyncio.sleep(0.5)  # the chat session is attached before the queue moves
        await ahead.close_case(first.case_id)
        await until("* waiting: number 1 in the queue for ur")
        got = await take_until(behind, lambda e: isinstance(e, QueueEvent))
        moved = got[-1]
        assert isinstance(moved, QueueEvent)
        assert (moved.case_id, moved.position, moved.counselors_online) == (
            sdk_case.case_id,
            2,
            0,
        )
        assert behind.queue(sdk_case.case_id) is not None

        code = await hub.invite_counselor("Dr Live", ("ur",), ("grief",))
        counselor = await ChatClient.register(
            hub.url, "dr-live", PASS_COUNSELOR, home=tmp_path / "online", invite=code, **TEST_KDF
        )
        try:
            await until("counselor dr-live joined")
            await take_until(behind, lambda e: isinstance(e, CaseAssignedEvent))
        finally:
            await counselor.close()
        chat.stdin.write(b"/quit\n")
        await chat.stdin.drain()
        assert await asyncio.wait_for(chat.wait(), 20) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            chat.kill()
        await chat.wait()
        await ahead.close()
        await behind.close()
