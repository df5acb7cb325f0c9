"""chat-unseal and chat-escrow as command-line programs: exit codes for every kind of
tampering, with real key files (low Argon2id cost) and real bundles built offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from chat_client import escrow_cli, unseal
from chat_client.keyfiles import KeyFile, WrongPassphrase, load_key, write_key
from protocol import crypto
from protocol.bundle import encode_bundle
from protocol.escrow import sign_dispute
from tests.helpers.escrow_factory import HEAD, LEGAL, ORG, Scenario, build

PASS = "officer passphrase"
KDF = {"opslimit": 1, "memlimit": 8192}
ROOT = Path(__file__).resolve().parents[2]


def key_files(tmp_path: Path, s: Scenario) -> list[Path]:
    paths = []
    for o in s.people:
        path = tmp_path / f"{o.name}.key"
        write_key(path, KeyFile("officer", o.name, o.sign, o.box), PASS, **KDF)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def _passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", PASS)
    monkeypatch.delenv("CHAT_ORG_FINGERPRINT", raising=False)
    monkeypatch.delenv("CHAT_SERVER_FINGERPRINT", raising=False)


ORG_FP = crypto.fingerprint(bytes(ORG.verify_key))


def run_unseal(tmp_path: Path, s: Scenario, bundle: object, *keys: Path, pin: bool = True) -> int:
    path = tmp_path / "bundle.json"
    path.write_bytes(encode_bundle(bundle) if not isinstance(bundle, bytes) else bundle)  # type: ignore[arg-type]
    args = [str(path), "--out", str(tmp_path / "out")]
    if pin:
        args += ["--org-fingerprint", ORG_FP]
    for k in keys:
        args += ["--key", str(k)]
    return unseal.main(args)


def test_verified_transcript(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[2]) == 0
    out = capsys.readouterr().out
    assert "3/3 messages verified" in out and "RESULT: all verified" in out
    data = json.loads((tmp_path / "out" / "transcript.json").read_text())
    assert [m["body"] for m in data["messages"]] == [t for _, t in s.texts]
    assert all(m["verified"] for m in data["messages"])
    page = (tmp_path / "out" / "transcript.html").read_text()
    # Content is escaped: the client's "<b>" is text, not markup.
    assert "&lt;b&gt;anxiety&lt;/b&gt; &amp; sleep" in page
    assert "<b>anxiety" not in page
    assert "@media print" in page


def test_tampered_message_exit_10(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    m = s.bundle.messages[0]
    ct = bytearray(m.ciphertext)
    ct[-1] ^= 0x80
    msgs = [msgspec.structs.replace(m, ciphertext=bytes(ct)), *s.bundle.messages[1:]]
    bundle = msgspec.structs.replace(s.bundle, messages=msgs)
    assert run_unseal(tmp_path, s, bundle, keys[0], keys[1]) == 10
    data = json.loads((tmp_path / "out" / "transcript.json").read_text())
    assert len(data["messages"]) == 3  # reported, not dropped
    assert data["messages"][0]["verified"] is False and data["messages"][0]["body"] is None
    assert data["messages"][1]["verified"] is True
    assert "NOT VERIFIED" in (tmp_path / "out" / "transcript.html").read_text()


def test_removed_and_swapped_exit_10(tmp_path: Path) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    removed = msgspec.structs.replace(
        s.bundle, messages=[m for m in s.bundle.messages if m.seq != 2]
    )
    assert run_unseal(tmp_path, s, removed, keys[0], keys[1]) == 10
    assert "MISSING" in (tmp_path / "out" / "transcript.html").read_text()
    m = list(s.bundle.messages)
    m[1], m[2] = m[2], m[1]
    assert run_unseal(tmp_path, s, msgspec.structs.replace(s.bundle, messages=m), *keys[:2]) == 10


def test_keys_exit_11(tmp_path: Path) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[1]) == 11  # one key, two needed
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    other = tmp_path / "stranger.key"
    write_key(
        other,
        KeyFile("officer", "x", SigningKey(bytes([201]) * 32), PrivateKey(bytes([202]) * 32)),
        PASS,
        **KDF,
    )
    assert run_unseal(tmp_path, s, s.bundle, keys[0], other) == 11


def test_foreign_exit_12(tmp_path: Path) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    other = build(case_id="case_9999")
    swapped = msgspec.structs.replace(
        s.bundle,
        epochs=[
            msgspec.structs.replace(
                s.bundle.epochs[0],
                capsules=[other.bundle.epochs[0].capsules[0], *s.bundle.epochs[0].capsules[1:]],
            )
        ],
    )
    assert run_unseal(tmp_path, s, swapped, keys[0], keys[1]) == 12
    forged = msgspec.structs.replace(s.bundle.approvals[0], sig=bytes(64))
    bad = msgspec.structs.replace(s.bundle, approvals=[forged, s.bundle.approvals[1]])
    assert run_unseal(tmp_path, s, bad, keys[0], keys[1]) == 12
    doc = s.bundle.request
    mallory = crypto.Identity.from_secret_bytes(bytes([99]) * 64)
    not_client = msgspec.structs.replace(
        doc,
        sig=sign_dispute(
            mallory, doc.case_id, "all", doc.timestamp, doc.policy_fingerprint, doc.reason_ct
        ),
    )
    assert (
        run_unseal(tmp_path, s, msgspec.structs.replace(s.bundle, request=not_client), *keys[:2])
        == 12
    )
    assert run_unseal(tmp_path, s, b'{"format": "zip"}', keys[0]) == 12


def test_wrong_passphrase_exit_13(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", "not it")
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1]) == 13
    with pytest.raises(WrongPassphrase):
        load_key(keys[0], "not it")


def test_usage_exit_2(tmp_path: Path) -> None:
    assert unseal.main(["--out", str(tmp_path)]) == 2
    assert unseal.main([str(tmp_path / "nope.json"), "--key", "k", "--out", str(tmp_path)]) == 2


def test_escrow_cli_ceremony_and_approval_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kdf = ["--kdf-ops", "1", "--kdf-mem", "8192"]
    assert (
        escrow_cli.main(
            ["keygen", "--kind", "org", "--name", "org", "--out", str(tmp_path / "org.key"), *kdf]
        )
        == 0
    )
    for i in (1, 2):
        assert (
            escrow_cli.main(
                [
                    "keygen",
                    "--kind",
                    "officer",
                    "--name",
                    f"o{i}",
                    "--out",
                    str(tmp_path / f"o{i}.key"),
                    *kdf,
                ]
            )
            == 0
        )
    # Never overwrite a key file.
    assert (
        escrow_cli.main(
            ["keygen", "--kind", "org", "--name", "org", "--out", str(tmp_path / "org.key"), *kdf]
        )
        == 2
    )
    assert (
        escrow_cli.main(
            [
                "policy",
                "--org-key",
                str(tmp_path / "org.key"),
                "--officer",
                str(tmp_path / "o1.pub"),
                "--officer",
                str(tmp_path / "o2.pub"),
                "--threshold",
                "2",
                "--out",
                str(tmp_path / "policy.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"organisation fingerprint \(pin in clients\): [0-9a-f ]{49}", out)
    key = json.loads((tmp_path / "o1.key").read_text())
    assert "box_pk" in key and "wrapped" in key and (tmp_path / "o1.key").stat().st_mode & 0o77 == 0
    approve = [
        "approve",
        str(tmp_path / "policy.json"),
        "--key",
        str(tmp_path / "o1.key"),
        "--out",
        str(tmp_path / "a.json"),
    ]
    # No organisation pin anywhere: refused before reading anything (usage).
    capsys.readouterr()
    assert escrow_cli.main(approve) == 2
    assert "no organisation fingerprint is pinned" in capsys.readouterr().err
    org_fp = json.loads((tmp_path / "org.pub").read_text())["fingerprint"]
    assert escrow_cli.main([*approve, "--org-fingerprint", org_fp]) == 12  # not a request
    # A 1-of-n policy needs the explicit flag.
    one = [
        "policy",
        "--org-key",
        str(tmp_path / "org.key"),
        "--officer",
        str(tmp_path / "o1.pub"),
        "--threshold",
        "1",
        "--out",
        str(tmp_path / "one.json"),
    ]
    assert escrow_cli.main(one) == 2
    assert "--allow-single-officer" in capsys.readouterr().err
    assert not (tmp_path / "one.json").exists()
    assert escrow_cli.main([*one, "--allow-single-officer"]) == 0


def test_server_and_storage_never_load_key_files() -> None:
    """Officer and organisation private keys stay offline: no server or storage module
    imports the key-file code or unwraps / builds a signing key from a key file."""
    pattern = re.compile(
        r"keyfiles|escrow_cli|chat_client|load_key\(|unwrap_identity\(|\.key\b.*SigningKey\("
    )
    offenders = []
    for package in ("chat_server", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "server.key" not in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_ceremony_spellings_of_the_guide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """org-keygen / officer-keygen / policy create (README walkthrough) make a policy
    that verifies against the organisation fingerprint the ceremony prints."""
    from protocol.escrow import verify_policy
    from protocol.frames import SignedEscrowPolicy

    monkeypatch.setenv("CHAT_ESCROW_PASSPHRASE", "ceremony pass")
    kdf = ["--kdf-ops", "1", "--kdf-mem", "8192"]
    assert escrow_cli.main(["org-keygen", "--out", str(tmp_path / "org.key"), *kdf]) == 0
    for i in (1, 2):
        out = str(tmp_path / f"officer{i}.key")
        assert escrow_cli.main(["officer-keygen", "--name", f"o{i}", "--out", out, *kdf]) == 0
    capsys.readouterr()
    assert escrow_cli.main(["fingerprint", str(tmp_path / "org.pub")]) == 0
    org_fp = capsys.readouterr().out.strip()
    policy = tmp_path / "policy.json"
    pubs = [a for i in (1, 2) for a in ("--officer", str(tmp_path / f"officer{i}.pub"))]
    argv = ["policy", "create", "--org-key", str(tmp_path / "org.key"), *pubs]
    assert escrow_cli.main([*argv, "--threshold", "2", "--out", str(policy)]) == 0
    signed = msgspec.json.decode(policy.read_bytes(), type=SignedEscrowPolicy)
    assert verify_policy(signed, org_fp)
    assert [o.name for o in signed.policy.officers] == ["o1", "o2"]
    assert signed.policy.threshold == 2


def test_no_authority_writes_nothing_exit_12(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle with no approvals, or a request not by the client, opens no capsule
    and leaves no file at all behind: not even an empty transcript."""
    s = build(approvers=[])
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1]) == 12
    assert not (tmp_path / "out").exists()
    captured = capsys.readouterr()
    assert "0 valid officer approvals" in captured.out and "nothing written" in captured.err
    assert not any(body in captured.out for _, body in s.texts)
    full = build()
    doc = full.bundle.request
    mallory = crypto.Identity.from_secret_bytes(bytes([99]) * 64)
    forged = msgspec.structs.replace(
        doc,
        requester_sign_pk=mallory.sign_pk,
        sig=sign_dispute(
            mallory, doc.case_id, "all", doc.timestamp, doc.policy_fingerprint, doc.reason_ct
        ),
    )
    from protocol.escrow import make_approval
    from tests.helpers.escrow_factory import NOW

    approvals = [
        make_approval(full.people[i].sign, forged, full.policy.policy, NOW, HEAD) for i in (0, 1)
    ]
    bundle = msgspec.structs.replace(full.bundle, request=forged, approvals=approvals)
    assert run_unseal(tmp_path, full, bundle, keys[0], keys[1]) == 12
    assert not (tmp_path / "out").exists()
    # Too few keys: nothing decrypts, so nothing is written either.
    assert run_unseal(tmp_path, full, full.bundle, keys[0]) == 11
    assert not (tmp_path / "out").exists()


