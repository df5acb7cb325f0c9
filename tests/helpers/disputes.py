"""The escrow ceremony and the server's escrow and dispute commands, run through the
real command-line entry points (``chat-escrow``, ``chat-server``), for the dispute
tests of the Python client and of the web page.

    policy, org_fp = ceremony(tmp_path / "keys", n=3, k=2)
    assert await server(hub, "admin", "escrow-policy", "install", str(policy),
                        "--org-fingerprint", org_fp) == 0
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from chat_client import ChatClient, escrow_cli
from chat_client.keyfiles import load_key
from chat_server import cli as server_cli
from chat_server import disputes_cli
from tests.helpers.certs import certify_counselors
from tests.helpers.hubs import TEST_KDF, RunningHub
from tests.helpers.waiting import wait_until

__all__ = [
    "ESCROW_PASS",
    "KDF",
    "capsule_depositors",
    "ceremony",
    "install_and_register",
    "legal_order",
    "server",
]

#: The passphrase of every escrow key file the ceremony writes (CHAT_ESCROW_PASSPHRASE).
ESCROW_PASS = "escrow passphrase"
#: chat-escrow's Argon2id cost at the protocol minimum: for tests only.
KDF = ["--kdf-ops", "1", "--kdf-mem", "8192"]


def ceremony(tmp_path: Path, n: int, k: int, version: int = 1) -> tuple[Path, str]:
    """Org, officer and one legal-order key (once), then a signed k-of-n policy naming
    the legal signer; (policy.json, org fp).

    Needs ``CHAT_ESCROW_PASSPHRASE`` set to :data:`ESCROW_PASS`."""
    org = tmp_path / "org.key"
    if not org.exists():
        assert (
            escrow_cli.main(["keygen", "--kind", "org", "--name", "org", "--out", str(org), *KDF])
            == 0
        )
        legal = ["--name", "court-liaison", "--out", str(tmp_path / "legal.key"), *KDF]
        assert escrow_cli.main(["keygen", "--kind", "legal", *legal]) == 0
        for i in range(1, n + 1):
            assert (
                escrow_cli.main(
                    [
                        "keygen",
                        "--kind",
                        "officer",
                        "--name",
                        f"officer{i}",
                        "--out",
                        str(tmp_path / f"officer{i}.key"),
                        *KDF,
                    ]
                )
                == 0
            )
    policy = tmp_path / f"policy{version}.json"
    officers = [
        a for i in range(1, n + 1) for a in ("--officer", str(tmp_path / f"officer{i}.pub"))
    ]
    assert (
        escrow_cli.main(
            [
                "policy",
                "--org-key",
                str(org),
                *officers,
                "--legal-signer",
                str(tmp_path / "legal.pub"),
                "--threshold",
                str(k),
                "--version",
                str(version),
                "--out",
                str(policy),
                *(["--allow-single-officer"] if k < 2 else []),
            ]
        )
        == 0
    )
    fp = json.loads((tmp_path / "org.pub").read_text())["fingerprint"]
    return policy, fp


def legal_order(keys: Path, policy: Path, case_id: str, ref: str, org_fp: str) -> Path:
    """A legal order for ``case_id`` signed with the ceremony's legal-order key."""
    out = keys / f"order-{case_id}.json"
    argv = ["--key", str(keys / "legal.key"), "--policy", str(policy), "--case", case_id]
    argv += ["--order", ref, "--out", str(out), "--org-fingerprint", org_fp]
    assert escrow_cli.main(["legal-order", *argv]) == 0
    return out


async def server(hub: RunningHub, *argv: str) -> int:
    """chat-server escrow commands, against the hub's database, in a worker thread
    (they run their own event loop, as the real CLI does)."""
    common = ["--db", hub.config.db_url, "--state-dir", str(hub.config.state_dir)]
    args = server_cli.build_parser().parse_args([*argv, *common])
    config = server_cli._config(args)
    return await asyncio.to_thread(disputes_cli.run, args, config)


async def capsule_depositors(
    hub: RunningHub, case_id: str, want: set[str], *, epoch: int = 1, timeout: float = 10.0
) -> set[str]:
    """Who deposited an escrow capsule of the case's ``epoch`` key, once every account in
    ``want`` has (clients deposit in the background after they verify a key)."""
    db = hub.server.db
    assert db is not None
    got: set[str] = set()

    async def complete() -> bool:
        nonlocal got
        got = {c.depositor_id for c in await db.escrow.capsules_for(case_id) if c.epoch == epoch}
        return got >= want

    what = f"capsules of {sorted(want)} for {case_id} epoch {epoch}"
    try:
        await wait_until(complete, what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; deposited by {sorted(got)}") from None
    return got


async def install_and_register(
    hub: RunningHub, tmp_path: Path, policy: Path, org_fp: str
) -> tuple[ChatClient, ChatClient]:
    """Install ``policy`` on the hub, then register a counselor and a client pinning it."""
    assert (
        await server(
            hub, "admin", "escrow-policy", "install", str(policy), "--org-fingerprint", org_fp
        )
        == 0
    )
    code = await hub.invite_counselor("dr-who", ("en",), ("anxiety",))
    counselor = await ChatClient.register(
        hub.url,
        "dr-who",
        "dr who pass 7",
        home=tmp_path / "co",
        invite=code,
        org_fingerprint=org_fp,
        **TEST_KDF,
    )
    # The organisation certifies the counselor (clients pinning it require that).
    org_key = load_key(policy.parent / "org.key", ESCROW_PASS, "org").sign_key
    assert await certify_counselors(hub, org_key) == ["dr-who"]
    client = await ChatClient.register(
        hub.url, "alice", "alice pass 7", home=tmp_path / "cl", org_fingerprint=org_fp, **TEST_KDF
    )
    return counselor, client
