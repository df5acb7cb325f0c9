"""``chat-server admin counselors``: the hub's two steps of counselor certification.

    chat-server admin counselors pending [--json]
    chat-server admin counselors install-certs certs.json

The hub never holds a key that can certify a counselor (DESIGN.md): it lists the
counselors still without a certificate (protocol/ceremony.py ``PendingCounselors``) for
the organisation to sign offline with ``chat-escrow certify``, and installs the signed
certificates after checking each one against the installed escrow policy's
organisation key and the keys it stores for the account. A certificate that does not
verify, or names other keys, handle or role than the account has, refuses the whole
file: nothing is installed.

Exit codes: 0 done; 1 refused (the reasons on stderr); 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from protocol import crypto
from protocol.ceremony import (
    CounselorCerts,
    PendingCounselor,
    PendingCounselors,
    decode_certs,
    encode_document,
)
from protocol.errors import CryptoError
from protocol.frames import SignedEscrowPolicy
from storage.engine import Database

__all__ = ["add_parser", "install_certs", "pending", "run"]

EXIT_REFUSED = 1


def add_parser(admin_sub: Any, common: Any) -> None:
    p = admin_sub.add_parser("counselors", help="counselor certificates (offline org key)")
    csub = p.add_subparsers(dest="counselors_command", required=True)
    pend = csub.add_parser("pending", help="counselors without a certificate")
    common(pend)
    pend.add_argument("--json", action="store_true", help="print the pending-counselors file")
    install = csub.add_parser("install-certs", help="verify and install certs.json")
    common(install)
    install.add_argument("certs", type=Path)


async def pending(db: Database) -> tuple[PendingCounselors, list[str]]:
    """The counselors to certify, and the handles of those who cannot be yet (a
    version-1 account that has not signed its box key: it must log in once)."""
    ready: list[PendingCounselor] = []
    unsigned: list[str] = []
    for account in await db.accounts.counselors():
        if account.cert is not None:
            continue
        if account.box_sig is None:
            unsigned.append(account.handle)
            continue
        ready.append(
            PendingCounselor(
                account_id=account.id,
                handle=account.handle,
                sign_pk=account.sign_pk,
                box_pk=account.box_pk,
                box_sig=account.box_sig,
                fingerprint=crypto.fingerprint_v2(account.sign_pk, account.box_pk),
            )
        )
    return PendingCounselors(counselors=ready), unsigned


async def install_certs(db: Database, certs: CounselorCerts) -> list[str]:
    """Check every certificate, then install them all; the problems (nothing installed)
    or an empty list (all installed)."""
    policy = await db.escrow.current()
    if policy is None:
        return ["no escrow policy is installed, so the organisation key is unknown"]
    org_pk = msgspec.json.decode(policy.signed_policy, type=SignedEscrowPolicy).policy.org_sign_pk
    problems: list[str] = []
    stored = {a.id: a for a in await db.accounts.by_ids(c.account_id for c in certs.certs)}
    for cert in certs.certs:
        account = stored.get(cert.account_id)
        try:
            if account is None:
                raise CryptoError("no such account")
            if account.role != "counselor":
                raise CryptoError("the account is not a counselor")
            if account.handle != cert.handle:
                raise CryptoError(f"the account's handle is {account.handle!r}")
            crypto.verify_counselor_cert(
                cert,
                org_pk,
                account_id=account.id,
                sign_pk=account.sign_pk,
                box_pk=account.box_pk,
            )
        except CryptoError as exc:
            problems.append(f"{cert.account_id} ({cert.handle}): {exc}")
    if problems:
        return problems
    for cert in certs.certs:
        await db.accounts.set_cert(cert)  # re-checks the keys in its own transaction
    return []


async def run(args: argparse.Namespace, db: Database) -> int:
    if args.counselors_command == "pending":
        document, unsigned = await pending(db)
        if args.json:
            sys.stdout.buffer.write(encode_document(document))
        else:
            for c in document.counselors:
                print(f"{c.handle}\t{c.account_id}\t{c.fingerprint}")
        if unsigned:
            print(
                f"not listed (no box key signature yet; they must log in once): "
                f"{', '.join(unsigned)}",
                file=sys.stderr,
            )
        return 0
    certs = decode_certs(args.certs.read_bytes())
    problems = await install_certs(db, certs)
    for problem in problems:
        print(f"chat-server: refused: {problem}", file=sys.stderr)
    if problems:
        print("chat-server: no certificate was installed", file=sys.stderr)
        return EXIT_REFUSED
    print(f"installed {len(certs.certs)} counselor certificate(s)")
    return 0
