"""``scripts/bench --abuse-auth [--quick] [--hostile N]``: what strangers cost a login.

One hub child process on 127.0.0.1 with the production limits and the production
server-side hash (``--kdf interactive``: the hub's Argon2id of each auth_key is the one
it runs in production; the client-side derivation is done once, before measuring, since
it costs the user's device, not the hub). In the same run:

1. **alone**: 4 legitimate users log in again and again, one login at a time each (a
   fresh connection each time: ``prelogin`` then ``login``, which is one server-side
   Argon2id), each from its own address (127.0.2.x);
2. **one attacker address**: the same, while ``N`` hostile connections from 127.0.0.2
   hammer ``login`` (random handles and keys) and ``register`` without pause, each
   sending its next request as soon as the previous one is answered;
3. **attackers on many addresses**: the same N spread over 16 addresses (127.0.1.x),
   which only the global bounds (Argon2 slots, the unauthenticated-connection cap) meet.

It reports the legitimate login latency p50/p99 of each phase (and of its second half,
when the attackers' buckets have run dry) and what the hostile requests were answered
with. Bounded: each phase lasts ``--phase-s`` seconds (default 20), connections stay on
127.0.0.0/8, and the hub is killed at the end. Exit 1 if a legitimate login failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from protocol import codec, crypto
from protocol import frames as f
from protocol.limits import MAX_SERVER_FRAME_BYTES

from .servers import CHILDREN, free_port, kill_children, raise_nofile

__all__ = ["main", "run"]

PASSPHRASE = "bench legit passphrase"
#: The hub's production flags, but a KDF profile whose *server-side* hash is production's.
HUB_FLAGS = ("--kdf", "interactive", "--log-level", "WARNING")
MANY_ADDRESSES = [f"127.0.1.{i}" for i in range(1, 17)]
#: Legitimate users logging in at once, each from its own address.
LEGIT_USERS = 4


async def _connect(url: str, address: str) -> ClientConnection:
    return await connect(
        url,
        compression=None,
        max_size=MAX_SERVER_FRAME_BYTES,
        local_addr=(address, 0),
        open_timeout=10,
    )


async def _ask(ws: ClientConnection, frame: Any) -> f.ServerFrame:
    await ws.send(codec.encode(frame), text=True)
    while True:
        reply = codec.decode_server(await ws.recv(decode=False))
        if getattr(reply, "id", None) == frame.id:
            return reply


def _register_frame(handle: str, keys: crypto.LoginKeys, salt: bytes, ops: int, mem: int) -> Any:
    identity = crypto.Identity.generate()
    return f.Register(
        id=secrets.token_hex(4),
        handle=handle,
        salt=salt,
        opslimit=ops,
        memlimit=mem,
        auth_key=keys.auth_key,
        sign_pk=identity.sign_pk,
        box_pk=identity.box_pk,
        box_sig=crypto.sign_box_key(identity),
        wrapped_keys=crypto.wrap_identity(identity, keys.wrap_key),
    )


async def _legit_account(url: str) -> tuple[str, bytes]:
    """Register the legitimate user; return its handle and auth_key (derived once)."""
    ws = await _connect(url, "127.0.0.1")
    try:
        challenge = await _ask(ws, f.Hello(id="h"))
        assert isinstance(challenge, f.Challenge), challenge
        ops, mem = challenge.min_opslimit, challenge.min_memlimit
        salt = crypto.new_salt()
        keys = await asyncio.to_thread(crypto.derive_login_keys, PASSPHRASE, salt, ops, mem)
        handle = "legit" + secrets.token_hex(4)
        reply = await _ask(ws, _register_frame(handle, keys, salt, ops, mem))
        assert isinstance(reply, f.Registered), reply
        return handle, keys.auth_key
    finally:
        await ws.close()


async def _legit_logins(url: str, users: list[tuple[str, bytes]], seconds: float) -> dict[str, Any]:
    """Each legitimate user logs in again and again, one login at a time, from an
    address of its own (127.0.2.x)."""
    latencies: list[tuple[float, float]] = []  # (when it ended, how long it took)
    failures: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    half = deadline - seconds / 2
    await asyncio.gather(
        *(
            _logins_of(url, handle, key, f"127.0.2.{i + 1}", deadline, latencies, failures)
            for i, (handle, key) in enumerate(users)
        )
    )
    summary = _summary([d for _, d in latencies], failures)
    # The buckets fill during an attack: its second half shows the steady state.
    late = _summary([d for t, d in latencies if t >= half], Counter())
    summary["second_half"] = {k: late[k] for k in ("logins", "p50_ms", "p99_ms")}
    return summary


async def _logins_of(
    url: str,
    handle: str,
    auth_key: bytes,
    address: str,
    deadline: float,
    latencies: list[tuple[float, float]],
    failures: Counter[str],
) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            ws = await _connect(url, address)
            try:
                pre = await _ask(ws, f.Prelogin(id="p", handle=handle))
                res = await _ask(ws, f.Login(id="l", handle=handle, auth_key=auth_key))
            finally:
                await ws.close()
        except Exception as exc:  # a refused or dropped connection is a failed login
            failures[type(exc).__name__] += 1
            continue
        if isinstance(pre, f.PreloginResult) and isinstance(res, f.LoginResult):
            latencies.append((time.monotonic(), time.perf_counter() - started))
        else:
            failures[getattr(res, "code", type(res).__name__)] += 1


def _summary(latencies: list[float], failures: Counter[str]) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

    return {
        "logins": len(ordered),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1) if ordered else None,
        "failed": dict(failures),
    }


# -- the hostile process ---------------------------------------------------------------


async def _hammer(url: str, address: str, register: bool, stop: float, tally: Counter[str]) -> None:
    """One hostile connection: the next request as soon as the last is answered;
    reconnects when the hub closes it (auth timeout, connection cap)."""
    salt, keys = crypto.new_salt(), crypto.LoginKeys(os.urandom(32), os.urandom(32), os.urandom(32))
    while time.monotonic() < stop:
        try:
            ws = await _connect(url, address)
        except Exception:
            tally["connect_refused"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            challenge = await _ask(ws, f.Hello(id="h"))
            assert isinstance(challenge, f.Challenge)
            ops, mem = challenge.min_opslimit, challenge.min_memlimit
            while time.monotonic() < stop:
                if register:
                    frame = _register_frame("x" + secrets.token_hex(8), keys, salt, ops, mem)
                else:
                    frame = f.Login(
                        id="a", handle="x" + secrets.token_hex(6), auth_key=os.urandom(32)
                    )
                tally[_answer(await _ask(ws, frame))] += 1
        except Exception:
            tally["closed_by_hub"] += 1
        finally:
            await ws.close()


def _answer(reply: f.ServerFrame) -> str:
    """What a hostile request got: the result type, or the error code and which limit."""
    if not isinstance(reply, f.ErrorFrame):
        return type(reply).__name__
    if reply.code != "rate_limited":
        return reply.code
    if "failed logins" in reply.message:
        return "rate_limited (failed logins)"
    if "registrations" in reply.message:
        return "rate_limited (registrations)"
    return "rate_limited (session frames)"


async def _hostile(url: str, conns: int, addresses: list[str], seconds: float) -> None:
    tally: Counter[str] = Counter()
    stop = time.monotonic() + seconds
    await asyncio.gather(
        *(
            # logins and registrations from every address (i // 2: both kinds per address)
            _hammer(url, addresses[(i // 2) % len(addresses)], i % 2 == 1, stop, tally)
            for i in range(conns)
        )
    )
    print(json.dumps(dict(tally)), flush=True)


# -- the run ---------------------------------------------------------------------------


async def _phase(
    url: str, users: list[tuple[str, bytes]], seconds: float, hostile: list[str] | None
) -> dict[str, Any]:
    proc = None
    if hostile is not None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmark.abuse_auth", "--hostile-url", url,
            "--hostile-addresses", ",".join(hostile), "--hostile", str(_HOSTILE[0]),
            "--phase-s", str(seconds + 1.0),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # the attack is under way before measuring
    result = await _legit_logins(url, users, seconds)
    if proc is not None:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
        result["hostile_answers"] = json.loads(out.decode().strip().splitlines()[-1])
    return result


_HOSTILE = [40]


async def run(workdir: Path, hostile: int, phase_s: float) -> dict[str, Any]:
    _HOSTILE[0] = hostile
    port = free_port()
    log = workdir / "hub.log"
    cmd = [
        sys.executable, "-m", "chat_server.cli", "serve", "--port", str(port),
        "--db", str(workdir / "chat.db"), "--state-dir", str(workdir), *HUB_FLAGS,
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    CHILDREN.append(proc)
    url = f"ws://127.0.0.1:{port}/ws"
    for _ in range(300):
        try:
            (await _connect(url, "127.0.0.1")).transport.abort()
            break
        except OSError:
            await asyncio.sleep(0.05)
    users = [await _legit_account(url) for _ in range(LEGIT_USERS)]
    phases = {
        "alone": await _phase(url, users, phase_s, None),
        "one_attacker_address": await _phase(url, users, phase_s, ["127.0.0.2"]),
        "attackers_on_16_addresses": await _phase(url, users, phase_s, MANY_ADDRESSES),
    }
    proc.terminate()
    proc.wait(20)
    return {
        # Other work on the machine skews every figure (the cores are shared).
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
        "hostile_connections": hostile,
        "legitimate_users": LEGIT_USERS,
        "phase_s": phase_s,
        "phases": phases,
    }


def table(results: dict[str, Any]) -> str:
    """The Markdown table docs/PERFORMANCE.md shows."""
    rows = [
        "| phase | legitimate logins | p50 | p99 | second half: p50 | p99 | failed "
        "| hostile requests answered |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, p in results["phases"].items():
        answers = ", ".join(f"{k} {v}" for k, v in sorted(p.get("hostile_answers", {}).items()))
        late = p["second_half"]
        rows.append(
            f"| {name.replace('_', ' ')} | {p['logins']} | {p['p50_ms']} ms | {p['p99_ms']} ms "
            f"| {late['p50_ms']} ms | {late['p99_ms']} ms "
            f"| {p['failed'] or 'none'} | {answers or '-'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --abuse-auth")
    parser.add_argument("--abuse-auth", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1-second phases, 8 attackers")
    parser.add_argument("--hostile", type=int, help="hostile connections (default 40)")
    parser.add_argument("--phase-s", type=float, help="seconds per phase (default 20)")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--hostile-url", help=argparse.SUPPRESS)
    parser.add_argument("--hostile-addresses", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_nofile()
    if args.hostile_url:  # the hostile child process
        asyncio.run(
            _hostile(
                args.hostile_url, args.hostile, args.hostile_addresses.split(","), args.phase_s
            )
        )
        return 0
    hostile = args.hostile or (8 if args.quick else 40)
    phase_s = args.phase_s or (1.0 if args.quick else 20.0)
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="chat-bench-auth-") as tmp:
            results = asyncio.run(asyncio.wait_for(run(Path(tmp), hostile, phase_s), 600))
    finally:
        kill_children()
    print(json.dumps(results, indent=2))
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    failed = any(p["failed"] or not p["logins"] for p in results["phases"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
