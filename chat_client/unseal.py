"""``chat-unseal``: open a dispute bundle offline with k officers' keys and verify it.

    chat-unseal BUNDLE --key officer1.key [--key officer2.key ...] --out DIR
                [--passphrase-file F ...] [--org-fingerprint FP] [--server-fingerprint FP]

No server and no database: the bundle (protocol/bundle.py) holds everything. The tool
removes the seal layers of a capsule whose officer subset the given keys cover, checks
each epoch key against its binding and signed commitment, decrypts every message and
verifies every sender signature, the hash chain and the server-signed chain head, the
request (the client's signature, or the legal order) and the officers' approvals.

The organisation key must be pinned: ``--org-fingerprint``, else $CHAT_ORG_FINGERPRINT,
else the ``.org-pin`` files written next to the officer keys at keygen (all that are
given must agree); with none, nothing is opened (exit 2).

The authority to open is checked before any capsule is opened: the policy under the
pinned organisation key, the request and the evidence that its signer is the case's
client, and k valid approvals. If any of that fails (exit 12), or the keys are wrong or
too few (exit 11), nothing is decrypted and nothing is written. Otherwise it writes
DIR/transcript.html (readable and printable, one verdict per message) and
DIR/transcript.json (DIR 0700, files 0600: they hold plaintext), and prints a
verification summary. A message that fails any check is still listed, with why, and
never shown as verified.

Exit codes:
   0  everything verified
   2  usage (bad arguments, unreadable files, no organisation fingerprint pinned)
  10  a message is tampered, missing or out of order (or the chain head does not match)
  11  wrong officer keys, or too few for the policy's threshold
  12  malformed or foreign bundle: not a bundle, request/approvals/capsule for another
      case or request, a forged approval, a request not signed by the case's client, a
      policy not signed by the pinned organisation key
  13  wrong passphrase for a key file
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from protocol.bundle import Bundle, Report, decode_bundle, verify_bundle
from protocol.escrow import ForeignMaterial

from .keyfiles import (
    KeyFileError,
    NoPassphrase,
    PinError,
    WrongPassphrase,
    load_key,
    read_passphrase,
    resolve_org_pin,
    write_private,
)

__all__ = [
    "EXIT_FOREIGN",
    "EXIT_KEYS",
    "EXIT_OK",
    "EXIT_PASSPHRASE",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
    "main",
    "render_html",
]

EXIT_OK, EXIT_USAGE = 0, 2
EXIT_TAMPERED, EXIT_KEYS, EXIT_FOREIGN, EXIT_PASSPHRASE = 10, 11, 12, 13


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-unseal",
        description="Open and verify a dispute bundle offline with k officer keys.",
        epilog="Exit codes: 0 verified, 2 usage, 10 tampered/missing/reordered message, "
        "11 wrong or too few officer keys, 12 malformed or foreign bundle, 13 wrong passphrase.",
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--key", type=Path, action="append", required=True, help="officer key")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        action="append",
        default=[],
        help="passphrase of each --key, in order (one file: used for all; "
        "else env CHAT_ESCROW_PASSPHRASE, else a prompt per key)",
    )
    parser.add_argument(
        "--org-fingerprint",
        default=os.environ.get("CHAT_ORG_FINGERPRINT"),
        help="pinned organisation key fingerprint (env CHAT_ORG_FINGERPRINT; else the "
        ".org-pin files next to the keys)",
    )
    parser.add_argument(
        "--server-fingerprint",
        default=os.environ.get("CHAT_SERVER_FINGERPRINT"),
        help="pinned hub signing key fingerprint (env CHAT_SERVER_FINGERPRINT)",
    )
    return parser


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _load_keys(args: argparse.Namespace) -> list[PrivateKey]:
    files: list[Path] = args.passphrase_file
    if len(files) not in (0, 1, len(args.key)):
        raise ValueError("give one --passphrase-file, or one per --key")
    keys = []
    for i, path in enumerate(args.key):
        file = files[i] if len(files) == len(args.key) else (files[0] if files else None)
        key = load_key(path, read_passphrase(file, f"Passphrase for {path}: "), "officer")
        assert key.box_key is not None
        keys.append(key.box_key)
    return keys


def transcript_json(bundle: Bundle, report: Report) -> dict[str, Any]:
    return {
        "case_id": report.case_id,
        "exit_code": report.exit_code,
        "verified": report.exit_code == EXIT_OK,
        "policy_fingerprint": report.policy_fingerprint,
        "server_fingerprint": report.server_fingerprint,
        "request": {
            "request_id": bundle.request.request_id,
            "kind": report.request_kind,
            "note": report.request_note,
        },
        "approvals_valid": report.approvals_valid,
        "officer_keys_used": report.keys_used,
        "participants": [
            {"account_id": p.account_id, "role": p.role, "handle": p.handle}
            for p in bundle.participants
        ],
        "missing_seqs": report.missing_seqs,
        "problems": {"foreign": report.foreign, "keys": report.keys, "tampered": report.tampered},
        "messages": [
            {
                "seq": m.seq,
                "epoch": m.epoch,
                "sender_id": m.sender_id,
                "sender_role": m.sender_role,
                "client_msg_id": m.client_msg_id,
                "ts": m.ts,
                "server_ts": m.server_ts,
                "verified": m.ok,
                "body": m.body if m.ok else None,
                "problems": m.problems,
            }
            for m in report.messages
        ],
    }


_CSS = """
body { font: 11pt/1.45 Georgia, serif; max-width: 48em; margin: 2em auto; color: #111; }
h1 { font-size: 1.4em; } table.meta td { padding: 0 1em 0 0; vertical-align: top; }
.msg { border-left: 4px solid #2a7; padding: .3em .8em; margin: .8em 0; break-inside: avoid; }
.msg.bad { border-color: #c22; background: #fff3f3; }
.msg .head { font: 9pt monospace; color: #555; }
.msg .body { white-space: pre-wrap; }
.verdict { font: bold 9pt sans-serif; } .ok { color: #161; } .fail { color: #a00; }
.problems li { color: #a00; }
@media print { body { margin: 0; max-width: none; } .msg { background: none; } }
"""


def render_html(bundle: Bundle, report: Report) -> str:
    """The transcript as one self-contained page; every value is HTML-escaped."""
    e = html.escape
    roles = {p.account_id: f"{p.role} {p.handle}" for p in bundle.participants}
    verdict = (
        "ALL VERIFIED" if report.exit_code == EXIT_OK else f"NOT VERIFIED (exit {report.exit_code})"
    )
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Dispute transcript {e(report.case_id)}</title><style>{_CSS}</style></head>",
        f"<body><h1>Dispute transcript: case {e(report.case_id)}</h1>",
        f"<p class='verdict {'ok' if report.exit_code == 0 else 'fail'}'>{e(verdict)}</p>",
        "<table class='meta'>",
        f"<tr><td>Request</td><td>{e(bundle.request.request_id)} ({e(report.request_note)})"
        "</td></tr>",
        f"<tr><td>Escrow policy</td><td>{e(report.policy_fingerprint)}</td></tr>",
        f"<tr><td>Approvals</td><td>officers {e(str(report.approvals_valid))}</td></tr>",
        f"<tr><td>Hub key</td><td>{e(report.server_fingerprint)}</td></tr>",
        f"<tr><td>Exported</td><td>{e(_time(bundle.exported_at))}</td></tr>",
        "</table>",
    ]
    problems = report.foreign + report.keys + report.tampered
    if problems:
        out.append("<h2>Problems</h2><ul class='problems'>")
        out.extend(f"<li>{e(p)}</li>" for p in problems)
        out.append("</ul>")
    out.append("<h2>Messages</h2>")
    for m in report.messages:
        who = roles.get(m.sender_id, f"unknown {m.sender_id}")
        cls = "msg" if m.ok else "msg bad"
        mark = "verified" if m.ok else "NOT VERIFIED: " + "; ".join(m.problems)
        out.append(
            f"<div class='{cls}'><div class='head'>#{m.seq} · {e(who)} · "
            f"{e(_time(m.ts if m.ok else m.server_ts))} · epoch {m.epoch} · "
            f"<span class='verdict {'ok' if m.ok else 'fail'}'>{e(mark)}</span></div>"
        )
        if m.ok and m.body is not None:
            out.append(f"<div class='body'>{e(m.body)}</div>")
        out.append("</div>")
    for seq in report.missing_seqs:
        out.append(
            f"<div class='msg bad'><div class='head'>#{seq} · "
            "<span class='verdict fail'>MISSING from the bundle</span></div></div>"
        )
    out.append("</body></html>\n")
    return "\n".join(out)


def _summary(bundle: Bundle, report: Report) -> str:
    ok = sum(1 for m in report.messages if m.ok)
    lines = [
        f"case {report.case_id}: {ok}/{len(report.messages)} messages verified"
        + (f", {len(report.missing_seqs)} missing" if report.missing_seqs else ""),
        f"request {bundle.request.request_id}: {report.request_note}",
        f"escrow policy {report.policy_fingerprint}; approvals by officers "
        f"{report.approvals_valid}; keys used {report.keys_used}",
        f"hub key {report.server_fingerprint}",
    ]
    for label, items in (
        ("FOREIGN", report.foreign),
        ("KEYS", report.keys),
        ("TAMPERED", report.tampered),
    ):
        lines.extend(f"{label}: {item}" for item in items)
    lines.append(
        "RESULT: all verified"
        if report.exit_code == EXIT_OK
        else f"RESULT: NOT verified (exit {report.exit_code})"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_USAGE
    try:
        org_fp = resolve_org_pin(args.org_fingerprint, args.key)
        data = args.bundle.read_bytes()
    except (OSError, PinError) as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        bundle = decode_bundle(data)
    except ForeignMaterial as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    try:
        keys = _load_keys(args)
    except WrongPassphrase as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_PASSPHRASE
    except NoPassphrase as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyFileError as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_KEYS
    except (OSError, ValueError) as exc:
        print(f"chat-unseal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = verify_bundle(
        bundle,
        keys,
        org_fingerprint=org_fp,
        server_fingerprint=args.server_fingerprint,
    )
    if report.exit_code in (EXIT_OK, EXIT_TAMPERED):
        _write_review(args.out, bundle, report)
    else:
        print(f"chat-unseal: nothing opened; nothing written to {args.out}", file=sys.stderr)
    print(_summary(bundle, report))
    return report.exit_code


def _write_review(out: Path, bundle: Bundle, report: Report) -> None:
    """The transcript files, readable by their owner only (they hold plaintext)."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    write_private(out / "transcript.html", render_html(bundle, report))
    write_private(
        out / "transcript.json",
        json.dumps(transcript_json(bundle, report), indent=1, ensure_ascii=False) + "\n",
    )


if __name__ == "__main__":
    sys.exit(main())
