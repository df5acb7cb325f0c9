"""chat_client/policy.py: the KDF floor, the remembered parameters, the passphrase rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_client import ChatClient, KdfDowngrade, KdfTooWeak, WeakPassphrase
from chat_client import cli as client_cli
from chat_client.policy import (
    MIN_MEMLIMIT,
    MIN_OPSLIMIT,
    WEAK_KDF_ENV,
    check_kdf_floor,
    check_passphrase,
    check_remembered,
    kdf_floor,
)


def test_floor_is_libsodium_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    import nacl.pwhash

    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)
    assert kdf_floor() == (MIN_OPSLIMIT, MIN_MEMLIMIT)
    assert MIN_OPSLIMIT == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert MIN_MEMLIMIT == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    check_kdf_floor(MIN_OPSLIMIT, MIN_MEMLIMIT, source="x")
    with pytest.raises(KdfDowngrade, match="x asks for Argon2id opslimit=1"):
        check_kdf_floor(1, MIN_MEMLIMIT, source="x")
    with pytest.raises(KdfDowngrade):
        check_kdf_floor(MIN_OPSLIMIT, MIN_MEMLIMIT - 1, source="x")


@pytest.mark.parametrize("value", ["0", "true", "yes", ""])
def test_only_exactly_1_lowers_the_floor(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(WEAK_KDF_ENV, value)
    assert kdf_floor() == (MIN_OPSLIMIT, MIN_MEMLIMIT)
    monkeypatch.setenv(WEAK_KDF_ENV, "1")
    assert kdf_floor() == (1, 8192)


def test_remembered_must_match_exactly() -> None:
    salt = bytes(16)
    check_remembered("al", (salt, 2, 1 << 26), (salt, 2, 1 << 26))
    with pytest.raises(KdfDowngrade, match="different salt"):
        check_remembered("al", (salt, 2, 1 << 26), (b"\x01" * 16, 2, 1 << 26))
    with pytest.raises(KdfDowngrade, match=r"opslimit 3->2, memlimit 67108864->67108864"):
        check_remembered("al", (salt, 3, 1 << 26), (salt, 2, 1 << 26))


@pytest.mark.parametrize(
    ("passphrase", "why"),
    [
        ("", "too short"),
        ("Tr0ub4dor", "too short"),  # 9 characters
        ("password12", "too easy to guess"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("qwertyuiop", "too easy to guess"),
    ],
)
def test_weak_passphrases_refused(passphrase: str, why: str) -> None:
    with pytest.raises(WeakPassphrase, match=why):
        check_passphrase(passphrase)


@pytest.mark.parametrize("passphrase", ["correct horse", "client passphrase", "x" * 5 + "Q7#k!zR2"])
def test_good_passphrases_pass(passphrase: str) -> None:
    check_passphrase(passphrase)


def test_the_handle_counts_as_a_known_word() -> None:
    check_passphrase("zebracrossing91")
    with pytest.raises(WeakPassphrase, match="too easy"):
        check_passphrase("zebracrossing91", ["zebracrossing91"])


def test_very_long_passphrase_is_checked_quickly() -> None:
    check_passphrase("long and unusual words " * 2000)


async def test_register_refuses_weak_passphrase_before_connecting(tmp_path: Path) -> None:
    # Port 1 is closed: reaching the network would raise ConnectFailed instead.
    with pytest.raises(WeakPassphrase, match="too short"):
        await ChatClient.register(
            "ws://127.0.0.1:1/ws", "al", "short", home=tmp_path / "h", opslimit=1, memlimit=8192
        )


async def test_register_refuses_limits_below_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)
    with pytest.raises(KdfTooWeak, match="below this client's floor"):
        await ChatClient.register(
            "ws://127.0.0.1:1/ws", "al", "correct horse", home=tmp_path / "h",
            opslimit=1, memlimit=8192,
        )  # fmt: skip


def test_cli_weak_passphrase_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_PASSPHRASE", "password12")
    argv = ["--home", str(tmp_path / "h"), "--server", "ws://127.0.0.1:1/ws", "register",
            "--handle", "alice", "--kdf-ops", "1", "--kdf-mem", "8192"]  # fmt: skip
    assert client_cli.main(argv) == client_cli.EXIT_USAGE
    assert "passphrase too easy to guess" in capsys.readouterr().err
