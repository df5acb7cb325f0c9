"""Every everyday mistake with ``chat-client`` gets one clear line and the table's exit
code (protocol/exit_codes.py): a bare server origin, a bad handle, no terminal to ask
for the passphrase, terms not yet accepted, a case you cannot see."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_client.wording import BAD_HANDLE, CONSENT_REQUIRED, no_such_case
from tests.helpers.cli import CHAT_CLIENT, KDF, PtyRun, cli_env, run_cli
from tests.helpers.disputes import ESCROW_PASS, ceremony, server
from tests.helpers.hubs import RunningHub


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chat-client: "), err
    return lines[0]


async def test_bare_origin_gets_the_chat_endpoint(hub: RunningHub, tmp_path: Path) -> None:
    origin = hub.url.removesuffix("/ws")
    rc, out, err = await run_cli(
        tmp_path / "a", "register", "--handle", "ana", *KDF, url=origin + "/"
    )
    assert rc == 0, err
    assert "handle   ana" in out
    rc, _, err = await run_cli(tmp_path / "a", "cases", url=origin)
    assert rc == 0, err
    # An existing account on a wrong path: the same one line (not twice, no log line).
    rc, _, err = await run_cli(tmp_path / "a", "cases", url=origin + "/chat")
    assert rc == 4 and f"no chat endpoint at {origin}/chat" in one_line(err)


async def test_wrong_path_says_where_the_endpoint_is(hub: RunningHub, tmp_path: Path) -> None:
    origin = hub.url.removesuffix("/ws")
    rc, _, err = await run_cli(
        tmp_path / "a", "register", "--handle", "ana", *KDF, url=origin + "/chat"
    )
    assert rc == 4
    line = one_line(err)
    assert f"no chat endpoint at {origin}/chat" in line and f"did you mean {hub.url}?" in line


async def test_bad_handle_says_what_is_allowed(hub: RunningHub, tmp_path: Path) -> None:
    for handle in ("Calm River", "x", "-dash"):
        rc, _, err = await run_cli(
            tmp_path / "b", "register", f"--handle={handle}", *KDF, url=hub.url
        )
        assert rc == 2
        line = one_line(err)
        assert BAD_HANDLE in line and "regex" not in line
    assert not (tmp_path / "b").exists()  # refused before anything was written


async def test_no_terminal_one_line_no_getpass_warning(hub: RunningHub, tmp_path: Path) -> None:
    rc, _, err = await run_cli(
        tmp_path / "c", "register", "--handle", "cleo", *KDF, url=hub.url, passphrase=None
    )
    assert rc == 2
    line = one_line(err)
    assert "GetPassWarning" not in err and "CHAT_PASSPHRASE" in line


async def test_terminal_prompt_still_asks(hub: RunningHub, tmp_path: Path) -> None:
    home = tmp_path / "d"
    term = await PtyRun.start(
        [*CHAT_CLIENT, "--home", str(home), "--server", hub.url, "register", "--handle=dora", *KDF],
        env=cli_env(None),
    )
    try:
        await term.expect("Passphrase: ")
        term.send("a long passphrase\n")
        await term.expect("Repeat passphrase: ")
        term.send("a long passphrase\n")
        assert await term.wait() == 0, term.text
    finally:
        term.kill()
    assert "handle   dora" in term.text and "a long passphrase" not in term.text
    assert "Warning" not in term.text


async def test_unknown_and_foreign_case_one_wording(hub: RunningHub, tmp_path: Path) -> None:
    owner, other = tmp_path / "owner", tmp_path / "other"
    for home, handle in ((owner, "olga"), (other, "omar")):
        rc, _, err = await run_cli(home, "register", "--handle", handle, *KDF, url=hub.url)
        assert rc == 0, err
    rc, out, err = await run_cli(owner, "open-case", "--topic", "anxiety", "--language", "en")
    assert rc == 0, err
    case_id = out.split()[0]
    for target in (case_id, "case_doesnotexist"):
        for command in (
            ["history", target],
            ["send", target, "hello"],
            ["chat", target],
            ["close-case", target],
        ):
            rc, _, err = await run_cli(other, *command, stdin=b"")
            assert rc == 1, (command, err)
            assert one_line(err) == f"chat-client: {no_such_case(target)}", command


async def test_consent_error_names_the_command_once(
    hub: RunningHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    policy, org_fp = ceremony(tmp_path / "keys", 1, 1)
    assert (
        await server(
            hub, "admin", "escrow-policy", "install", str(policy), "--org-fingerprint", org_fp
        )
        == 0
    )
    home = tmp_path / "e"
    rc, _, err = await run_cli(home, "register", "--handle", "eve", *KDF, url=hub.url)
    assert rc == 0, err
    rc, _, err = await run_cli(home, "open-case", "--topic", "anxiety", "--language", "en")
    assert rc == 1
    line = one_line(err)
    assert line == f"chat-client: {CONSENT_REQUIRED}"
    assert line.count("chat-client consent") == 1 and line.count("terms") == 1
    # Following the advice works; the terms print as a quoted block (hub text, indented).
    rc, out, err = await run_cli(home, "--org-fingerprint", org_fp, "consent", "--yes")
    assert rc == 0, err
    lines = out.splitlines()
    shown = next(i for i, line in enumerate(lines) if line.startswith("Organisation key"))
    terms = lines[:shown]
    assert terms and all(line.startswith("  ") or not line for line in terms)
    assert out.splitlines()[-1].startswith("accepted terms version 1 under policy ")
    rc, out, err = await run_cli(
        home, "--org-fingerprint", org_fp, "open-case", "--topic", "anxiety", "--language", "en"
    )
    assert rc == 0 and "waiting" in out, err
