"""Sealed escrow from the counselor web chat, in Chromium against the real hub.

With a 1-of-1 policy installed, the page writes first in one case (so it creates the
epoch key and must attach its capsule to ``case.key``) and answers in another whose key
the Python client made (so it must deposit its own capsule with ``case.capsule``). Both
cases are then disputed, approved offline, exported and unsealed with ``chat-unseal``:
the bundle verifies only if every capsule opens to the committed key and every message
signature checks, so this proves the page's capsules and signatures byte for byte.

A second, lighter test runs the page's capsule and policy code directly against
protocol/escrow.py (2-of-3, every officer pair opens the page's capsule; wrong pins,
no pin, an altered signature and an expired policy are refused).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chat_client import ChatClient, escrow_cli, unseal
from chat_server import cli as server_cli
from protocol import crypto, escrow, opening
from protocol import frames as f
from tests.helpers.browser import PAGE_PASS, open_page, playwright_expect, register_in_page
from tests.helpers.clients import next_message
from tests.helpers.disputes import ESCROW_PASS, capsule_depositors, ceremony, server
from tests.helpers.escrow_factory import NOW, make_policy, officers
from tests.helpers.hubs import TEST_KDF, RunningHub, start_hub
from tests.helpers.waiting import wait_until


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    monkeypatch.delenv("CHAT_ORG_FINGERPRINT", raising=False)


async def certify_counselors(
    hub: RunningHub, keys: Path, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline ceremony (v2 §2): the hub lists counselors without a certificate, the
    org key certifies them (`chat-escrow certify`), the hub installs the certificates."""
    common = ["--db", hub.config.db_url, "--state-dir", str(hub.config.state_dir)]

    async def chat_server(*argv: str) -> int:
        return await asyncio.to_thread(server_cli.main, [*argv, *common])

    work.mkdir()
    capsys.readouterr()
    assert await chat_server("admin", "counselors", "pending", "--json") == 0
    pending, certs = work / "pending.json", work / "certs.json"
    pending.write_text(capsys.readouterr().out)
    certify = ["certify", "--org-key", str(keys / "org.key"), str(pending), "-o", str(certs)]
    assert escrow_cli.main([*certify, "--yes"]) == 0
    assert await chat_server("admin", "counselors", "install-certs", str(certs)) == 0


