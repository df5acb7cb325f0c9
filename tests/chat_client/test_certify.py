"""``chat-escrow certify``: the org key certifies counselors offline (certify.py)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from chat_client import escrow_cli
from chat_client.keyfiles import load_key
from protocol import crypto
from protocol.ceremony import decode_certs
from tests.helpers.disputes import ESCROW_PASS, KDF


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def document(entries: list[dict[str, str]]) -> str:
    """A pending-counselors file as ``chat-server admin counselors pending --json`` writes."""
    return json.dumps(
        {"format": "counsel-chat/pending-counselors", "version": 1, "counselors": entries}
    )


def pending_entry(
    i: int, identity: crypto.Identity, *, box_sig: bytes | None = None
) -> dict[str, str]:
    return {
        "account_id": f"acc_dr{i}",
        "handle": f"dr-{i}",
        "sign_pk": b64(identity.sign_pk),
        "box_pk": b64(identity.box_pk),
        "box_sig": b64(box_sig or crypto.sign_box_key(identity)),
        "fingerprint": crypto.fingerprint_v2(identity.sign_pk, identity.box_pk),
    }


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", ESCROW_PASS)
    path = tmp_path / "org.key"
    argv = ["keygen", "--kind", "org", "--name", "org", "--out", str(path), *KDF]
    assert escrow_cli.main(argv) == 0
    return path


def test_certify_yes_writes_certs_that_verify(
    org: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [crypto.Identity.generate() for _ in range(2)]
    pending = tmp_path / "pending.json"
    pending.write_text(document([pending_entry(i, ident) for i, ident in enumerate(ids)]))
    out = tmp_path / "certs.json"
    argv = ["certify", "--org-key", str(org), str(pending), "-o", str(out), "--yes"]
    assert escrow_cli.main(argv) == 0
    printed = capsys.readouterr().out
    certs = decode_certs(out.read_bytes()).certs
    org_pk = load_key(org, ESCROW_PASS, "org").sign_pk
    assert [c.handle for c in certs] == ["dr-0", "dr-1"]
    for cert, ident in zip(certs, ids, strict=True):
        crypto.verify_counselor_cert(cert, org_pk, sign_pk=ident.sign_pk, box_pk=ident.box_pk)
        assert crypto.fingerprint_v2(ident.sign_pk, ident.box_pk) in printed
    assert "2 of 2 counselor(s) certified" in printed


def test_certify_asks_per_counselor(
    org: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [crypto.Identity.generate() for _ in range(2)]
    pending = tmp_path / "pending.json"
    pending.write_text(document([pending_entry(i, ident) for i, ident in enumerate(ids)]))
    monkeypatch.setattr("sys.stdin", io.StringIO("y\nn\n"))
    out = tmp_path / "certs.json"
    assert escrow_cli.main(["certify", "--org-key", str(org), str(pending), "-o", str(out)]) == 0
    certs = decode_certs(out.read_bytes()).certs
    assert [c.handle for c in certs] == ["dr-0"]


def test_certify_refuses_a_forged_box_key(
    org: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, evil = crypto.Identity.generate(), crypto.Identity.generate()
    forged = pending_entry(1, good)
    forged["box_pk"] = b64(evil.box_pk)  # the hub swapped the box key in the list
    pending = tmp_path / "pending.json"
    pending.write_text(document([pending_entry(0, good), forged]))
    out = tmp_path / "certs.json"
    argv = ["certify", "--org-key", str(org), str(pending), "-o", str(out), "--yes"]
    assert escrow_cli.main(argv) == escrow_cli.EXIT_FOREIGN
    assert "dr-1 (acc_dr1): box key not signed" in capsys.readouterr().err
    assert not out.exists()


def test_certify_bad_input(org: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pending = tmp_path / "pending.json"
    pending.write_text('[{"handle": "x"}]')
    argv = ["certify", "--org-key", str(org), str(pending), "-o", str(tmp_path / "c.json")]
    assert escrow_cli.main(argv) == 2
    assert "not a pending-counselors file" in capsys.readouterr().err