def test_review_output_is_private(tmp_path: Path) -> None:
    s = build()
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1]) == 0
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == 0o700
    for name in ("transcript.html", "transcript.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o600


def test_org_pin_is_mandatory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chat_client.keyfiles import write_org_pin

    s = build()
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1], pin=False) == 2
    assert "no organisation fingerprint is pinned" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # The pin file written next to a key at keygen is enough.
    write_org_pin(keys[0], ORG_FP)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1], pin=False) == 0
    # Pins that disagree are a usage error, whichever is right.
    write_org_pin(keys[1], crypto.fingerprint(bytes(32)))
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1], pin=False) == 2
    assert "disagree" in capsys.readouterr().err
    # A pin of another organisation: the policy is foreign.
    for key in keys[:2]:
        write_org_pin(key, crypto.fingerprint(bytes(32)))
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1], pin=False) == 12


def test_officer_keygen_pins_the_org(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kdf = ["--kdf-ops", "1", "--kdf-mem", "8192"]
    fp = crypto.fingerprint(bytes(ORG.verify_key))
    out = tmp_path / "o1.key"
    argv = ["keygen", "--kind", "officer", "--name", "o1", "--out", str(out), *kdf]
    assert escrow_cli.main([*argv, "--org-fingerprint", fp]) == 0
    assert (tmp_path / "o1.org-pin").read_text().strip() == fp
    assert "pinned in" in capsys.readouterr().out


def test_no_terminal_no_passphrase_one_line(tmp_path: Path) -> None:
    """Without a terminal, a passphrase file or CHAT_ESCROW_PASSPHRASE: one line saying
    what to do, no traceback."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CHAT_ESCROW_PASSPHRASE"}
    argv = ["keygen", "--kind", "org", "--name", "org", "--out", str(tmp_path / "org.key")]
    done = subprocess.run(
        [sys.executable, "-m", "chat_client.escrow_cli", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,  # no controlling terminal
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "CHAT_ESCROW_PASSPHRASE" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "org.key").exists()


def test_transcript_names_the_authority_to_open(tmp_path: Path) -> None:
    """Who approved (names, key fingerprints, when), the request (kind, reason, signer,
    time), the consent it rests on, the chain and audit heads and what each verdict
    means; legal orders name the order."""
    s = build()
    keys = key_files(tmp_path, s)
    assert run_unseal(tmp_path, s, s.bundle, keys[0], keys[1]) == 0
    data = json.loads((tmp_path / "out" / "transcript.json").read_text())
    assert [(a["name"], a["fingerprint"]) for a in data["approvals"]] == [
        (o.name, crypto.fingerprint(bytes(o.sign.verify_key))) for o in s.people[:2]
    ]
    request = data["request"]
    assert request["reason"] == "The counselor was rude to me."
    assert request["signer_fingerprint"] == crypto.fingerprint(s.client.sign_pk)
    assert request["consent"] == {
        "terms_version": 1,
        "policy_fingerprint": data["policy_fingerprint"],
        "key_commitment_epoch": 1,
    }
    page = (tmp_path / "out" / "transcript.html").read_text()
    for words in (
        "officer1",
        crypto.fingerprint(bytes(s.people[1].sign.verify_key)),
        "The counselor was rude to me.",
        crypto.fingerprint(s.client.sign_pk),
        "Consent",
        "Approvals (2 of 2 needed)",
        "Audit head",
        "seq 9, ",
        bytes(range(2, 34)).hex(),
        "having seen audit seq 7",
        "What the verdicts mean",
        "@media print",
        "@page",
    ):
        assert words in page, words

    legal = build(legal_order="Court <2025>/17")
    keys = key_files(tmp_path / "legal", legal)
    assert run_unseal(tmp_path / "legal", legal, legal.bundle, keys[0], keys[1]) == 0
    page = (tmp_path / "legal" / "out" / "transcript.html").read_text()
    assert "Legal order" in page and "Court &lt;2025&gt;/17" in page
    assert "Order signed by" in page and crypto.fingerprint(bytes(LEGAL.verify_key)) in page
    data = json.loads((tmp_path / "legal" / "out" / "transcript.json").read_text())
    assert data["request"]["legal_order"] == "Court <2025>/17" and "reason" not in data["request"]


def test_legal_order_ceremony(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A legal-order key named in the policy signs orders; any other key is refused,
    and so is a policy not from the pinned organisation."""
    kdf = ["--kdf-ops", "1", "--kdf-mem", "8192"]

    def keygen(kind: str, name: str) -> Path:
        out = tmp_path / f"{name}.key"
        assert (
            escrow_cli.main(["keygen", "--kind", kind, "--name", name, "--out", str(out), *kdf])
            == 0
        )
        return out

    org, officer, legal, stray = (
        keygen("org", "org"),
        keygen("officer", "o1"),
        keygen("legal", "court"),
        keygen("legal", "stray"),
    )
    policy = tmp_path / "policy.json"
    argv = ["policy", "--org-key", str(org), "--officer", str(officer.with_suffix(".pub"))]
    argv += ["--legal-signer", str(legal.with_suffix(".pub")), "--threshold", "1"]
    assert escrow_cli.main([*argv, "--allow-single-officer", "--out", str(policy)]) == 0
    org_fp = json.loads(org.with_suffix(".pub").read_text())["fingerprint"]

    def sign(key: Path, fp: str) -> int:
        out = tmp_path / f"order-{key.stem}.json"
        argv = ["legal-order", "--key", str(key), "--policy", str(policy), "--case", "case_1"]
        return escrow_cli.main(
            [*argv, "--order", "Court 1/26", "--out", str(out), "--org-fingerprint", fp]
        )

    capsys.readouterr()
    assert sign(legal, org_fp) == 0
    order = json.loads((tmp_path / "order-court.json").read_text())
    assert (order["case_id"], order["order_ref"], order["signer_index"]) == (
        "case_1",
        "Court 1/26",
        0,
    )
    assert (tmp_path / "order-court.json").stat().st_mode & 0o777 == 0o600
    assert sign(stray, org_fp) == 12
    assert "not a legal signer" in capsys.readouterr().err
    assert sign(legal, crypto.fingerprint(bytes(32))) == 12
    assert sign(officer, org_fp) == 1  # an officer key is not a legal-order key
