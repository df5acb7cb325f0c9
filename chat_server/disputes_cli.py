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
Exit codes: 0 ok, 1 error (refused, not found, not enough approvals), 2 usage,
3 the audit log is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import msgspec
import nacl.encoding
import nacl.hash
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol import frames as f
from protocol.bundle import (
    Bundle,
    BundleCapsule,
    BundleCase,
    BundleEpoch,
    BundleParticipant,
    ChainHead,
    encode_bundle,
)
from protocol.chain import sign_head
from protocol.clock import now_ms
from protocol.errors import Conflict, NotFound, ProtocolError
from protocol.escrow import (
    Approval,
    DisputeDocument,
    EscrowError,
    RequestView,
    policy_fingerprint,
    verify_approval,
    verify_policy,
)
from protocol.terms import CURRENT_TERMS_VERSION
from storage.disputes import DisputeRecord
from storage.engine import Database, open_database

from .config import Config

__all__ = ["add_parsers", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUDIT = 0, 1, 2, 3
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


async def _with_db(config: Config, fn: Any) -> int:
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
    command = args.disputes_command
    if command == "list":
        return await _list(db)
    if command == "show":
        return await _show(args, db)
    if command == "approve":
        return await _approve(args, db)
    if command == "export":
        return await _export(args, config, db)
    if command == "open-legal":
        return await _open_legal(args, db)
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


async def _view(db: Database, record: DisputeRecord) -> RequestView:
    doc = msgspec.json.decode(record.document, type=DisputeDocument)
    policy = await db.escrow.by_fingerprint(doc.policy_fingerprint)
    if policy is None:
        raise NotFound("the request's escrow policy is not installed here")
    return RequestView(
        request=doc,
        policy=msgspec.json.decode(policy.signed_policy, type=f.SignedEscrowPolicy),
        state=record.state,
        approvals=[msgspec.json.decode(a, type=Approval) for a in record.approvals],
    )


async def _list(db: Database) -> int:
    for record in await db.disputes.find():
        print(f"{record.id}  {record.case_id}  {record.kind:6}  {record.state}")
    return EXIT_OK


async def _show(args: argparse.Namespace, db: Database) -> int:
    view = await _view(db, await db.disputes.get(args.request_id))
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


async def _approve(args: argparse.Namespace, db: Database) -> int:
    record = await db.disputes.get(args.request_id)
    view = await _view(db, record)
    approval = msgspec.json.decode(args.approval.read_bytes(), type=Approval)
    try:
        verify_approval(approval, view.request, view.policy.policy)
    except EscrowError as exc:
        print(f"chat-server: approval refused: {exc}", file=sys.stderr)
        return EXIT_ERROR
    policy = view.policy.policy
    try:
        updated = await db.disputes.add_approval(
            record.id,
            approval.officer_index,
            _encoder.encode(approval),
            policy.threshold,
            now_ms(),
        )
    except Conflict as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"approval by {policy.officers[approval.officer_index].name} recorded; "
        f"{len(updated.approvals)}/{policy.threshold}, state {updated.state}"
    )
    return EXIT_OK


async def _open_legal(args: argparse.Namespace, db: Database) -> int:
    case = await db.cases.get(args.case_id)
    if case is None:
        print("chat-server: no such case", file=sys.stderr)
        return EXIT_ERROR
    installed = await db.escrow.current()
    if installed is None:
        print("chat-server: no escrow policy is installed", file=sys.stderr)
        return EXIT_ERROR
    now = now_ms()
    doc = DisputeDocument(
        request_id="dsp_" + secrets.token_hex(10),
        kind="legal",
        case_id=case.id,
        timestamp=now,
        policy_fingerprint=installed.fingerprint,
        reason_ct=[],
        legal_order=args.order,
        created_at=now,
    )
    await db.disputes.create(
        dispute_id=doc.request_id,
        case_id=case.id,
        kind="legal",
        requester_id=None,
        document=_encoder.encode(doc),
        policy_fingerprint=installed.fingerprint,
        legal_order=args.order,
        now_ms=now,
    )
    print(doc.request_id)
    return EXIT_OK


async def _export(args: argparse.Namespace, config: Config, db: Database) -> int:
    record = await db.disputes.get(args.request_id)
    view = await _view(db, record)
    policy = view.policy.policy
    valid: dict[int, Approval] = {}
    for approval in view.approvals:
        try:
            verify_approval(approval, view.request, policy)
        except EscrowError:
            continue
        valid[approval.officer_index] = approval
    if len(valid) < policy.threshold:
        print(
            f"chat-server: {len(valid)} valid approvals; the policy requires {policy.threshold}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    bundle = await build_bundle(db, config, view, list(valid.values()))
    data = encode_bundle(bundle)
    args.out.write_bytes(data)
    digest = nacl.hash.blake2b(data, digest_size=32, encoder=nacl.encoding.HexEncoder).decode()
    await db.disputes.mark_exported(record.id, digest, len(bundle.messages), now_ms())
    print(
        f"bundle written to {args.out}: {len(bundle.messages)} messages, "
        f"{len(bundle.epochs)} epochs; BLAKE2b {digest}"
    )
    return EXIT_OK


async def build_bundle(
    db: Database, config: Config, view: RequestView, approvals: list[Approval]
) -> Bundle:
    case = await db.cases.get(view.request.case_id)
    if case is None:
        raise NotFound("the request's case is gone")
    ids = [a for a in (case.client_id, case.counselor_id) if a is not None]
    accounts = {a.id: a for a in await db.accounts.by_ids(ids)}
    messages = []
    after = 0
    while True:
        batch = await db.messages.range(case.id, after, 500)
        messages.extend(batch)
        if len(batch) < 500:
            break
        after = batch[-1].seq
    capsules: dict[int, list[BundleCapsule]] = {}
    for c in await db.escrow.capsules_for(case.id):
        if c.policy_fingerprint != policy_fingerprint(view.policy.policy):
            continue
        capsules.setdefault(c.epoch, []).append(
            BundleCapsule(
                depositor_id=c.depositor_id, capsule=msgspec.json.decode(c.capsule, type=f.Capsule)
            )
        )
    epochs = []
    for epoch in range(1, case.epoch + 1):
        key = await db.cases.epoch_key(case.id, epoch)
        if key is None:
            continue
        epochs.append(
            BundleEpoch(
                epoch=epoch,
                creator_id=key.creator_id,
                commitment=key.commitment,
                commitment_sig=key.commitment_sig,
                capsules=capsules.get(epoch, []),
            )
        )
    # The hub's own signing key (config.state_dir/server.key), as chat_server/app.py uses.
    server = crypto.Identity(SigningKey(config.server_key_seed()), PrivateKey.generate())
    last_seq = messages[-1].seq if messages else 0
    head = messages[-1].chain_hash if messages else bytes(32)
    return Bundle(
        exported_at=now_ms(),
        case=BundleCase(
            case_id=case.id,
            client_id=case.client_id,
            counselor_id=case.counselor_id,
            state=case.state,
            language=case.language,
            created_at=case.created_at,
        ),
        participants=[
            BundleParticipant(
                account_id=a.id, role=a.role, handle=a.handle, sign_pk=a.sign_pk, box_pk=a.box_pk
            )
            for a in (accounts[i] for i in ids if i in accounts)
        ],
        policy=view.policy,
        epochs=epochs,
        messages=messages,
        chain_head=ChainHead(
            seq=last_seq, hash=head, sig=sign_head(server, case.id, last_seq, head)
        ),
        server_sign_pk=server.sign_pk,
        request=view.request,
        approvals=sorted(approvals, key=lambda a: a.officer_index),
    )


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
