"""``chat-server serve`` that cannot start says so in one line with its own exit code,
and every command of every tool shows the shared exit-code table in its --help."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from chat_client import cli as client_cli
from chat_client import escrow_cli
from chat_server import cli as server_cli
from protocol.exit_codes import ExitCode, epilog
from tests.helpers.cli import CHAT_ESCROW, CHAT_SERVER, cli_env, run
from tests.helpers.hubs import free_port, hub_process

REPO = Path(__file__).resolve().parents[2]


def serve_argv(tmp_path: Path, port: int | str) -> list[str]:
    return [
        *CHAT_SERVER,
        "serve",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "chat.db"),
        "--state-dir",
        str(tmp_path / "state"),
        "--min-kdf",
        "test",
    ]


def only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chat-server: ") and "Traceback" not in err
    return lines[0]


async def test_busy_port_one_line_exit_6(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = await run(serve_argv(tmp_path, port), env=cli_env(None), timeout=60)
    assert rc == int(ExitCode.START_FAILED) == 6
    line = only_line(err)
    assert f"port {port} is already in use" in line and "--port" in line
    assert "listening" not in out


async def test_started_twice_one_line_exit_6(tmp_path: Path) -> None:
    async with hub_process(tmp_path / "first") as first:
        rc, _, err = await run(
            serve_argv(tmp_path / "second", first.port), env=cli_env(None), timeout=60
        )
        assert rc == 6
        assert f"port {first.port} is already in use" in only_line(err)
        assert first.proc is not None and first.proc.poll() is None  # the first one is fine


@pytest.mark.parametrize("port", ["99999", "-1"])
async def test_impossible_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    rc, _, err = await run(serve_argv(tmp_path, port), env=cli_env(None), timeout=60)
    assert rc == ExitCode.USAGE
    assert f"port {port} is not a port number" in only_line(err)
    assert not (tmp_path / "chat.db").exists()


def _all_parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _all_parsers(child)
    return found


@pytest.mark.parametrize(
    ("parser", "codes"),
    [
        (client_cli.build_parser(), (0, 1, 2, 3, 4, 5)),
        (server_cli.build_parser(), (0, 1, 2, 4, 6, 10)),
        (escrow_cli._parser(), (0, 1, 2, 3, 12)),
    ],
    ids=["chat-client", "chat-server", "chat-escrow"],
)
def test_every_help_shows_the_exit_codes(
    parser: argparse.ArgumentParser, codes: tuple[int, ...]
) -> None:
    table = epilog(*(ExitCode(c) for c in codes))
    for prog, each in _all_parsers(parser):
        assert each.epilog == table, prog
        assert "Exit codes: 0 ok" in each.format_help(), prog


def test_same_failure_same_code() -> None:
    # A wrong passphrase is 3 in chat-client and chat-escrow; security refusals are 5.
    assert client_cli.EXIT_AUTH == escrow_cli.EXIT_PASSPHRASE == int(ExitCode.AUTH) == 3
    assert client_cli.EXIT_SECURITY == int(ExitCode.SECURITY) == 5
    assert int(escrow_cli.EXIT_FOREIGN) == int(ExitCode.FOREIGN) == 12


async def test_escrow_wrong_passphrase_exits_3(tmp_path: Path) -> None:
    key = tmp_path / "org.key"
    env = cli_env(None, CHAT_ESCROW_PASSPHRASE="the right one")
    argv = ["--kdf-ops", "1", "--kdf-mem", "8192"]
    escrow = CHAT_ESCROW
    rc, _, err = await run(
        [*escrow, "org-keygen", "--name", "org", "--out", str(key), *argv], env=env
    )
    assert rc == 0, err
    env["CHAT_ESCROW_PASSPHRASE"] = "the wrong one"
    rc, _, err = await run(
        [
            *escrow,
            "policy",
            "--org-key",
            str(key),
            "--officer",
            str(key.with_suffix(".pub")),
            "--threshold",
            "1",
            "--allow-single-officer",
            "--out",
            str(tmp_path / "p.json"),
        ],
        env=env,
    )
    assert rc == 3 and "passphrase" in err, err


async def test_database_not_there_one_line_exit_4(tmp_path: Path) -> None:
    nobody = free_port()  # nothing listens there
    argv = serve_argv(tmp_path, 0)
    argv[argv.index("--db") + 1] = f"postgresql+asyncpg://postgres@127.0.0.1:{nobody}/chat"
    rc, _, err = await run(argv, env=cli_env(None), timeout=60)
    assert rc == ExitCode.CONNECT
    assert "cannot connect" in only_line(err) and "--db" in err


async def test_scripts_serve_twice_one_line_exit_6(tmp_path: Path) -> None:
    async with hub_process(tmp_path / "first") as first:
        argv = [
            str(REPO / "scripts" / "serve"),
            "--port",
            str(first.port),
            "--db",
            str(tmp_path / "second.db"),
            "--state-dir",
            str(tmp_path / "state"),
        ]
        rc, _, err = await run(argv, env=cli_env(None), timeout=300)
    assert rc == 6 and "Traceback" not in err
    # (A first run after a change to what setup installs from reinstalls first.)
    last = err.strip().splitlines()[-1]
    assert last.startswith("chat-server: ") and f"port {first.port} is already in use" in last
