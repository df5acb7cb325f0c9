"""Disputes end to end through the real hub: escrow ceremony, consent, chat with capsule
deposits, a client's dispute request, offline officer approvals, export, and chat-unseal
reproducing exactly what was said, for 1-of-1 and 2-of-3 policies."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from chat_client import ChatClient, DisputeEvent, escrow_cli, unseal
from protocol import crypto
from protocol import errors as pe
from tests.helpers.clients import take, take_event
from tests.helpers.disputes import (
    ESCROW_PASS,
    capsule_depositors,
    ceremony,
    install_and_register,
    legal_order,
    server,
)
from tests.helpers.hubs import TEST_KDF, start_hub


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    monkeypatch.delenv("CHAT_ORG_FINGERPRINT", raising=False)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (3, 2)])
async def test_dispute_round_trip(
    tmp_path: Path, n: int, k: int, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    policy, org_fp = ceremony(keys, n, k)
    async with start_hub(tmp_path / "hub") as hub:
        assert (
            await server(
                hub,
                "admin",
                "escrow-policy",
                "install",
                str(policy),
                "--org-fingerprint",
                crypto.fingerprint(bytes(32)),
            )
            == 1
        )
        counselor, client = await install_and_register(hub, tmp_path, policy, org_fp)
        try:
            with pytest.raises(pe.ConsentRequired):
                await client.open_case("anxiety", "en")
            terms = await client.terms()
            assert terms is not None and terms[2] in terms[1] and f"any {k} of its {n}" in terms[1]
            assert await client.consent()
            case = await client.open_case("anxiety", "en")
            said = [
                ("client", "Hello, I can't sleep <script>alert(1)</script>"),
                ("counselor", "I'm sorry to hear that. Since when?"),
                ("client", "About a month. Ünïcode & emoji 🙂"),
            ]
            for role, text in said:
                await (client if role == "client" else counselor).send(case.case_id, text)
            # Both sides see every message (their own ones from the ack), verified.
            for side in (client, counselor):
                got = await take(side, len(said))
                assert [(m.body, m.verified) for m in got] == [(t, True) for _, t in said]
            # The counselor deposits its own capsule after verifying the key.
            both = {client.account_id, counselor.account_id}
            assert await capsule_depositors(hub, case.case_id, both) == both

            request = await client.file_dispute(case.case_id, "I was treated unfairly")
            assert request.state == "pending"
            assert [d.request_id for d in await client.disputes()] == [request.request_id]

            # The server cannot export without the approvals.
            bundle = tmp_path / "bundle.json"
            assert (
                await server(hub, "disputes", "export", request.request_id, "--out", str(bundle))
                == 1
            )
            assert not bundle.exists()

            capsys.readouterr()
            assert await server(hub, "disputes", "show", request.request_id, "--json") == 0
            req_file = tmp_path / "request.json"
            req_file.write_text(capsys.readouterr().out)
            for i in range(1, k + 1):
                approval = tmp_path / f"approval{i}.json"
                assert (
                    escrow_cli.main(
                        [
                            "approve",
                            str(req_file),
                            "--key",
                            str(keys / f"officer{i}.key"),
                            "--out",
                            str(approval),
                            "--org-fingerprint",
                            org_fp,
                        ]
                    )
                    == 0
                )
                assert "I was treated unfairly" in capsys.readouterr().out
                assert (
                    await server(
                        hub, "disputes", "approve", request.request_id, "--approval", str(approval)
                    )
                    == 0
                )
            # The same officer cannot count twice.
            assert (
                await server(
                    hub,
                    "disputes",
                    "approve",
                    request.request_id,
                    "--approval",
                    str(tmp_path / "approval1.json"),
                )
                == 1
            )
            event = await take_event(client, DisputeEvent, timeout=10)
            assert isinstance(event, DisputeEvent) and event.state == "approved"

            assert (
                await server(hub, "disputes", "export", request.request_id, "--out", str(bundle))
                == 0
            )
            out = tmp_path / "unsealed"
            key_args = [
                a for i in range(1, k + 1) for a in ("--key", str(keys / f"officer{i}.key"))
            ]
            assert (
                unseal.main(
                    [str(bundle), *key_args, "--out", str(out), "--org-fingerprint", org_fp]
                )
                == 0
            )
            transcript = json.loads((out / "transcript.json").read_text())
            assert [(m["sender_role"], m["body"]) for m in transcript["messages"]] == said
            assert all(m["verified"] for m in transcript["messages"])
            assert "&lt;script&gt;" in (out / "transcript.html").read_text()
            if k > 1:
                assert (
                    unseal.main(
                        [
                            str(bundle),
                            "--key",
                            str(keys / "officer3.key"),
                            "--out",
                            str(tmp_path / "one-key"),
                            "--org-fingerprint",
                            org_fp,
                        ]
                    )
                    == 11
                )
            # Nothing in the bundle or the database is readable without officer keys.
            assert b"can't sleep" not in bundle.read_bytes()

            # Audit: request, approvals and export are chained; tampering is detected.
            assert await server(hub, "audit", "verify") == 0
            assert await server(hub, "consents", "export", "--out", str(tmp_path / "c.json")) == 0
            consents = json.loads((tmp_path / "c.json").read_text())["consents"]
            assert [c["account_id"] for c in consents] == [client.account_id]
        finally:
            await client.close()
            await counselor.close()
        db_path = hub.config.db_url.split("///", 1)[1]
    actions = [
        r[0] for r in sqlite3.connect(db_path).execute("SELECT action FROM audit_log ORDER BY seq")
    ]
    assert actions == [
        "policy.install",
        "consent",
        "escrow.capsule",  # the client's, with its key
        "escrow.capsule",  # the counselor's own
        "dispute.request",
        *["dispute.approve"] * k,
        "dispute.export",
    ]
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE audit_log SET subject = 'someone-else' WHERE seq = 3")
    async with start_hub(tmp_path / "hub") as hub:
        assert await server(hub, "audit", "verify") == 10  # a tampered record (exit-code table)


async def test_legal_order_and_new_policy_needs_new_consent(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    policy1, org_fp = ceremony(keys, 2, 1)
    async with start_hub(tmp_path / "hub") as hub:
        counselor, client = await install_and_register(hub, tmp_path, policy1, org_fp)
        unpinned = await ChatClient.register(
            hub.url, "bob", "bob pass 7 x", home=tmp_path / "bob", **TEST_KDF
        )
        try:
            await client.consent()
            case = await client.open_case("anxiety", "en")
            await client.send(case.case_id, "first case")
            # A client without a pinned organisation key refuses the hub's policy.
            with pytest.raises(pe.CryptoError):
                await unpinned.consent()

            policy2, _ = ceremony(keys, 2, 2, version=2)
            assert (
                await server(
                    hub,
                    "admin",
                    "escrow-policy",
                    "install",
                    str(policy2),
                    "--org-fingerprint",
                    org_fp,
                )
                == 0
            )
            with pytest.raises(pe.ConsentRequired):
                await client.open_case("anxiety", "en")
            await client.consent()
            case2 = await client.open_case("anxiety", "en")
            await client.send(case2.case_id, "second case under policy 2")

            # Legal order path on the first case: signed offline by the policy's legal
            # signer; the client sees it on their case at once, with its reference.
            before = {d.request_id for d in await client.disputes()}
            order = legal_order(keys, policy2, case.case_id, "Court 2025/17", org_fp)
            assert await server(hub, "disputes", "open-legal", "--order-file", str(order)) == 0
            [legal] = [d for d in await client.disputes() if d.request_id not in before]
            assert (legal.case_id, legal.kind, legal.legal_order) == (
                case.case_id,
                "legal",
                "Court 2025/17",
            )
            event = await take_event(client, DisputeEvent, timeout=10)
            assert isinstance(event, DisputeEvent)
            assert (event.request_id, event.kind, event.legal_order) == (
                legal.request_id,
                "legal",
                "Court 2025/17",
            )
            # The hub's operator cannot record an order of its own: refused.
            forged = json.loads(order.read_text())
            forged["order_ref"] = "Operator 1/1"
            bad = tmp_path / "forged-order.json"
            bad.write_text(json.dumps(forged))
            assert await server(hub, "disputes", "open-legal", "--order-file", str(bad)) == 1
        finally:
            await client.close()
            await counselor.close()
            await unpinned.close()

        # The terminal client: file a dispute and list it (its own process-style loop).
        from chat_client import cli as client_cli

        os.environ["CHAT_PASSPHRASE"] = "alice pass 7"
        try:
            base = ["--home", str(tmp_path / "cl"), "--org-fingerprint", org_fp, "--json"]
            run = client_cli.main
            assert await asyncio.to_thread(run, [*base, "consent", "--yes"]) == 0
            assert (
                await asyncio.to_thread(
                    run, [*base, "dispute", case2.case_id, "--reason", "please review"]
                )
                == 0
            )
            assert await asyncio.to_thread(run, [*base, "disputes"]) == 0
        finally:
            del os.environ["CHAT_PASSPHRASE"]
