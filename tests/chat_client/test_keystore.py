"""Key store: round trip, file modes, wrong passphrase, token box, cursors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from chat_client.cursors import Cursor
from chat_client.errors import KeyStoreError
from chat_client.keystore import KeyStore
from protocol.errors import CryptoError
from tests.helpers.clients import make_store


def test_round_trip_unlocks_same_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, identity = make_store(home)
    store = KeyStore.load(home)
    keys = store.derive("correct horse")
    unlocked = store.unlock(keys)
    assert unlocked.secret_bytes() == identity.secret_bytes()
    token = store.read_token(keys.wrap_key)
    assert token is not None and token.token == "tok-secret-123"
    assert not token.expired()


def test_wrong_passphrase_is_a_clear_crypto_error(tmp_path: Path) -> None:
    make_store(tmp_path / "home")
    store = KeyStore.load(tmp_path / "home")
    with pytest.raises(CryptoError, match="wrong passphrase"):
        store.unlock(store.derive("wrong horse"))


def test_token_unreadable_under_other_key_is_just_missing(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path / "home")
    assert store.read_token(bytes(32)) is None


def test_modes_and_no_secret_on_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, identity = make_store(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    path = home / "account.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert b"tok-secret-123" not in raw
    assert identity.secret_bytes().hex().encode() not in raw
    for part in (bytes(identity.signing_key), bytes(identity.box_key)):
        assert part.hex().encode() not in raw
    data = json.loads(raw)
    assert set(data) >= {"server", "handle", "account_id", "role", "salt", "wrapped_keys"}


def test_create_refuses_existing_account(tmp_path: Path) -> None:
    make_store(tmp_path / "home")
    with pytest.raises(KeyStoreError, match="already holds an account"):
        make_store(tmp_path / "home")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no account"):
        KeyStore.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "account.json").write_text("{not json")
    with pytest.raises(KeyStoreError, match="cannot read"):
        KeyStore.load(tmp_path / "bad")
    (tmp_path / "bad" / "account.json").write_text('{"format": 1}')
    with pytest.raises(KeyStoreError, match="corrupt"):
        KeyStore.load(tmp_path / "bad")


def test_cursors_persist(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path / "home")
    store.set_cursors({"case_a": Cursor(7, b"\x01" * 32), "case_b": Cursor(2, None)})
    store.save()
    again = KeyStore.load(tmp_path / "home").record.cursors
    assert again == {"case_a": Cursor(7, b"\x01" * 32), "case_b": Cursor(2, None)}