async def _unseal_case(
    hub: RunningHub,
    client: ChatClient,
    case_id: str,
    keys: Path,
    org_fp: str,
    work: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """File a dispute, approve it offline as officer1, export and unseal the bundle;
    (bundle JSON, transcript JSON). chat-unseal must exit 0: everything verified."""
    work.mkdir()
    request = await client.file_dispute(case_id, "Please review this conversation")
    capsys.readouterr()
    assert await server(hub, "disputes", "show", request.request_id, "--json") == 0
    (work / "request.json").write_text(capsys.readouterr().out)
    approve = [
        "approve",
        str(work / "request.json"),
        "--key",
        str(keys / "officer1.key"),
        "--out",
        str(work / "approval.json"),
        "--org-fingerprint",
        org_fp,
    ]
    assert escrow_cli.main(approve) == 0
    approval = str(work / "approval.json")
    assert await server(hub, "disputes", "approve", request.request_id, "--approval", approval) == 0
    bundle = work / "case.bundle"
    assert await server(hub, "disputes", "export", request.request_id, "--out", str(bundle)) == 0
    out = work / "review"
    argv = [str(bundle), "--key", str(keys / "officer1.key"), "--out", str(out)]
    assert unseal.main([*argv, "--org-fingerprint", org_fp]) == 0
    return json.loads(bundle.read_text()), json.loads((out / "transcript.json").read_text())


async def test_page_escrows_its_keys_and_disputes_unseal(
    browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = playwright_expect()
    keys = tmp_path / "keys"
    policy_file, org_fp = ceremony(keys, 1, 1)
    signed = msgspec.json.decode(policy_file.read_bytes(), type=f.SignedEscrowPolicy)
    policy_fp = escrow.policy_fingerprint(signed.policy)
    async with start_hub(tmp_path / "hub", org_fingerprint=org_fp) as hub:
        install = ["admin", "escrow-policy", "install", str(policy_file)]
        assert await server(hub, *install, "--org-fingerprint", org_fp) == 0
        invite = await hub.invite_counselor("Dr Escrow", ("en",), ("anxiety",))
        # The SDK makes epoch 1 as soon as its case is assigned, so for the page to write
        # first the client opens its case while no counselor is on duty, then leaves.
        home = tmp_path / "erin"
        client = await ChatClient.register(
            hub.url, "erin", "client pass", home=home, org_fingerprint=org_fp, **TEST_KDF
        )
        try:
            assert await client.consent()
            first = await client.open_case("anxiety", "en")
            assert first.state == "waiting"
        finally:
            await client.close()

        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-escrow")
        # Not certified yet, and the page says what that means.
        await expect(page.locator("#me-cert")).to_have_attribute("data-certified", "no")
        await expect(page.locator("#me-cert")).to_contain_text("clients will not share")
        # The client pins the org key, so it shares case keys only with certified counselors.
        await certify_counselors(hub, keys, tmp_path / "certify", capsys)
        # Who could unseal, under which policy, verified against the served pin.
        panel = page.locator("#escrow-info")
        await expect(panel).to_have_attribute("data-verified", "yes")
        await expect(panel).to_contain_text(policy_fp)
        await expect(panel).to_contain_text("any 1 of 1 escrow officers (officer1)")
        await expect(panel).to_contain_text("one officer alone")

        # The page writes first: it creates epoch 1, with its capsule in case.key.
        item = page.locator(f'.case-item[data-case-id="{first.case_id}"]')
        await item.click()
        pane = page.locator(f'.pane[data-case-id="{first.case_id}"]')
        await pane.locator("textarea").fill("Hello Erin, I am the counselor on duty.")
        await pane.locator("textarea").press("Enter")
        await expect(pane.locator(".msg.mine")).to_have_attribute("data-status", "sent")

        client = await ChatClient.open(hub.url, home, "client pass", org_fingerprint=org_fp)
        try:
            history = await client.history(first.case_id)
            assert [(m.body, m.verified) for m in history] == [
                ("Hello Erin, I am the counselor on duty.", True)
            ]
            await client.send(first.case_id, "Thanks for writing first.")
            await expect(pane.locator(".msg.theirs .body")).to_have_text(
                "Thanks for writing first."
            )
            counselor_id = (await client.cases())[0].counselor_id
            assert counselor_id is not None

            # The client writes first in a second case; the page verifies its key,
            # deposits its own capsule with case.capsule, and answers.
            second = await client.open_case("anxiety", "en")
            assert second.counselor_id == counselor_id
            await client.send(second.case_id, "This is my second case.")
            item2 = page.locator(f'.case-item[data-case-id="{second.case_id}"]')
            await item2.click()
            pane2 = page.locator(f'.pane[data-case-id="{second.case_id}"]')
            await expect(pane2.locator(".msg.verified .body")).to_have_text(
                "This is my second case."
            )
            await pane2.locator("textarea").fill("I see it. Tell me more.")
            await pane2.locator("textarea").press("Enter")
            got = await next_message(client)
            while got.case_id != second.case_id:  # the event stream replays case one too
                got = await next_message(client)
            assert got.verified and got.body == "I see it. Tell me more."

            # Each participant deposited its own capsule of each epoch key.
            both = {client.account_id, counselor_id}
            assert await capsule_depositors(hub, first.case_id, both) == both
            assert await capsule_depositors(hub, second.case_id, both) == both

            # Reload: the page verifies the client's key again and repeats its deposit;
            # the hub answers conflict, which the page takes as done (nothing fails).
            sent: list[str] = []
            received: list[str] = []

            def on_socket(ws: Any) -> None:
                ws.on("framesent", lambda payload: sent.append(str(payload)))
                ws.on("framereceived", lambda payload: received.append(str(payload)))

            page.on("websocket", on_socket)
            await page.reload()
            await page.fill("#unlock-pass", PAGE_PASS)
            await page.press("#unlock-pass", "Enter")
            await expect(page.locator("#banner")).to_have_attribute("data-state", "online")
            await page.locator(f'.case-item[data-case-id="{second.case_id}"]').click()
            await expect(pane2.locator(".msg.verified")).to_have_count(2)
            await wait_until(
                lambda: any('"conflict"' in r for r in received), "the hub's conflict answer"
            )
            capsule_frames = [json.loads(s) for s in sent if '"case.capsule"' in s]
            assert [(m["case_id"], m["epoch"]) for m in capsule_frames] == [(second.case_id, 1)]
            assert any('"conflict"' in r for r in received)
            await expect(page.locator('.msg[data-status="failed"]')).to_have_count(0)
            await expect(panel).to_contain_text(policy_fp)

            # Offline review of both cases: every capsule opens, every signature verifies.
            said = {
                first.case_id: [
                    ("counselor", "Hello Erin, I am the counselor on duty."),
                    ("client", "Thanks for writing first."),
                ],
                second.case_id: [
                    ("client", "This is my second case."),
                    ("counselor", "I see it. Tell me more."),
                ],
            }
            creator = {first.case_id: counselor_id, second.case_id: client.account_id}
            for n, case_id in enumerate(said):
                bundle, transcript = await _unseal_case(
                    hub, client, case_id, keys, org_fp, tmp_path / f"review{n}", capsys
                )
                [epoch] = bundle["epochs"]
                assert epoch["creator_id"] == creator[case_id]
                assert {c["depositor_id"] for c in epoch["capsules"]} == both
                messages = transcript["messages"]
                assert [(m["sender_role"], m["body"]) for m in messages] == said[case_id]
                assert all(m["verified"] for m in messages)
            bp.assert_clean()
        finally:
            await client.close()


async def test_page_refuses_a_policy_from_another_organisation(
    browser: Any, tmp_path: Path
) -> None:
    """The hub serves a pin the installed policy was not signed with: the page says so,
    escrows nothing and cannot create an epoch key (the hub requires a capsule)."""
    expect = playwright_expect()
    policy_file, org_fp = ceremony(tmp_path / "keys", 1, 1)
    other_fp = crypto.fingerprint(bytes(32))
    async with start_hub(tmp_path / "hub", org_fingerprint=other_fp) as hub:
        install = ["admin", "escrow-policy", "install", str(policy_file)]
        assert await server(hub, *install, "--org-fingerprint", org_fp) == 0
        invite = await hub.invite_counselor("Dr Pin", ("en",), ("anxiety",))
        client = await ChatClient.register(
            hub.url, "fay", "client pass", home=tmp_path / "fay", org_fingerprint=org_fp, **TEST_KDF
        )
        try:
            assert await client.consent()
            case = await client.open_case("anxiety", "en")
        finally:
            await client.close()  # offline, so the page is the one to make epoch 1
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        await register_in_page(page, invite, "dr-pin")
        panel = page.locator("#escrow-info")
        await expect(panel).to_have_attribute("data-verified", "no")
        await expect(panel).to_contain_text("not signed by the pinned organisation key")
        await page.locator(f'.case-item[data-case-id="{case.case_id}"]').click()
        pane = page.locator(f'.pane[data-case-id="{case.case_id}"]')
        await pane.locator("textarea").fill("This must not be sent.")
        await pane.locator("textarea").press("Enter")
        failed = pane.locator('.msg[data-status="failed"]')
        await expect(failed).to_contain_text("cannot escrow the case key")
        assert hub.server.db is not None
        assert await hub.server.db.cases.epoch_key(case.case_id, 1) is None
        assert await hub.server.db.escrow.capsules_for(case.case_id) == []
        bp.assert_clean()


CAPSULE_JS = """
async ({ moduleUrl, policy, signed, badSig, caseId, key, orgFp, otherFp, now }) => {
  const c = await import(moduleUrl);
  await c.ready();
  const refused = (pin, s, at) => {
    try { c.verifyPolicy(s, pin, at); return "accepted"; }
    catch (err) { return `${err.name}: ${err.message}`; }
  };
  const fp = c.verifyPolicy(signed, orgFp, now);
  return {
    fp,
    spacedPin: c.verifyPolicy(signed, orgFp.toUpperCase().replace(/ /g, "  "), now),
    capsule: c.makeCapsule(policy, fp, caseId, 7, c.fromB64(key)),
    subsets: c.officerSubsets(5, 3),
    wrongPin: refused(otherFp, signed, now),
    noPin: refused(null, signed, now),
    badSig: refused(orgFp, badSig, now),
    expired: refused(orgFp, signed, policy.not_after + 1),
  };
}
"""


async def test_page_capsules_open_with_protocol_escrow(browser: Any, tmp_path: Path) -> None:
    people = officers(3)
    signed = make_policy(people, 2)
    org_fp = crypto.fingerprint(signed.policy.org_sign_pk)
    bad = msgspec.structs.replace(signed, sig=bytes(64))
    key = bytes(range(100, 132))
    case_id = "case_browser01"
    async with start_hub(tmp_path / "hub") as hub:
        bp = await open_page(browser, hub.http_url)
        got = await bp.page.evaluate(
            CAPSULE_JS,
            {
                "moduleUrl": f"{hub.http_url}dist/crypto.js",
                "policy": msgspec.to_builtins(signed.policy),
                "signed": msgspec.to_builtins(signed),
                "badSig": msgspec.to_builtins(bad),
                "caseId": case_id,
                "key": msgspec.to_builtins(key),
                "orgFp": org_fp,
                "otherFp": crypto.fingerprint(bytes(32)),
                "now": NOW,
            },
        )
        bp.assert_clean()
    fp = escrow.verify_policy(signed, org_fp, NOW)
    assert got["fp"] == got["spacedPin"] == fp
    assert got["subsets"] == [list(s) for s in itertools.combinations(range(5), 3)]
    assert got["wrongPin"] == "PolicyError: policy is not signed by the pinned organisation key"
    assert got["noPin"] == "PolicyError: no organisation fingerprint is pinned"
    assert got["badSig"] == "PolicyError: policy signature does not verify"
    assert got["expired"] == "PolicyError: policy is not in force now"

    capsule = msgspec.json.decode(json.dumps(got["capsule"]), type=f.Capsule)
    escrow.check_capsule_shape(capsule, signed.policy)  # what the hub checks
    commitment = crypto.key_commitment(key, case_id, 7)
    for pair in itertools.combinations(range(3), 2):
        held = {i: people[i].box for i in pair}
        opened = opening.open_capsule(
            capsule, signed.policy, held, case_id=case_id, epoch=7, commitment=commitment
        )
        assert opened == key
    with pytest.raises(escrow.InsufficientKeys):
        opening.open_capsule(
            capsule,
            signed.policy,
            {0: people[0].box},
            case_id=case_id,
            epoch=7,
            commitment=commitment,
        )
    with pytest.raises(escrow.ForeignMaterial):  # bound to its case and epoch
        opening.open_capsule(
            capsule,
            signed.policy,
            {0: people[0].box, 1: people[1].box},
            case_id=case_id,
            epoch=8,
            commitment=crypto.key_commitment(key, case_id, 8),
        )
