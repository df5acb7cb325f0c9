"""Attack 2 of issue 10: a hub (here a hostile test double of it) lowers the Argon2id cost
in ``prelogin`` to capture a cheap-to-crack auth_key. The client must refuse before it
derives or sends anything: no ``login`` frame may reach the fake hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chat_client import ChatClient, KdfDowngrade, accounts
from chat_client import cli as client_cli
from chat_client.keystore import KeyStore
from chat_client.policy import MIN_MEMLIMIT, MIN_OPSLIMIT, WEAK_KDF_ENV
from protocol import crypto
from protocol import errors as pe
from tests.helpers.clients import make_store
from tests.helpers.fakehub import fake_hub

PASS = "correct horse"


async def test_hostile_hub_kdf_below_floor_refused_before_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)  # the real floor, as outside tests
    salt = crypto.new_salt()
    async with fake_hub(prelogin=lambda handle: (salt, 1, 8192)) as fake:
        with pytest.raises(KdfDowngrade, match="opslimit=1 memlimit=8192, below") as err:
            await ChatClient.login(fake.url, "alice", PASS, home=tmp_path / "home")
    assert fake.saw("prelogin") and not fake.saw("login")
    assert "nothing was sent" in str(err.value)
    assert not KeyStore.exists(tmp_path / "home")


async def test_hostile_hub_kdf_memlimit_alone_below_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)
    salt = crypto.new_salt()
    answer = (salt, MIN_OPSLIMIT + 2, MIN_MEMLIMIT // 2)
    async with fake_hub(prelogin=lambda handle: answer) as fake:
        with pytest.raises(KdfDowngrade):
            await ChatClient.login(fake.url, "alice", PASS, home=tmp_path / "home")
    assert not fake.saw("login")


@pytest.mark.parametrize("change", ["salt", "opslimit", "memlimit"])
async def test_hostile_hub_kdf_differs_from_remembered(tmp_path: Path, change: str) -> None:
    # The test profile is below the floor (CHAT_TEST_WEAK_KDF=1 in the suite); what is
    # checked here is the per-handle memory of the key store, not the floor.
    store, _ = make_store(tmp_path / "home", PASS)
    r = store.record
    offered = {
        "salt": (crypto.new_salt(), r.opslimit, r.memlimit),
        "opslimit": (r.salt, r.opslimit + 1, r.memlimit),
        "memlimit": (r.salt, r.opslimit, r.memlimit * 2),
    }[change]
    async with fake_hub(prelogin=lambda handle: offered) as fake:
        with pytest.raises(KdfDowngrade, match=r"different .*than this key store remembers"):
            await ChatClient.login(fake.url, "alice", PASS, home=tmp_path / "home")
    assert not fake.saw("login")
    assert KeyStore.load(tmp_path / "home").record.salt == r.salt  # nothing rewritten


async def test_remembered_kdf_answer_goes_on_to_login(tmp_path: Path) -> None:
    # Control: the same fake with the remembered answer does receive the login (so the
    # refusals above are the check, not a broken fake).
    store, _ = make_store(tmp_path / "home", PASS)
    r = store.record
    async with fake_hub(prelogin=lambda handle: (r.salt, r.opslimit, r.memlimit)) as fake:
        with pytest.raises(pe.InvalidFrame):
            await ChatClient.login(fake.url, "alice", PASS, home=tmp_path / "home")
    assert fake.saw("login")


async def test_hostile_hub_kdf_cli_exit_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)
    monkeypatch.setenv("CHAT_PASSPHRASE", PASS)
    salt = crypto.new_salt()
    async with fake_hub(prelogin=lambda handle: (salt, 1, 8192)) as fake:
        argv = ["--home", str(tmp_path / "h"), "--server", fake.url, "login", "--handle", "alice"]
        rc = await asyncio.to_thread(client_cli.main, argv)
    assert rc == client_cli.EXIT_SECURITY == 5
    err = capsys.readouterr().err
    assert "security:" in err and "floor" in err and "nothing was sent" in err
    assert not fake.saw("login")


async def test_hostile_hub_announced_registration_cost_below_floor_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registration takes the hub's announced cost only if it reaches the floor.
    monkeypatch.delenv(WEAK_KDF_ENV, raising=False)
    async with fake_hub(prelogin=lambda handle: (bytes(16), 1, 8192)) as fake:
        with pytest.raises(KdfDowngrade, match="the hub's challenge asks for Argon2id"):
            await accounts.register(fake.url, "alice", PASS, home=tmp_path / "home", invite=None)
    assert fake.saw("hello") and not fake.saw("register")
    assert not KeyStore.exists(tmp_path / "home")
