"""The escrow gates of issue 11 against the real hub and its real SQLite file, played as
the hub's operator (who can write the database directly):

* a client request the hub forged (its own key, the client's evidence copied from the
  database) is refused by ``chat-escrow approve`` (exit 12, no approval file), while the
  client's real request shows the client's key fingerprint and the reason;
* a bundle without k approvals, or for the forged request, opens nothing and writes no
  file (exit 12);
* ``chat-client consent`` signs the policy it displayed, and a hub serving an older
  policy version than one the client has seen is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.request
from pathlib import Path

import msgspec
import pytest

from chat_client import ChatClient, escrow_cli, unseal
from chat_client import cli as client_cli
from chat_client.escrowpins import PINS_FILE, OrgPinChanged, PolicyRollback
from chat_client.keyfiles import load_key
from protocol import crypto
from protocol import errors as pe
from protocol import frames as f
from protocol.clock import now_ms
from protocol.escrow import (
    ClientEvidence,
    DisputeDocument,
    make_capsule,
    policy_fingerprint,
    seal_reasons,
    sign_dispute,
)
from tests.helpers.certs import certify_counselors
from tests.helpers.clients import take
from tests.helpers.dbwriter import live_hub_db
from tests.helpers.disputes import (
    ESCROW_PASS,
    capsule_depositors,
    ceremony,
    install_and_register,
    legal_order,
    server,
)
from tests.helpers.hubs import TEST_KDF, RunningHub, start_hub


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    monkeypatch.delenv("CHAT_ORG_FINGERPRINT", raising=False)


async def chatting(
    hub: RunningHub, tmp_path: Path, policy: Path, org_fp: str
) -> tuple[ChatClient, ChatClient, str]:
    """Policy installed, a consenting client and a counselor, one message each way,
    both capsules deposited: (client, counselor, case id)."""
    counselor, client = await install_and_register(hub, tmp_path, policy, org_fp)
    assert await client.consent()
    case = await client.open_case("anxiety", "en")
    await client.send(case.case_id, "my private words")
    await take(counselor, 1)
    await counselor.send(case.case_id, "the counselor's answer")
    await take(client, 2)
    both = {client.account_id, counselor.account_id}
    await capsule_depositors(hub, case.case_id, both)
    return client, counselor, case.case_id


def db_file(hub: RunningHub) -> str:
    return hub.config.db_url.split("///", 1)[1]


async def show(
    hub: RunningHub, request_id: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert await server(hub, "disputes", "show", request_id, "--json") == 0
    out.write_text(capsys.readouterr().out)


def approve(request: Path, key: Path, out: Path, org_fp: str) -> int:
    return escrow_cli.main(
        ["approve", str(request), "--key", str(key), "--out", str(out), "--org-fingerprint", org_fp]
    )


async def test_hostile_hub_forged_client_request_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    policy_file, org_fp = ceremony(keys, 3, 2)
    signed = msgspec.json.decode(policy_file.read_bytes(), type=f.SignedEscrowPolicy)
    fp = policy_fingerprint(signed.policy)
    async with start_hub(tmp_path / "hub") as hub:
        client, counselor, case_id = await chatting(hub, tmp_path, policy_file, org_fp)
        try:
            # The operator writes a "client" request the client never made: signed with
            # a key of its own, carrying the client's real consent and key commitment
            # signatures copied from the database.
            hub_key = crypto.Identity.from_secret_bytes(bytes([66]) * 64)
            now = now_ms()
            reasons = seal_reasons(signed.policy, "please open everything")
            async with live_hub_db(db_file(hub)) as conn:
                (consent_sig,) = conn.execute(
                    "SELECT sig FROM consents WHERE account_id = ?", (client.account_id,)
                ).fetchone()
                epoch, commitment, commitment_sig = conn.execute(
                    "SELECT epoch, commitment, commitment_sig FROM case_keys "
                    "WHERE case_id = ? AND creator_id = ?",
                    (case_id, client.account_id),
                ).fetchone()
                forged = DisputeDocument(
                    request_id="dsp_forged",
                    kind="client",
                    case_id=case_id,
                    timestamp=now,
                    policy_fingerprint=fp,
                    reason_ct=reasons,
                    requester_id=client.account_id,
                    requester_sign_pk=hub_key.sign_pk,
                    sig=sign_dispute(hub_key, case_id, "all", now, fp, reasons),
                    created_at=now,
                    evidence=ClientEvidence(
                        terms_version=1,
                        consent_sig=bytes(consent_sig),
                        epoch=epoch,
                        commitment=bytes(commitment),
                        commitment_sig=bytes(commitment_sig),
                    ),
                )
                conn.execute(
                    "INSERT INTO disputes (id, case_id, kind, state, requester_id, document, "
                    "created_at, updated_at) VALUES (?, ?, 'client', 'pending', ?, ?, ?, ?)",
                    (
                        "dsp_forged",
                        case_id,
                        client.account_id,
                        msgspec.json.encode(forged),
                        now,
                        now,
                    ),
                )
            request = tmp_path / "forged.json"
            await show(hub, "dsp_forged", request, capsys)
            for i in (1, 2):
                out = tmp_path / f"forged-approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 12
                err = capsys.readouterr().err
                assert "refusing to approve" in err and "consent" in err
                assert not out.exists()

            # The client's own request: approved, with the client's key fingerprint and
            # the reason shown to each officer.
            real = await client.file_dispute(case_id, "I was treated unfairly")
            request = tmp_path / "real.json"
            await show(hub, real.request_id, request, capsys)
            # The hub swaps the client's box key in what officers are shown (to show a
            # fingerprint of its choosing), or leaves it out: nothing is approved.
            shown = json.loads(request.read_text())
            other = crypto.Identity.from_secret_bytes(bytes([67]) * 64)
            for box_pk, box_sig in (
                (base64.b64encode(other.box_pk).decode(), shown["requester_box_sig"]),
                (None, None),
            ):
                tampered = tmp_path / "tampered.json"
                tampered.write_text(
                    json.dumps(shown | {"requester_box_pk": box_pk, "requester_box_sig": box_sig})
                )
                out = tmp_path / "tampered-approval.json"
                capsys.readouterr()
                assert approve(tampered, keys / "officer1.key", out, org_fp) == 12
                assert "client's fingerprint cannot be shown" in capsys.readouterr().err
                assert not out.exists()
            for i in (1, 2):
                out = tmp_path / f"approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 0
                said = capsys.readouterr().out
                assert client.fingerprint in said and "I was treated unfairly" in said
                assert (
                    await server(
                        hub, "disputes", "approve", real.request_id, "--approval", str(out)
                    )
                    == 0
                )
            bundle = tmp_path / "case.bundle"
            assert (
                await server(hub, "disputes", "export", real.request_id, "--out", str(bundle)) == 0
            )

            # The operator swaps the bundle's request for its forgery: nothing opens.
            data = json.loads(bundle.read_text())
            data["request"] = json.loads(msgspec.json.encode(forged))
            swapped = tmp_path / "swapped.bundle"
            swapped.write_text(json.dumps(data))
            key_args = ["--key", str(keys / "officer1.key"), "--key", str(keys / "officer2.key")]
            review = tmp_path / "review"
            argv = ["--out", str(review), "--org-fingerprint", org_fp, *key_args]
            assert unseal.main([str(swapped), *argv]) == 12
            assert not review.exists()
            # No approvals at all: exit 12, no file, no plaintext on the terminal.
            data["request"] = json.loads(bundle.read_text())["request"]
            data["approvals"] = []
            swapped.write_text(json.dumps(data))
            capsys.readouterr()
            assert unseal.main([str(swapped), *argv]) == 12
            assert not review.exists()
            assert "my private words" not in capsys.readouterr().out
            # The real bundle opens, into a private directory.
            assert unseal.main([str(bundle), *argv]) == 0
            assert review.stat().st_mode & 0o777 == 0o700
            page = (review / "transcript.json").read_text()
            assert "my private words" in page and "the counselor's answer" in page
        finally:
            await client.close()
            await counselor.close()


async def test_hostile_hub_rolls_the_policy_back(tmp_path: Path) -> None:
    """The organisation replaced policy 1 by policy 2; the operator deletes policy 2's
    row so the hub serves policy 1 again. A client that has seen 2 refuses 1, also
    after a restart (the highest version is kept in its home)."""
    keys = tmp_path / "keys"
    policy1, org_fp = ceremony(keys, 3, 2)
    policy2, _ = ceremony(keys, 3, 2, version=2)
    async with start_hub(tmp_path / "hub") as hub:
        install = ["admin", "escrow-policy", "install"]
        assert await server(hub, *install, str(policy1), "--org-fingerprint", org_fp) == 0
        client = await ChatClient.register(
            hub.url,
            "alice",
            "alice pass 7",
            home=tmp_path / "cl",
            org_fingerprint=org_fp,
            **TEST_KDF,
        )
        try:
            assert await client.consent()
            assert await server(hub, *install, str(policy2), "--org-fingerprint", org_fp) == 0
            shown = await client.terms()
            assert shown is not None and shown.signed.policy.version == 2
            assert await client.consent(shown)
            async with live_hub_db(db_file(hub)) as conn:
                conn.execute(
                    "DELETE FROM escrow_policies WHERE fingerprint = ?",
                    (shown.policy_fingerprint,),
                )
            with pytest.raises(PolicyRollback, match="already seen version 2"):
                await client.terms()
            with pytest.raises(PolicyRollback):
                await client.escrow_policy()
        finally:
            await client.close()
        pins = json.loads((tmp_path / "cl" / PINS_FILE).read_text())
        assert list(pins["policy_versions"].values()) == [2]
        assert (tmp_path / "cl" / PINS_FILE).stat().st_mode & 0o777 == 0o600
        again = await ChatClient.open(
            hub.url, tmp_path / "cl", "alice pass 7", org_fingerprint=org_fp
        )
        try:
            with pytest.raises(PolicyRollback):
                await again.terms()
        finally:
            await again.close()


async def test_consent_signs_the_terms_shown_and_pins_the_org_on_first_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    policy1, org_fp = ceremony(keys, 3, 2)
    policy2, _ = ceremony(keys, 3, 2, version=2)
    async with start_hub(tmp_path / "hub") as hub:
        install = ["admin", "escrow-policy", "install"]
        assert await server(hub, *install, str(policy1), "--org-fingerprint", org_fp) == 0
        client = await ChatClient.register(
            hub.url,
            "alice",
            "alice pass 7",
            home=tmp_path / "cl",
            org_fingerprint=org_fp,
            **TEST_KDF,
        )
        try:
            shown = await client.terms()
            assert shown is not None and not shown.tofu
            # The policy changes between reading and accepting: what was read is what
            # is signed, so the hub refuses it rather than record consent to policy 2.
            assert await server(hub, *install, str(policy2), "--org-fingerprint", org_fp) == 0
            with pytest.raises(pe.InvalidFrame, match="changed"):
                await client.consent(shown)
            async with live_hub_db(db_file(hub)) as conn:
                assert conn.execute("SELECT count(*) FROM consents").fetchone() == (0,)
        finally:
            await client.close()

        # A new home with no pin at all: `chat-client consent` shows the organisation
        # fingerprint and pins it (trust on first use); later commands need no pin.
        fresh = await ChatClient.register(
            hub.url, "bob", "bob pass 7", home=tmp_path / "bob", **TEST_KDF
        )
        await fresh.close()
        os.environ["CHAT_PASSPHRASE"] = "bob pass 7"
        try:
            base = ["--home", str(tmp_path / "bob")]
            capsys.readouterr()
            assert await asyncio.to_thread(client_cli.main, [*base, "consent", "--yes"]) == 0
            said = capsys.readouterr().out
            assert f"Organisation key fingerprint: {org_fp}" in said
            assert "trust on first use" in said and "ONE escrow officer" not in said
            pins = json.loads((tmp_path / "bob" / PINS_FILE).read_text())
            assert pins["org_fingerprint"] == org_fp
            argv = [*base, "--json", "open-case", "--topic", "anxiety", "--language", "en"]
            assert await asyncio.to_thread(client_cli.main, argv) == 0
        finally:
            del os.environ["CHAT_PASSPHRASE"]
        # The stored pin holds: another organisation's fingerprint given later is refused,
        # before the client connects (protocol v2 clients resolve the pin when they open,
        # since it also decides which counselor certificates they accept).
        other = crypto.fingerprint(bytes(32))
        with pytest.raises(OrgPinChanged):
            await ChatClient.open(hub.url, tmp_path / "bob", "bob pass 7", org_fingerprint=other)


async def test_server_commands_speak_json_and_the_install_pins_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every `disputes`, `consents` and `audit` command takes --json; the organisation
    confirmed at `escrow-policy install` becomes the web chat's pin without a restart."""
    keys = tmp_path / "keys"
    policy, org_fp = ceremony(keys, 3, 2)

    async def as_json(*argv: str) -> object:
        capsys.readouterr()
        assert await server(hub, *argv, "--json") == 0
        return json.loads(capsys.readouterr().out)

    async with start_hub(tmp_path / "hub") as hub:
        url = hub.http_url + "config.json"
        config = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))
        assert config["org_fingerprint"] is None
        client, counselor, case_id = await chatting(hub, tmp_path, policy, org_fp)
        try:
            config = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url).read()))
            assert config["org_fingerprint"] == org_fp
            real = await client.file_dispute(case_id, "I was treated unfairly")
            listed = await as_json("disputes", "list")
            assert isinstance(listed, dict)
            assert [(d["request_id"], d["state"]) for d in listed["disputes"]] == [
                (real.request_id, "pending")
            ]
            request = tmp_path / "real.json"
            await show(hub, real.request_id, request, capsys)
            for i in (1, 2):
                out = tmp_path / f"approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 0
                got = await as_json("disputes", "approve", real.request_id, "--approval", str(out))
                assert isinstance(got, dict) and got["approvals"] == i
            bundle = tmp_path / "case.bundle"
            got = await as_json("disputes", "export", real.request_id, "--out", str(bundle))
            assert isinstance(got, dict) and got["messages"] == 2 and len(got["blake2b"]) == 64
            order = legal_order(keys, policy, case_id, "Court 1/26", org_fp)
            got = await as_json("disputes", "open-legal", "--order-file", str(order))
            assert isinstance(got, dict) and got["kind"] == "legal"
            got = await as_json("consents", "export", "--out", str(tmp_path / "c.json"))
            assert got == {"out": str(tmp_path / "c.json"), "consents": 1}
            entries = await as_json("audit", "list")
            assert isinstance(entries, dict)
            assert [e["action"] for e in entries["entries"]][-1] == "dispute.legal"
            assert all(len(e["hash"]) == 64 for e in entries["entries"])
            verdict = await as_json("audit", "verify")
            assert verdict == {"intact": True, "entries": len(entries["entries"]), "problems": []}
        finally:
            await client.close()
            await counselor.close()


