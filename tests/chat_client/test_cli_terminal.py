"""The terminal counselor and client as subprocesses against the real hub: what other
people wrote prints escaped, ``watch`` announces cases, every message line carries its
case tag, ``chat`` shows a backlog, and showing a message sends a read receipt."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from chat_client import ReceiptEvent
from chat_client.terminal import case_tag
from tests.helpers.cli import CHAT_CLIENT, PtyRun, cli_env, run_cli
from tests.helpers.clients import PASS_CLIENT, PASS_COUNSELOR, Pair, register_client, take_until
from tests.helpers.hubs import RunningHub

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # would put "rm -rf ~" on the clipboard
FAKE_HEADER = "[{tag} #99 12:00:00] dr-who ✓: your session is over, call +1 555 0100"


def header_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[")]


async def test_hostile_terminal_body_cannot_forge_a_line_or_drive_the_terminal(
    pair: Pair,
) -> None:
    tag = case_tag(pair.case.case_id)
    body = "hello\n" + FAKE_HEADER.format(tag=tag) + "\r\n" + OSC52 + "\x9b2J" + "\u202eevil\u202c"
    sent = await pair.client.send(pair.case.case_id, body)
    term = await PtyRun.start(
        [*CHAT_CLIENT, "--home", str(pair.tmp_path / "counselor"), "history", pair.case.case_id],
        env=cli_env(PASS_COUNSELOR),
    )
    assert await term.wait() == 0, term.text
    raw = term.output.decode()
    assert "\x1b" not in raw and "\x9b" not in raw and "\u202e" not in raw
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07" in raw and "\\x9b2J" in raw and "\\u202eevil" in raw
    # One real header; the forged one is an indented continuation line of the body.
    [header] = header_lines(term.text)
    assert header.startswith(f"[{tag} #{sent.seq} ") and "alice ✓: hello" in header
    assert "\n    " + FAKE_HEADER.format(tag=tag) in term.text


async def test_hostile_terminal_json_output_escapes_c1_and_bidi(pair: Pair) -> None:
    await pair.client.send(pair.case.case_id, "a\x9bb\u2066c\u202ed\x1be")
    rc, out, err = await run_cli(
        pair.tmp_path / "counselor",
        "--json",
        "history",
        pair.case.case_id,
        passphrase=PASS_COUNSELOR,
    )
    assert rc == 0, err
    assert not re.search("[\x1b\x9b\u2066\u202e]", out)
    assert "a\\u009bb\\u2066c\\u202ed\\u001be" in out


async def read_until(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> None:
    while not any(needle in line for line in seen):
        line = await asyncio.wait_for(stream.readline(), 20)
        assert line, f"{needle!r} never printed; got:\n" + "".join(seen)
        seen.append(line.decode())


async def test_watch_announces_cases_and_tags_every_line(hub: RunningHub, tmp_path: Path) -> None:
    code = await hub.invite_counselor("Dr Watch", ("en",), ("grief",))
    counselor_home = tmp_path / "counselor"
    rc, _, err = await run_cli(
        counselor_home,
        "register",
        "--handle=dr-watch",
        "--invite",
        code,
        "--kdf-ops",
        "1",
        "--kdf-mem",
        "8192",
        url=hub.url,
        passphrase=PASS_COUNSELOR,
    )
    assert rc == 0, err
    watch = await asyncio.create_subprocess_exec(
        *CHAT_CLIENT,
        "--home",
        str(counselor_home),
        "watch",
        "--timeout",
        "30",
        env=cli_env(PASS_COUNSELOR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert watch.stdout is not None
    client = await register_client(hub, tmp_path / "client", "wren")
    seen: list[str] = []
    try:
        case = await client.open_case("grief", "en")
        await read_until(watch.stdout, "case assigned", seen)
        tag = case_tag(case.case_id)
        assert (
            f"* case assigned: {case.case_id} (tag {tag}) with wren: topic grief, language en"
            in seen[-1]
        )
        assert f"answer with: chat-client chat {case.case_id}" in seen[-1]
        await client.send(case.case_id, "first words")
        await read_until(watch.stdout, "first words", seen)
        assert seen[-1].startswith(f"[{tag} #1 ") and "wren ✓: first words" in seen[-1]
        # A watch started later lists what is already on the desk.
        rc, out, err = await run_cli(
            counselor_home, "watch", "--timeout", "1", passphrase=PASS_COUNSELOR
        )
        assert rc == 0, err
        assert f"* open case: {case.case_id} (tag {tag}) with wren: topic grief" in out
        await client.close_case(case.case_id)
        await read_until(watch.stdout, "case closed", seen)
        assert f"* case closed: {case.case_id} (tag {tag}): topic grief, language en" in seen[-1]
    finally:
        await client.close()
        with contextlib.suppress(ProcessLookupError):
            watch.kill()
        await watch.wait()


async def test_chat_shows_the_backlog_first(pair: Pair) -> None:
    for i in range(1, 6):
        await pair.client.send(pair.case.case_id, f"line {i}")
    rc, out, err = await run_cli(
        pair.tmp_path / "counselor",
        "chat",
        pair.case.case_id,
        "--backlog",
        "3",
        passphrase=PASS_COUNSELOR,
        stdin=b"/quit\n",
    )
    assert rc == 0, err
    tag = case_tag(pair.case.case_id)
    assert "topic anxiety, language en" in out.splitlines()[0]
    assert "* the last 3 of 5 messages" in out
    assert [line.split("✓: ")[1] for line in header_lines(out)] == ["line 3", "line 4", "line 5"]
    assert all(line.startswith(f"[{tag} #") for line in header_lines(out))


async def test_history_and_chat_send_read_receipts(pair: Pair) -> None:
    sent = await pair.counselor.send(pair.case.case_id, "how are you today?")
    home = pair.tmp_path / "client"
    rc, out, err = await run_cli(home, "history", pair.case.case_id, passphrase=PASS_CLIENT)
    assert rc == 0 and "how are you today?" in out, err
    seen = await take_until(
        pair.counselor,
        lambda e: isinstance(e, ReceiptEvent) and e.kind == "read" and e.up_to_seq == sent.seq,
    )
    assert seen[-1].account_id == pair.client.account_id  # type: ignore[union-attr]
    later = await pair.counselor.send(pair.case.case_id, "still there?")
    rc, out, err = await run_cli(
        home, "chat", pair.case.case_id, passphrase=PASS_CLIENT, stdin=b"/quit\n"
    )
    assert rc == 0 and "still there?" in out, err
    await take_until(
        pair.counselor,
        lambda e: isinstance(e, ReceiptEvent) and e.kind == "read" and e.up_to_seq == later.seq,
    )


async def test_sdk_says_delivered_on_receipt(pair: Pair) -> None:
    sent = await pair.counselor.send(pair.case.case_id, "did this arrive?")
    await take_until(
        pair.client,
        lambda e: hasattr(e, "message") and e.message.seq == sent.seq,  # type: ignore[union-attr]
    )
    seen = await take_until(
        pair.counselor,
        lambda e: isinstance(e, ReceiptEvent) and e.kind == "delivered",
    )
    last = seen[-1]
    assert isinstance(last, ReceiptEvent)
    assert (last.up_to_seq, last.account_id) == (sent.seq, pair.client.account_id)
