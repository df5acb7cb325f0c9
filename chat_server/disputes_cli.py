"""The officers' and administrators' side of escrow, run next to the database (not
inside the hub process) by ``chat-server``:

    chat-server admin escrow-policy install policy.json --org-fingerprint FP
                                            [--terms-version N]
    chat-server disputes list
    chat-server disputes show ID
    chat-server disputes approve ID --approval approvalN.json
    chat-server disputes export ID --out BUNDLE
    chat-server disputes open-legal --order-file order.json
    chat-server consents export --out FILE
    chat-server audit verify [--anchor FILE ...] | list

Every ``disputes``, ``consents`` and ``audit`` command takes ``--json``: one JSON
document on stdout instead of the text lines (``show --json`` is the file officers
approve). ``escrow-policy install`` also records the organisation fingerprint the
operator confirmed in ``state_dir/org-fingerprint``, which the hub then serves to the
counselor web chat as its pin when it was started without ``--org-fingerprint``.

``audit verify`` checks the log's hash chain; each ``--anchor`` (an approval file, a
request shown with ``show --json``, or a bundle, kept outside the database) names an
audit head the log must still hold as it was: deleting the newest rows leaves a chain
that is whole, but shorter than an anchor (exit 3).

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

from protocol import crypto
from protocol import frames as f
from protocol.bundle_format import decode_bundle
from protocol.clock import now_ms
from protocol.errors import ProtocolError
from protocol.escrow import (
    Approval,
    AuditHead,
    EscrowError,
    LegalOrder,
    RequestView,
    verify_policy,
)
from protocol.exit_codes import ExitCode
from protocol.terms import CURRENT_TERMS_VERSION
from storage.engine import Database, open_database

from .config import ORG_FINGERPRINT_FILE, Config
from .disputes import DisputeService

__all__ = ["add_parsers", "add_policy_parser", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
#: The shared table's "tampered record" (protocol/exit_codes.py).
EXIT_AUDIT = int(ExitCode.TAMPERED)
_encoder = msgspec.json.Encoder()


def add_parsers(sub: Any, common_options: Any) -> None:
    """Add ``disputes``, ``consents`` and ``audit`` to chat-server's subcommands."""

    def common(p: argparse.ArgumentParser) -> None:
        common_options(p)
        p.add_argument("--json", action="store_true", help="print one JSON document")

    disputes = sub.add_parser("disputes", help="dispute requests (escrow officers)")
    dsub = disputes.add_subparsers(dest="disputes_command", required=True)
    p = dsub.add_parser("list", help="list dispute requests")
    common(p)
    p = dsub.add_parser("show", help="show a request (--json: the file officers approve)")
    common(p)
    p.add_argument("request_id")
    p = dsub.add_parser("approve", help="record an officer's offline-signed approval")
    common(p)
    p.add_argument("request_id")
    p.add_argument("--approval", type=Path, required=True, help="from chat-escrow approve")
    p = dsub.add_parser("export", help="write the dispute bundle (needs k approvals)")
    common(p)
    p.add_argument("request_id")
    p.add_argument("--out", type=Path, required=True)
    p = dsub.add_parser("open-legal", help="record a signed legal order (chat-escrow legal-order)")
    common(p)
    p.add_argument("--order-file", type=Path, required=True, help="from chat-escrow legal-order")

    consents = sub.add_parser("consents", help="terms-of-service acceptances")
    csub = consents.add_subparsers(dest="consents_command", required=True)
    p = csub.add_parser("export", help="write every acceptance as JSON")
    common(p)
    p.add_argument("--out", type=Path, required=True)

    audit = sub.add_parser("audit", help="the escrow audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="check the audit log's hash chain (and anchors)")
    common(p)
    p.add_argument(
        "--anchor",
        type=Path,
        action="append",
        default=[],
        help="an approval, request (show --json) or bundle file: the audit head it "
        "carries must still be in the log",
    )
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


def _emit(args: argparse.Namespace, lines: list[str], data: object) -> None:
    """The text lines, or with --json the one JSON document."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        for line in lines:
            print(line)


async def _dispatch(args: argparse.Namespace, config: Config, db: Database) -> int:
    if args.command == "admin":
        return await _install_policy(args, config, db)
    if args.command == "consents":
        return await _consents_export(args, db)
    if args.command == "audit":
        return await _audit(args, db)
    disputes = DisputeService(db)
    command = args.disputes_command
    if command == "list":
        return await _list(args, disputes)
    if command == "show":
        return await _show(args, disputes)
    if command == "approve":
        return await _approve(args, disputes)
    if command == "export":
        return await _export(args, config, disputes)
    if command == "open-legal":
        return await _open_legal(args, disputes)
    return EXIT_USAGE


async def _install_policy(args: argparse.Namespace, config: Config, db: Database) -> int:
    signed = msgspec.json.decode(args.policy.read_bytes(), type=f.SignedEscrowPolicy)
    try:
        fp = verify_policy(signed, args.org_fingerprint, now_ms())
    except EscrowError as exc:
        print(f"chat-server: policy refused: {exc}", file=sys.stderr)
        return EXIT_ERROR
    await db.escrow.install(fp, _encoder.encode(signed), args.terms_version, now_ms())
    policy = signed.policy
    # The operator confirmed this organisation: the web chat's default pin from now on.
    org_fp = crypto.fingerprint(policy.org_sign_pk)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / ORG_FINGERPRINT_FILE).write_text(org_fp + "\n", encoding="utf-8")
    print(f"installed escrow policy {fp}")
    print(
        f"{policy.threshold}-of-{len(policy.officers)}, terms version {args.terms_version}; "
        "clients must consent again before opening cases"
    )
    if policy.threshold < 2:
        print("WARNING: threshold 1: a single officer alone can open every escrowed case")
    print(f"organisation {org_fp} recorded as the web chat's pin")
    return EXIT_OK


async def _list(args: argparse.Namespace, disputes: DisputeService) -> int:
    records = await disputes.all()
    _emit(
        args,
        [f"{r.id}  {r.case_id}  {r.kind:6}  {r.state}" for r in records],
        {
            "disputes": [
                {
                    "request_id": r.id,
                    "case_id": r.case_id,
                    "kind": r.kind,
                    "state": r.state,
                    "requester_id": r.requester_id,
                    "approvals": len(r.approvals),
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in records
            ]
        },
    )
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
    count = len(approved.record.approvals)
    _emit(
        args,
        [
            f"approval by {approved.officer_name} recorded; "
            f"{count}/{approved.threshold}, state {approved.record.state}"
        ],
        {
            "request_id": approved.record.id,
            "officer": approved.officer_name,
            "approvals": count,
            "threshold": approved.threshold,
            "state": approved.record.state,
        },
    )
    return EXIT_OK


async def _open_legal(args: argparse.Namespace, disputes: DisputeService) -> int:
    order = msgspec.json.decode(args.order_file.read_bytes(), type=LegalOrder)
    try:
        doc = await disputes.open_legal(order)
    except EscrowError as exc:
        print(f"chat-server: legal order refused: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _emit(
        args,
        [doc.request_id],
        {"request_id": doc.request_id, "case_id": doc.case_id, "kind": doc.kind},
    )
    return EXIT_OK


async def _export(args: argparse.Namespace, config: Config, disputes: DisputeService) -> int:
    exported = await disputes.export(args.request_id, config.server_key())
    args.out.write_bytes(exported.data)
    _emit(
        args,
        [
            f"bundle written to {args.out}: {exported.messages} messages, "
            f"{exported.epochs} epochs; BLAKE2b {exported.digest}"
        ],
        {
            "request_id": args.request_id,
            "bundle": str(args.out),
            "messages": exported.messages,
            "epochs": exported.epochs,
            "blake2b": exported.digest,
        },
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
    _emit(
        args,
        [f"{len(rows)} acceptances written to {args.out}"],
        {"out": str(args.out), "consents": len(rows)},
    )
    return EXIT_OK


def _anchors(path: Path) -> list[tuple[int, bytes]]:
    """The audit heads a file carries: an approval's, a shown request's (and its
    approvals'), or a bundle's (and its approvals'). ValueError if it has none."""
    data = path.read_bytes()
    kind = json.loads(data).get("format") if data.lstrip().startswith(b"{") else None
    heads: list[AuditHead]
    if kind == "counsel-chat/dispute-bundle":
        bundle = decode_bundle(data)
        heads = [bundle.audit_head, *(a.audit_head for a in bundle.approvals)]
    elif kind == "counsel-chat/dispute-request":
        view = msgspec.json.decode(data, type=RequestView)
        heads = [view.audit_head, *(a.audit_head for a in view.approvals)]
    else:
        try:
            heads = [msgspec.json.decode(data, type=Approval).audit_head]
        except msgspec.ValidationError:
            raise ValueError(f"{path} is not an approval, request or bundle") from None
    return [(h.seq, h.hash) for h in heads]


async def _audit(args: argparse.Namespace, db: Database) -> int:
    if args.audit_command == "list":
        entries = await db.audit.entries()
        _emit(
            args,
            [f"{e.seq:6}  {e.ts}  {e.action:16} {e.subject}  {e.detail}" for e in entries],
            {
                "entries": [
                    {
                        "seq": e.seq,
                        "ts": e.ts,
                        "action": e.action,
                        "subject": e.subject,
                        "detail": e.detail,
                        "hash": e.hash.hex(),
                    }
                    for e in entries
                ]
            },
        )
        return EXIT_OK
    problems = await db.audit.verify()
    for path in args.anchor:
        for seq, digest in _anchors(path):
            problem = await db.audit.check_anchor(seq, digest)
            if problem is not None:
                problems.append(f"anchor {path.name}: {problem}")
    count = await db.audit.count()
    _emit(
        args,
        [f"audit log BROKEN: {p}" for p in problems] or [f"audit log intact: {count} entries"],
        {"intact": not problems, "entries": count, "problems": list(problems)},
    )
    return EXIT_AUDIT if problems else EXIT_OK
