"""Issue 14 from the terminal: a client writes with ``chat-client send`` while its case
waits; the counselor who registers later sees ``watch`` say it is waiting for the
client's key, then print the three messages, verified and in order, once the client's
next command (any connection) shares the key; ``history`` then shows them too."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.helpers.cli import CHAT_CLIENT, KDF, cli_env, run_cli
from tests.helpers.hubs import RunningHub

WAITING = ["is anyone there?", "I need to talk to someone", "I will come back later"]


async def test_client_writes_while_waiting_counselor_reads_after_the_key_is_shared(
    hub: RunningHub, tmp_path: Path
) -> None:
    invite = await hub.invite_counselor("dr-late", ("en",), ("anxiety",))
    client, counselor = tmp_path / "client", tmp_path / "counselor"
    rc, _, err = await run_cli(client, "register", "--handle=kim", *KDF, url=hub.url)
    assert rc == 0, err
    rc, out, err = await run_cli(client, "open-case", "--topic", "anxiety", "--language", "en")
    assert rc == 0 and " waiting: " in out, err
    case_id = out.split()[0]
    for text in WAITING:
        rc, out, err = await run_cli(client, "send", case_id, text)
        assert rc == 0, err
    rc, _, err = await run_cli(  # assigned the waiting case as it signs in
        counselor, "register", "--handle=dr-late", "--invite", invite, *KDF, url=hub.url
    )
    assert rc == 0, err

    watch = await asyncio.create_subprocess_exec(
        *CHAT_CLIENT, "--home", str(counselor), "watch", "--count", "3", "--timeout", "30",
        env=cli_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None
    seen: list[str] = []

    async def until(needle: str) -> None:
        while not any(needle in line for line in seen):
            line = await asyncio.wait_for(watch.stdout.readline(), 20)  # type: ignore[union-attr]
            assert line, "".join(seen)
            seen.append(line.decode())

    try:
        await until("waiting for the client's key: messages from #1 on are shown once")
        rc, _, err = await run_cli(client, "cases")  # the client's next connection
        assert rc == 0, err
        assert await asyncio.wait_for(watch.wait(), 30) == 0
        rest = (await watch.stdout.read()).decode()
        lines = [ln for ln in "".join(seen).splitlines() + rest.splitlines() if "] kim" in ln]
        assert [ln.split("✓: ", 1)[1] for ln in lines] == WAITING, lines
        assert [ln.split()[1] for ln in lines] == ["#1", "#2", "#3"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            watch.kill()
        await watch.wait()
    rc, out, err = await run_cli(counselor, "history", case_id)
    assert rc == 0, err
    assert [ln.split("✓: ", 1)[1] for ln in out.splitlines() if "✓: " in ln] == WAITING
