"""The officers' and administrators' side of escrow, run next to the database (not
inside the hub process) by ``chat-server``:

    chat-server admin escrow-policy install policy.json --org-fingerprint FP
                                            [--terms-version N]
    chat-server disputes list
    chat-server disputes show ID [--json]
    chat-server disputes approve ID --approval approvalN.json
    chat-server disputes export ID --out BUNDLE
    chat-server disputes open-legal CASE --order REF
    chat-server consents export --out FILE
    chat-server audit verify

No command here reads an officer's or the organisation's private key: officers sign
approvals offline with ``chat-escrow approve`` and hand over only the approval file,
which is verified against the installed policy before it is stored. ``export`` needs k
distinct valid approvals and signs the chain head with the hub's own server key.
Exit codes (protocol/exit_codes.py): 0 ok, 1 error (refused, not found, not enough
approvals), 2 usage, 10 the audit log is broken (a tampered, missing or reordered entry).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import ProtocolError
from protocol.escrow import Approval, EscrowError, verify_policy
from protocol.exit_codes import ExitCode
from protocol.terms import CURRENT_TERMS_VERSION
from storage.engine import Database, open_database

from .config import Config
from .disputes import DisputeService

__all__ = ["add_parsers", "add_policy_parser", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: The shared table's "tampered record" (protocol/exit_codes.py).
EXIT_AUDIT = int(ExitCode.TAMPERED)
_encoder = msgspec.json.Encoder()


def add_parsers(sub: Any, common: Any) -> None:
    """Add ``disputes``, ``consents`` and ``audit`` to chat-server's subcommands."""
    disputes = sub.add_parser("disputes", help="dispute requests (escrow officers)")
    dsub = disputes.add_subparsers(dest="disputes_command", required=True)
    p = dsub.add_parser("list", help="list dispute requests")
    common(p)
    p = dsub.add_parser("show", help="show a request (--json: the file officers approve)")
    common(p)
    p.add_argument("request_id")
    p.add_argument("--json", action="store_true")
    p = dsub.add_parser("approve", help="record an officer's offline-signed approval")
    common(p)
    p.add_argument("request_id")
    p.add_argument("--approval", type=Path, required=True, help="from chat-escrow approve")
    p = dsub.add_parser("export", help="write the dispute bundle (needs k approvals)")
    common(p)
    p.add_argument("request_id")
    p.add_argument("--out", type=Path, required=True)
    p = dsub.add_parser("open-legal", help="open a request for a legal order")
    common(p)
    p.add_argument("case_id")
    p.add_argument("--order", required=True, help="the order's reference")

    consents = sub.add_parser("consents", help="terms-of-service acceptances")
    csub = consents.add_subparsers(dest="consents_command", required=True)
    p = csub.add_parser("export", help="write every acceptance as JSON")
    common(p)
    p.add_argument("--out", type=Path, required=True)

    audit = sub.add_parser("audit", help="the escrow audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="check the audit log's hash chain")
    common(p)
    p = asub.add_parser("list", help="print the audit log")
    common(p)


def add_policy_parser(admin_sub: Any, common: Any) -> None:
    p = admin_sub.add_parser("escrow-policy", help="install the org-signed escrow policy")
    psub = p.add_subparsers(dest="policy_command", required=True)
    install = psub.add_parser("install", help="verify and install policy.json")
    common(install)
    install.add_argument("policy", type=Path)
    install.add_argument(
        "--org-fingerprint",
        required=True,
        help="the organisation key fingerprint the policy must be signed with",
    )
    install.add_argument("--terms-version", type=int, default=CURRENT_TERMS_VERSION)


async def _with_db(config: Config, fn: Callable[[Database], Awaitable[int]]) -> int:
    db = await open_database(config.db_url, config.resolved_data_key())
    try:
        result: int = await fn(db)
        return result
    finally:
        await db.close()


def run(args: argparse.Namespace, config: Config) -> int:
    """Dispatch one of this module's commands; the exit code."""
    try:
        return asyncio.run(_with_db(config, lambda db: _dispatch(args, config, db)))
    except (ProtocolError, OSError, ValueError, msgspec.DecodeError) as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def _dispatch(args: argparse.Namespace, config: Config, db: Database) -> int:
    if args.command == "admin":
        return await _install_policy(args, db)
    if args.command == "consents":
        return await _consents_export(args, db)
    if args.command == "audit":
        return await _audit(args, db)
    disputes = DisputeService(db)
    command = args.disputes_command
    if command == "list":
        return await _list(disputes)
    if command == "show":
        return await _show(args, disputes)
    if command == "approve":
        return await _approve(args, disputes)
    if command == "export":
        return await _export(args, config, disputes)
    if command == "open-legal":
        return await _open_legal(args, disputes)
    return EXIT_USAGE


async def _install_policy(args: argparse.Namespace, db: Database) -> int:
    signed = msgspec.json.decode(args.policy.read_bytes(), type=f.SignedEscrowPolicy)
    try:
        fp = verify_policy(signed, args.org_fingerprint, now_ms())
    except EscrowError as exc:
        print(f"chat-server: policy refused: {exc}", file=sys.stderr)
        return EXIT_ERROR
    await db.escrow.install(fp, _encoder.encode(signed), args.terms_version, now_ms())
    policy = signed.policy
    print(f"installed escrow policy {fp}")
    print(
        f"{policy.threshold}-of-{len(policy.officers)}, terms version {args.terms_version}; "
        "clients must consent again before opening cases"
    )
    return EXIT_OK


async def _list(disputes: DisputeService) -> int:
    for record in await disputes.all():
        print(f"{record.id}  {record.case_id}  {record.kind:6}  {record.state}")
    return EXIT_OK


async def _show(args: argparse.Namespace, disputes: DisputeService) -> int:
    view = await disputes.view(await disputes.get(args.request_id))
    if args.json:
        sys.stdout.write(msgspec.json.format(_encoder.encode(view), indent=1).decode() + "\n")
        return EXIT_OK
    doc = view.request
    policy = view.policy.policy
    print(f"request   {doc.request_id} ({doc.kind}), state {view.state}")
    print(f"case      {doc.case_id}")
    if doc.kind == "legal":
        print(f"order     {doc.legal_order}")
    else:
        print(f"requester {doc.requester_id} (reason sealed to the officers)")
    print(f"policy    {doc.policy_fingerprint} ({policy.threshold}-of-{len(policy.officers)})")
    names = [policy.officers[a.officer_index].name for a in view.approvals]
    print(f"approvals {len(view.approvals)}/{policy.threshold}: {', '.join(names) or '-'}")
    return EXIT_OK


async def _approve(args: argparse.Namespace, disputes: DisputeService) -> int:
    approval = msgspec.json.decode(args.approval.read_bytes(), type=Approval)
    try:
        approved = await disputes.approve(args.request_id, approval)
    except EscrowError as exc:
        print(f"chat-server: approval refused: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"approval by {approved.officer_name} recorded; "
        f"{len(approved.record.approvals)}/{approved.threshold}, state {approved.record.state}"
    )
    return EXIT_OK


async def _open_legal(args: argparse.Namespace, disputes: DisputeService) -> int:
    doc = await disputes.open_legal(args.case_id, args.order)
    print(doc.request_id)
    return EXIT_OK


async def _export(args: argparse.Namespace, config: Config, disputes: DisputeService) -> int:
    exported = await disputes.export(args.request_id, config.server_key())
    args.out.write_bytes(exported.data)
    print(
        f"bundle written to {args.out}: {exported.messages} messages, "
        f"{exported.epochs} epochs; BLAKE2b {exported.digest}"
    )
    return EXIT_OK


async def _consents_export(args: argparse.Namespace, db: Database) -> int:
    rows = [
        {
            "account_id": c.account_id,
            "terms_version": c.terms_version,
            "policy_fingerprint": c.policy_fingerprint,
            "sig": c.sig.hex(),
            "accepted_at": c.accepted_at,
        }
        for c in await db.consents.all()
    ]
    args.out.write_text(json.dumps({"consents": rows}, indent=1) + "\n")
    print(f"{len(rows)} acceptances written to {args.out}")
    return EXIT_OK


async def _audit(args: argparse.Namespace, db: Database) -> int:
    if args.audit_command == "list":
        for e in await db.audit.entries():
            print(f"{e.seq:6}  {e.ts}  {e.action:16} {e.subject}  {e.detail}")
        return EXIT_OK
    problems = await db.audit.verify()
    count = await db.audit.count()
    if problems:
        for problem in problems:
            print(f"audit log BROKEN: {problem}")
        return EXIT_AUDIT
    print(f"audit log intact: {count} entries")
    return EXIT_OK
