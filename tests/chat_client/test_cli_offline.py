"""CLI parsing, help, error mapping and the commands that need no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_client import cli
from chat_client.errors import ConnectFailed, KdfTooWeak, KeyStoreError, SessionEnded
from protocol import errors as pe
from tests.helpers.clients import make_store

COMMANDS = [
    "register",
    "login",
    "whoami",
    "open-case",
    "cases",
    "send",
    "history",
    "chat",
    "watch",
    "receipt",
    "close-case",
    "logout",
]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert "usage: chat-client" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["send"], ["register"], ["bogus"], ["watch", "--count", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2, argv


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_SERVER", "ws://example:1/ws")
    monkeypatch.setenv("CHAT_HOME", "/tmp/somewhere")
    args = cli.build_parser().parse_args(["cases"])
    assert (args.server, args.home, args.json) == ("ws://example:1/ws", "/tmp/somewhere", False)
    monkeypatch.delenv("CHAT_SERVER")
    monkeypatch.delenv("CHAT_HOME")
    args = cli.build_parser().parse_args(["--json", "send", "case_1", "hello there"])
    assert args.server is None and args.home == "~/.chat-client" and args.json
    assert (args.case, args.text) == ("case_1", "hello there")


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored\n")
    monkeypatch.setenv("CHAT_PASSPHRASE", "from-env")
    args = parser.parse_args(["--passphrase-file", str(secret), "cases"])
    assert cli.read_passphrase(args) == "from-file"
    assert cli.read_passphrase(parser.parse_args(["cases"])) == "from-env"
    monkeypatch.delenv("CHAT_PASSPHRASE")
    answers = iter(["one", "two"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: True)  # as at a terminal
    with pytest.raises(cli.UsageError, match="do not match"):
        cli.read_passphrase(parser.parse_args(["cases"]), confirm=True)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (pe.AuthFailed("nope"), cli.EXIT_AUTH),
        (pe.CryptoError("wrong passphrase"), cli.EXIT_AUTH),
        (pe.CryptoError("signature does not verify"), cli.EXIT_ERROR),
        (pe.Forbidden("case is closed"), cli.EXIT_ERROR),
        (ConnectFailed("refused"), cli.EXIT_CONNECT),
        (SessionEnded(4009, "replaced"), cli.EXIT_CONNECT),
        (SessionEnded(4001, ""), cli.EXIT_AUTH),
        (KdfTooWeak("low"), cli.EXIT_USAGE),
        (KeyStoreError("missing"), cli.EXIT_ERROR),
        (RuntimeError("bug"), cli.EXIT_ERROR),
    ],
)
def test_error_mapping(exc: BaseException, code: int) -> None:
    assert cli.describe_error(exc)[0] == code


def test_whoami_reads_store_without_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, identity = make_store(tmp_path / "home")
    assert cli.main(["--home", str(tmp_path / "home"), "--json", "whoami"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["handle"] == "alice" and out["account_id"] == "acc_1"
    assert out["fingerprint"] == cli.crypto.fingerprint_v2(identity.sign_pk, identity.box_pk)


def test_wrong_passphrase_exit_3_before_any_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_store(tmp_path / "home")
    monkeypatch.setenv("CHAT_PASSPHRASE", "not the passphrase")
    assert cli.main(["--home", str(tmp_path / "home"), "cases"]) == cli.EXIT_AUTH
    assert "wrong passphrase" in capsys.readouterr().err


def test_no_terminal_and_no_passphrase_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_store(tmp_path / "home")
    monkeypatch.delenv("CHAT_PASSPHRASE", raising=False)

    def closed_stdin(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(cli.getpass, "getpass", closed_stdin)
    assert cli.main(["--home", str(tmp_path / "home"), "cases"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "CHAT_PASSPHRASE" in err and "EOFError" not in err


def test_unreachable_server_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_store(tmp_path / "home")  # stored server is ws://127.0.0.1:1/ws
    monkeypatch.setenv("CHAT_PASSPHRASE", "correct horse")
    code = cli.main(["--home", str(tmp_path / "home"), "--json", "cases"])
    assert code == cli.EXIT_CONNECT
    assert json.loads(capsys.readouterr().out)["error"] == "connect_failed"


def test_missing_account_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_PASSPHRASE", "x")
    assert cli.main(["--home", str(tmp_path / "none"), "cases"]) == cli.EXIT_ERROR
    assert "no account" in capsys.readouterr().err


def test_remote_error_mapping_covers_every_wire_code() -> None:
    from chat_client.errors import remote_error
    from protocol.frames import ErrorFrame

    for code in pe.ErrorCode:
        if code is pe.ErrorCode.INTERNAL:
            continue
        exc = remote_error(ErrorFrame(code=code.value, message="m"))
        assert exc.code is code and str(exc) == "m"
    generic = remote_error(ErrorFrame(code="brand_new_code", message=""))
    assert type(generic) is pe.RemoteError and str(generic) == "brand new code"
