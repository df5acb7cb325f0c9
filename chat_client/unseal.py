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
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
from .review import render_html, summary, transcript_json

__all__ = [
    "EXIT_FOREIGN",
    "EXIT_KEYS",
    "EXIT_OK",
    "EXIT_PASSPHRASE",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
    "main",
    "render_html",
    "transcript_json",
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
    print(summary(bundle, report))
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