async def test_hostile_pre_policy_conversation_stays_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conversation from before any policy: its key is bound to "none" by its creator.
    After the install the next message starts a new epoch bound to the policy (only
    once the client has consented); nobody escrows the old key, the hub refuses a
    capsule for it, and one the operator writes into the database makes the bundle
    foreign: chat-unseal opens nothing. The honest bundle opens only the new epoch."""
    keys = tmp_path / "keys"
    policy_file, org_fp = ceremony(keys, 3, 2)
    signed = msgspec.json.decode(policy_file.read_bytes(), type=f.SignedEscrowPolicy)
    fp = policy_fingerprint(signed.policy)
    async with start_hub(tmp_path / "hub") as hub:
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
        # Before any policy there is no organisation key to pin, nor to certify the
        # counselor with (protocol v2 clients that pin one talk to certified counselors
        # only): the client starts without a pin.
        client = await ChatClient.register(
            hub.url, "alice", "alice pass 7", home=tmp_path / "cl", **TEST_KDF
        )
        try:
            case = await client.open_case("anxiety", "en")
            await client.send(case.case_id, "said before any policy")
            await take(counselor, 1)
            install = ["admin", "escrow-policy", "install", str(policy_file)]
            assert await server(hub, *install, "--org-fingerprint", org_fp) == 0
            # The organisation certifies its counselor; the client now pins it.
            org_key = load_key(keys / "org.key", ESCROW_PASS, "org").sign_key
            assert await certify_counselors(hub, org_key) == ["dr-who"]
            await client.close()
            client = await ChatClient.open(
                hub.url, tmp_path / "cl", "alice pass 7", org_fingerprint=org_fp
            )
            # No key can be made under the policy before the client consents.
            with pytest.raises(pe.ConsentRequired):
                await counselor.send(case.case_id, "reply before the client consented")
            assert await client.consent()
            await client.send(case.case_id, "said under the policy")
            await take(counselor, 1)
            await counselor.send(case.case_id, "answered under the policy")
            await take(client, 2)
            await capsule_depositors(
                hub, case.case_id, {client.account_id, counselor.account_id}, epoch=2
            )
            async with live_hub_db(db_file(hub)) as conn:
                bindings = conn.execute(
                    "SELECT epoch, escrow FROM case_keys WHERE case_id = ? ORDER BY epoch",
                    (case.case_id,),
                ).fetchall()
                escrowed = {
                    r[0]
                    for r in conn.execute(
                        "SELECT epoch FROM escrow_capsules WHERE case_id = ?", (case.case_id,)
                    )
                }
            assert bindings == [(1, "none"), (2, fp)] and escrowed == {2}

            # A device that tries to escrow the old key anyway is refused.
            old_key = client._keys.keyring.get(case.case_id, 1)
            assert old_key is not None
            backwards = make_capsule(signed.policy, case.case_id, 1, old_key)
            with pytest.raises(pe.InvalidFrame, match="not bound to the installed"):
                await client._session.request(
                    f.CaseCapsule, case_id=case.case_id, epoch=1, capsule=backwards
                )

            real = await client.file_dispute(case.case_id, "I was treated unfairly")
            request = tmp_path / "real.json"
            await show(hub, real.request_id, request, capsys)
            for i in (1, 2):
                out = tmp_path / f"approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 0
                argv = ["disputes", "approve", real.request_id, "--approval", str(out)]
                assert await server(hub, *argv) == 0
            key_args = ["--key", str(keys / "officer1.key"), "--key", str(keys / "officer2.key")]

            # The honest bundle: epoch 2 opens; epoch 1 was never escrowed (exit 10).
            bundle = tmp_path / "case.bundle"
            argv = ["disputes", "export", real.request_id, "--out", str(bundle)]
            assert await server(hub, *argv) == 0
            review = tmp_path / "review"
            opts = ["--out", str(review), "--org-fingerprint", org_fp, *key_args]
            assert unseal.main([str(bundle), *opts]) == 10
            data = json.loads((review / "transcript.json").read_text())
            bodies = [(m["epoch"], m["body"]) for m in data["messages"]]
            assert bodies == [
                (1, None),
                (2, "said under the policy"),
                (2, "answered under the policy"),
            ]
            assert "said before any policy" not in (review / "transcript.html").read_text()

            # The operator writes the old key's capsule into the database itself.
            async with live_hub_db(db_file(hub)) as conn:
                conn.execute(
                    "INSERT INTO escrow_capsules (case_id, epoch, depositor_id, "
                    "policy_fingerprint, capsule, created_at) VALUES (?, 1, ?, ?, ?, ?)",
                    (
                        case.case_id,
                        client.account_id,
                        fp,
                        msgspec.json.encode(backwards),
                        now_ms(),
                    ),
                )
            assert await server(hub, *argv) == 0
            hostile_review = tmp_path / "hostile-review"
            opts = ["--out", str(hostile_review), "--org-fingerprint", org_fp, *key_args]
            capsys.readouterr()
            assert unseal.main([str(bundle), *opts]) == 12
            assert "epoch 1: its key is bound to escrow policy 'none'" in capsys.readouterr().out
            assert not hostile_review.exists()
        finally:
            await client.close()
            await counselor.close()


async def test_hostile_hub_trims_the_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator deletes the newest audit rows (the approvals and the export): the
    shorter chain is still whole, so `audit verify` alone says intact, but against the
    head the bundle (or an approval) carries, kept outside the database, it is caught."""
    keys = tmp_path / "keys"
    policy, org_fp = ceremony(keys, 3, 2)
    async with start_hub(tmp_path / "hub") as hub:
        client, counselor, case_id = await chatting(hub, tmp_path, policy, org_fp)
        try:
            real = await client.file_dispute(case_id, "I was treated unfairly")
            request = tmp_path / "real.json"
            await show(hub, real.request_id, request, capsys)
            shown = json.loads(request.read_text())["audit_head"]
            approvals = []
            for i in (1, 2):
                out = tmp_path / f"approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 0
                assert json.loads(out.read_text())["audit_head"] == shown
                argv = ["disputes", "approve", real.request_id, "--approval", str(out)]
                assert await server(hub, *argv) == 0
                approvals.append(out)
            bundle = tmp_path / "case.bundle"
            argv = ["disputes", "export", real.request_id, "--out", str(bundle)]
            assert await server(hub, *argv) == 0
            anchors = ["--anchor", str(bundle), "--anchor", str(request)]
            anchors += [a for p in approvals for a in ("--anchor", str(p))]
            assert await server(hub, "audit", "verify", *anchors) == 0
            async with live_hub_db(db_file(hub)) as conn:
                actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
                assert actions[-3:] == ["dispute.approve", "dispute.approve", "dispute.export"]
                assert actions.count("escrow.capsule") == 2
                conn.execute(
                    "DELETE FROM audit_log WHERE seq > (SELECT max(seq) - 3 FROM audit_log)"
                )
            capsys.readouterr()
            assert await server(hub, "audit", "verify") == 0  # a whole, shorter chain
            assert (
                await server(hub, "audit", "verify", "--anchor", str(bundle)) == 10
            )  # a tampered or missing record (README exit codes)
            said = capsys.readouterr().out
            assert "rows were removed" in said and "BROKEN" in said
            # The request shown to officers was before the approvals: still in the log.
            assert await server(hub, "audit", "verify", "--anchor", str(request)) == 0
        finally:
            await client.close()
            await counselor.close()


