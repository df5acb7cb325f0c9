"""Attack 3 of issue 10 seen by ``chat-unseal``: after an approved dispute, a database
writer deletes "NO. Do not call anyone.", reorders two messages or replays one, and
re-chains, so the hub's export (and its signed chain head) agree with the rewritten
history. chat-unseal must still say which seq was dropped / reordered / replayed, from
the order the participants signed (envelopes and a signed read receipt), and exit 10."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_client import ChatClient, escrow_cli, unseal
from chat_client.keyfiles import load_key
from tests.helpers import dbwriter
from tests.helpers.certs import certify_counselors
from tests.helpers.clients import PASS_CLIENT, PASS_COUNSELOR, next_message
from tests.helpers.dbwriter import TURNS
from tests.helpers.disputes import ESCROW_PASS, capsule_depositors, ceremony, server
from tests.helpers.hubs import TEST_KDF, start_hub


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    monkeypatch.delenv("CHAT_ORG_FINGERPRINT", raising=False)


async def approved_dispute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str, str, str]:
    """A 1-of-1 escrow hub, the six-turn case with a signed read receipt, a dispute
    request approved by the officer. Returns (hub dir, case id, request id, org fp)."""
    keys = tmp_path / "keys"
    policy, org_fp = ceremony(keys, 1, 1)
    hub_dir = tmp_path / "hub"
    async with start_hub(hub_dir) as hub:
        install = ["admin", "escrow-policy", "install", str(policy), "--org-fingerprint", org_fp]
        assert await server(hub, *install) == 0
        code = await hub.invite_counselor("dr-who", ("en",), ("anxiety",))
        counselor = await ChatClient.register(
            hub.url, "dr-who", PASS_COUNSELOR, home=tmp_path / "co", invite=code,
            org_fingerprint=org_fp, **TEST_KDF,
        )  # fmt: skip
        assert await certify_counselors(hub, load_key(keys / "org.key", ESCROW_PASS).sign_key)
        client = await ChatClient.register(
            hub.url, "alice", PASS_CLIENT, home=tmp_path / "cl", org_fingerprint=org_fp,
            **TEST_KDF,
        )  # fmt: skip
        try:
            assert await client.consent()
            case = await client.open_case("anxiety", "en")
            sides = {"client": (client, counselor), "counselor": (counselor, client)}
            for who, text in TURNS:
                writer, reader = sides[who]
                await writer.send(case.case_id, text)
                assert (await next_message(reader)).body == text
            await counselor.receipt(case.case_id, "read", 5)  # signed over seq 5's hash
            both = {client.account_id, counselor.account_id}
            assert await capsule_depositors(hub, case.case_id, both) == both
            request = await client.file_dispute(case.case_id, "please review")
        finally:
            await client.close()
            await counselor.close()
        capsys.readouterr()
        assert await server(hub, "disputes", "show", request.request_id, "--json") == 0
        (tmp_path / "request.json").write_text(capsys.readouterr().out)
        approval = tmp_path / "approval.json"
        approve = ["approve", str(tmp_path / "request.json"), "--key", str(keys / "officer1.key")]
        assert escrow_cli.main([*approve, "--out", str(approval), "--org-fingerprint", org_fp]) == 0
        approve_cmd = ["disputes", "approve", request.request_id, "--approval", str(approval)]
        assert await server(hub, *approve_cmd) == 0
    return hub_dir, case.case_id, request.request_id, org_fp


async def export_and_unseal(
    tmp_path: Path, hub_dir: Path, request_id: str, org_fp: str
) -> tuple[int, str, dict[str, object]]:
    bundle = tmp_path / "bundle.json"
    async with start_hub(hub_dir) as hub:
        assert await server(hub, "disputes", "export", request_id, "--out", str(bundle)) == 0
    out = tmp_path / "unsealed"
    rc = unseal.main(
        [str(bundle), "--key", str(tmp_path / "keys" / "officer1.key"), "--out", str(out),
         "--org-fingerprint", org_fp]
    )  # fmt: skip
    return (
        rc,
        (out / "transcript.json").read_text(),
        json.loads((out / "transcript.json").read_text()),
    )


async def test_untouched_case_unseals_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub_dir, _case_id, request_id, org_fp = await approved_dispute(tmp_path, capsys)
    rc, _, transcript = await export_and_unseal(tmp_path, hub_dir, request_id, org_fp)
    assert rc == 0 and transcript["order_problems"] == []
    assert [m["body"] for m in transcript["messages"]] == [t for _, t in TURNS]  # type: ignore[union-attr,index]


@pytest.mark.parametrize(
    ("attack", "kind", "seq"),
    [("delete", "dropped", 4), ("swap", "reordered", 2), ("replay", "replayed", 7)],
)
async def test_hostile_hub_rewritten_history_fails_unseal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str, kind: str, seq: int
) -> None:
    hub_dir, case_id, request_id, org_fp = await approved_dispute(tmp_path, capsys)
    db = hub_dir / "chat.db"
    if attack == "delete":
        dbwriter.delete_message(db, case_id, 3)
    elif attack == "swap":
        dbwriter.swap_messages(db, case_id, 2, 3)
    else:
        dbwriter.replay_message(db, case_id, 1)
    capsys.readouterr()
    rc, _, transcript = await export_and_unseal(tmp_path, hub_dir, request_id, org_fp)
    printed = capsys.readouterr().out
    assert rc == unseal.EXIT_TAMPERED == 10
    problems = transcript["order_problems"]
    assert isinstance(problems, list)
    assert any((p["kind"], p["seq"]) == (kind, seq) for p in problems), problems
    assert f"TAMPERED: seq {seq}: {kind}" in printed, printed
    # Every message that is still there verifies: only the order gives the edit away.
    # (A replayed copy is also named by its reused nonce: it is not shown as a message.)
    messages = transcript["messages"]
    assert isinstance(messages, list)
    assert all(m["verified"] for m in messages if m["seq"] != seq or kind != "replayed")
    if kind == "replayed":
        (copy,) = [m for m in messages if m["seq"] == seq]
        assert not copy["verified"] and any("replay of seq 1" in p for p in copy["problems"])
    if attack == "delete":
        assert "NO. Do not call anyone." not in [m["body"] for m in messages]
        # The counselor's signed receipt covered seq 5 of the original history.
        assert any(p["kind"] == "rewritten" and p["seq"] == 5 for p in problems), problems
