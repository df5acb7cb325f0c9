"""The ``chat-client`` CLI as a subprocess against the real hub (in this process)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KDF = ["--kdf-ops", "1", "--kdf-mem", "8192"]


async def cli(
    home: Path,
    *args: str,
    passphrase: str = "pw-secret cli 7",
    stdin: bytes | None = None,
    url: str | None = None,
    timeout: float = 30,
) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHAT_PASSPHRASE": passphrase}
    env.pop("CHAT_SERVER", None)
    argv = [sys.executable, "-m", "chat_client", "--home", str(home)]
    if url:
        argv += ["--server", url]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


async def test_cli_end_to_end(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c_home, k_home = tmp_path / "client", tmp_path / "counselor"
    code = await hub.invite_counselor("Dr Cli", ("en",), ("anxiety",))
    rc, out, err = await cli(
        k_home, "--json", "register", "--handle", "dr-cli", "--invite", code, *KDF, url=hub.url
    )
    assert rc == 0, err
    counselor = one_json(out)
    assert counselor["role"] == "counselor" and len(counselor["fingerprint"].split()) == 8
    rc, out, err = await cli(c_home, "register", "--handle", "fran", *KDF, url=hub.url)
    assert rc == 0, err
    assert "role     client" in out and "identity" in out

    # The counselor watches (and so is online) while the client opens a case and writes.
    watch = asyncio.create_task(cli(k_home, "--json", "watch", "--count", "2", "--timeout", "25"))
    case_id = None
    for _ in range(100):
        if case_id is None:
            rc, out, err = await cli(
                c_home, "--json", "open-case", "--topic", "anxiety", "--language", "en"
            )
            assert rc == 0, err
            case_id = one_json(out)["case_id"]
        rc, out, err = await cli(c_home, "--json", "cases")
        assert rc == 0, err
        [case] = one_json(out)["cases"]
        if case["state"] == "assigned":
            break
        await asyncio.sleep(0.1)
    assert case_id is not None and case["state"] == "assigned"

    rc, out, err = await cli(c_home, "--json", "send", case_id, "hello from the terminal")
    assert rc == 0, err
    assert one_json(out)["seq"] == 1
    rc, out, err = await cli(c_home, "chat", case_id, stdin=b"second line\n/quit\n")
    assert rc == 0, err
    assert f"* chatting in {case_id} (tag {case_id[-6:]}) with dr-cli: topic anxiety" in out

    rc, out, err = await watch
    assert rc == 0, err
    everything = [json.loads(line) for line in out.strip().splitlines()]
    [assigned] = [e for e in everything if e.get("event") == "case.assigned"]
    assert assigned["case"]["case_id"] == case_id and assigned["case"]["topic"] == "anxiety"
    lines = [e for e in everything if "event" not in e]
    assert [(m["seq"], m["body"], m["verified"]) for m in lines] == [
        (1, "hello from the terminal", True),
        (2, "second line", True),
    ]
    assert lines[0]["sender"] == "fran"

    rc, out, err = await cli(k_home, "history", case_id)
    assert rc == 0, err
    assert "fran ✓: hello from the terminal" in out and "UNVERIFIED" not in out
    rc, out, err = await cli(c_home, "--json", "history", case_id)
    assert [m["verified"] for m in one_json(out)["messages"]] == [True, True]

    rc, out, err = await cli(c_home, "--json", "receipt", case_id, "--up-to", "2")
    assert rc == 0, err
    rc, out, err = await cli(k_home, "close-case", case_id)
    assert rc == 0, err
    rc, out, err = await cli(c_home, "--json", "send", case_id, "after close")
    assert rc == 1
    assert one_json(out)["error"] == "forbidden" and "closed" in err


async def test_cli_error_exit_codes(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "gil"
    rc, _, err = await cli(home, "register", "--handle", "gil", *KDF, url=hub.url)
    assert rc == 0, err
    rc, _, err = await cli(home, "cases", passphrase="wrong")
    assert rc == 3 and "wrong passphrase" in err
    rc, _, err = await cli(
        tmp_path / "other", "login", "--handle", "gil", passphrase="wrong", url=hub.url
    )
    assert rc == 3 and "authentication failed" in err
    rc, out, err = await cli(tmp_path / "other", "--json", "login", "--handle", "gil", url=hub.url)
    assert rc == 0, err
    assert one_json(out)["handle"] == "gil"
    rc, _, err = await cli(home, "send", "case_doesnotexist", "hi")
    assert rc == 1 and err.startswith("chat-client: ")
    rc, _, err = await cli(home, "register", "--handle", "gil2", *KDF, url=hub.url)
    assert rc == 1 and "already holds an account" in err
    rc, _, _ = await cli(home, "watch", "--timeout", "0.5")
    assert rc == 0
    rc, _, err = await cli(home, "watch", "--count", "1", "--timeout", "0.5")
    assert rc == 1 and "timeout" in err


@pytest.mark.parametrize("command", ["cases", "send case_x hi"])
async def test_cli_connection_failure_exit_4(tmp_path: Path, hub, command: str) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "h"
    rc, _, err = await cli(home, "register", "--handle", "hank", *KDF, url=hub.url)
    assert rc == 0, err
    rc, _, err = await cli(home, *command.split(), url="ws://127.0.0.1:9/ws")
    assert rc == 4 and "cannot connect" in err


async def test_cli_logout_all_ends_the_other_devices_session(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from chat_client import ChatClient, SessionEnded
    from protocol.errors import CloseCode

    home = tmp_path / "hal"
    rc, _, err = await cli(home, "register", "--handle", "hal", *KDF, url=hub.url)
    assert rc == 0, err
    other_device = await ChatClient.login(hub.url, "hal", "pw-secret cli 7", home=tmp_path / "hal2")
    try:
        rc, out, err = await cli(home, "--json", "logout", "--all")
        assert rc == 0, err
        assert one_json(out) == {"ok": True, "all": True}
        with pytest.raises(SessionEnded) as ended:
            async with asyncio.timeout(10):
                async for _ in other_device.events():
                    pass
        assert ended.value.code == CloseCode.SIGNED_OUT
    finally:
        await other_device.close()