async def test_legal_order_opens_the_case_and_names_who_signed_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signed legal order: officers see the order and its signer, approve, and the
    transcript names both; the client was told of it."""
    keys = tmp_path / "keys"
    policy, org_fp = ceremony(keys, 3, 2)
    async with start_hub(tmp_path / "hub") as hub:
        client, counselor, case_id = await chatting(hub, tmp_path, policy, org_fp)
        try:
            order = legal_order(keys, policy, case_id, "Court 2026/4", org_fp)
            got = await _json(hub, capsys, "disputes", "open-legal", "--order-file", str(order))
            request_id = got["request_id"]
            [seen] = await client.disputes()
            assert (seen.kind, seen.legal_order) == ("legal", "Court 2026/4")
            request = tmp_path / "legal.json"
            await show(hub, request_id, request, capsys)
            for i in (1, 2):
                out = tmp_path / f"approval{i}.json"
                assert approve(request, keys / f"officer{i}.key", out, org_fp) == 0
                said = capsys.readouterr().out
                assert "legal order: Court 2026/4" in said and "court-liaison" in said
                argv = ["disputes", "approve", request_id, "--approval", str(out)]
                assert await server(hub, *argv) == 0
            bundle = tmp_path / "case.bundle"
            assert await server(hub, "disputes", "export", request_id, "--out", str(bundle)) == 0
            review = tmp_path / "review"
            argv = [str(bundle), "--out", str(review), "--org-fingerprint", org_fp]
            argv += ["--key", str(keys / "officer2.key"), "--key", str(keys / "officer3.key")]
            assert unseal.main(argv) == 0
            page = (review / "transcript.html").read_text()
            assert "Court 2026/4" in page and "court-liaison" in page
            assert "my private words" in page
        finally:
            await client.close()
            await counselor.close()


async def _json(
    hub: RunningHub, capsys: pytest.CaptureFixture[str], *argv: str
) -> dict[str, object]:
    capsys.readouterr()
    assert await server(hub, *argv, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, dict)
    return data
