"""``chat-escrow``: the organisation's and the officers' offline tool.

    chat-escrow keygen --kind org|officer|legal --name NAME --out FILE [--org-fingerprint FP]
    chat-escrow policy --org-key org.key --officer o1.pub [--officer o2.pub ...]
                       [--legal-signer legal.pub ...]
                       --threshold K [--allow-single-officer] [--days 365] [--version 1]
                       --out policy.json
    chat-escrow legal-order --key legal.key --policy policy.json --case CASE
                            --order REF --out order.json [--org-fingerprint FP]
    chat-escrow approve REQUEST.json --key officerN.key --out approvalN.json
                        [--org-fingerprint FP]
    chat-escrow fingerprint FILE
    chat-escrow certify --org-key org.key PENDING.json -o certs.json [--yes]

Runs without a network or a database; private keys never leave the officer's machine
(the hub only ever receives the signed approval file). Passphrases come from
--passphrase-file, else $CHAT_ESCROW_PASSPHRASE, else a prompt.

The organisation key is always pinned for ``approve``: ``--org-fingerprint``, else
$CHAT_ORG_FINGERPRINT, else the pin file an officer keygen with ``--org-fingerprint``
wrote next to the key (``officerN.org-pin``); with none of them ``approve`` refuses
(exit 2) rather than trust the key a policy names. A policy whose threshold is below 2
(one officer alone can open) needs ``--allow-single-officer``.

Exit codes (the shared table, protocol/exit_codes.py): 0 ok, 1 error, 2 usage, 3 wrong
passphrase (as for chat-client), 12 the request or policy does not verify (forged,
foreign, not signed by the client; as for chat-unseal).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol import frames as f
from protocol.ceremony import PendingCounselor
from protocol.clock import now_ms
from protocol.errors import CryptoError
from protocol.escrow import (
    EscrowError,
    RequestView,
    make_approval,
    make_legal_order,
    policy_fingerprint,
    sign_policy,
    verify_dispute,
    verify_policy,
)
from protocol.exit_codes import ExitCode, epilog
from protocol.opening import open_reason

from .certify import CertifyError, certify, certs_document, parse_pending
from .keyfiles import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    KeyFile,
    KeyFileError,
    PinError,
    WrongPassphrase,
    load_key,
    load_legal_public,
    load_public,
    read_passphrase,
    resolve_org_pin,
    write_key,
    write_org_pin,
    write_private,
)

__all__ = ["EXIT_FOREIGN", "EXIT_PASSPHRASE", "main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE
EXIT_FOREIGN = ExitCode.FOREIGN
#: A wrong passphrase is an authentication failure, the same code as chat-client's.
EXIT_PASSPHRASE = ExitCode.AUTH
EPILOG = epilog(EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PASSPHRASE, EXIT_FOREIGN)
DAY_MS = 86_400_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-escrow",
        description="Offline escrow key ceremony and dispute approvals (no server access).",
        epilog=EPILOG,
    )
    parser.add_argument("--passphrase-file", type=Path, help="first line is the passphrase")
    sub = parser.add_subparsers(dest="command", required=True)

    def keygen_options(p: argparse.ArgumentParser, *, name_required: bool = True) -> None:
        p.add_argument(
            "--name", required=name_required, help="e.g. officer1 or the organisation's name"
        )
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--kdf-ops", type=int, default=DEFAULT_OPSLIMIT, help="Argon2id opslimit")
        p.add_argument("--kdf-mem", type=int, default=DEFAULT_MEMLIMIT, help="Argon2id memlimit")

    def pin_option(p: argparse.ArgumentParser, help_text: str) -> None:
        p.add_argument(
            "--org-fingerprint",
            default=os.environ.get("CHAT_ORG_FINGERPRINT"),
            help=help_text + " (env CHAT_ORG_FINGERPRINT)",
        )

    pin_help = "officer keys: pin this organisation fingerprint next to the key"
    p = sub.add_parser("keygen", help="make an organisation or officer key file (+ .pub)")
    p.add_argument("--kind", choices=["org", "officer", "legal"], required=True)
    keygen_options(p)
    pin_option(p, pin_help)
    # The spellings of the key-ceremony guide: org-keygen, officer-keygen.
    p = sub.add_parser("org-keygen", help="make the organisation key file (+ .pub)")
    keygen_options(p, name_required=False)
    p.set_defaults(command="keygen", kind="org", name_default="organisation")
    p = sub.add_parser("officer-keygen", help="make a dispute officer's key file (+ .pub)")
    keygen_options(p)
    pin_option(p, pin_help)
    p.set_defaults(command="keygen", kind="officer")

    p = sub.add_parser("policy", help="sign a k-of-n escrow policy with the org key")
    p.add_argument("action", nargs="?", choices=["create"], help="optional: `policy create`")
    p.add_argument("--org-key", type=Path, required=True)
    p.add_argument("--officer", type=Path, action="append", required=True, help="officer .pub")
    p.add_argument(
        "--legal-signer",
        type=Path,
        action="append",
        default=[],
        help="a legal-order key's .pub: it may sign legal orders under this policy",
    )
    p.add_argument("--threshold", type=int, required=True)
    p.add_argument(
        "--allow-single-officer",
        action="store_true",
        help="allow a threshold below 2 (one officer alone could open every case)",
    )
    p.add_argument("--days", type=int, default=365, help="validity from now (default 365)")
    p.add_argument("--version", type=int, default=1, help="policy version (default 1)")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("approve", help="sign an approval of a dispute request")
    p.add_argument("request", type=Path, help="output of chat-server disputes show ID --json")
    p.add_argument("--key", type=Path, required=True, help="your officer key file")
    p.add_argument("--out", type=Path, required=True)
    pin_option(p, "pinned organisation key fingerprint (else the key's .org-pin file)")

    p = sub.add_parser("legal-order", help="sign a legal order to open one case")
    p.add_argument("--key", type=Path, required=True, help="your legal-order key file")
    p.add_argument("--policy", type=Path, required=True, help="the installed policy.json")
    p.add_argument("--case", required=True, help="the case to open")
    p.add_argument("--order", required=True, help="the order's reference (e.g. court file)")
    p.add_argument("--out", type=Path, required=True)
    pin_option(p, "pinned organisation key fingerprint (else the key's .org-pin file)")

    p = sub.add_parser("fingerprint", help="print the fingerprint of a key, .pub or policy")
    p.add_argument("file", type=Path)

    p = sub.add_parser("certify", help="certify counselors with the org key (certify.py)")
    p.add_argument("pending", type=Path, help="chat-server admin counselors pending --json")
    p.add_argument("--org-key", type=Path, required=True)
    p.add_argument("-o", "--out", type=Path, required=True, help="certs.json to write")
    p.add_argument("--yes", action="store_true", help="certify all without asking")
    for command in sub.choices.values():
        command.epilog = EPILOG
    return parser


def _keygen(args: argparse.Namespace) -> int:
    if args.out.exists():
        print(f"chat-escrow: {args.out} exists; not overwriting", file=sys.stderr)
        return EXIT_USAGE
    passphrase = read_passphrase(args.passphrase_file, "New key passphrase: ", confirm=True)
    if not passphrase:
        print("chat-escrow: empty passphrase", file=sys.stderr)
        return EXIT_USAGE
    key = KeyFile(
        kind=args.kind,
        name=args.name,
        sign_key=SigningKey.generate(),
        box_key=PrivateKey.generate() if args.kind == "officer" else None,
    )
    pub = write_key(args.out, key, passphrase, opslimit=args.kdf_ops, memlimit=args.kdf_mem)
    print(f"{args.kind} key {args.name}: {args.out} (public part: {pub})")
    print(f"fingerprint: {key.fingerprint}")
    pin = args.org_fingerprint if args.kind in ("officer", "legal") else None
    if pin:
        print(f"organisation fingerprint pinned in {write_org_pin(args.out, pin)}")
    return EXIT_OK


def _policy(args: argparse.Namespace) -> int:
    if args.threshold < 2 and not args.allow_single_officer:
        print(
            f"chat-escrow: a threshold of {args.threshold} lets one officer alone open "
            "every escrowed case; pass --allow-single-officer if that is intended",
            file=sys.stderr,
        )
        return EXIT_USAGE
    org = load_key(args.org_key, read_passphrase(args.passphrase_file, "Org passphrase: "), "org")
    officers = [load_public(p) for p in args.officer]
    legal = [load_legal_public(p) for p in args.legal_signer]
    now = now_ms()
    policy = f.EscrowPolicy(
        version=args.version,
        officers=officers,
        threshold=args.threshold,
        not_before=now - DAY_MS,  # tolerate clocks a little behind
        not_after=now + args.days * DAY_MS,
        org_sign_pk=org.sign_pk,
        legal_signers=legal,
    )
    signed = sign_policy(org.sign_key, policy)
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(signed), indent=1) + b"\n")
    print(f"policy {args.threshold}-of-{len(officers)} written to {args.out}")
    print(f"policy fingerprint: {policy_fingerprint(policy)}")
    print(f"organisation fingerprint (pin in clients): {org.fingerprint}")
    return EXIT_OK


def _approve(args: argparse.Namespace) -> int:
    org_fp = resolve_org_pin(args.org_fingerprint, [args.key])
    try:
        view = msgspec.json.decode(args.request.read_bytes(), type=RequestView)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"chat-escrow: {args.request} is not a dispute request: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    key = load_key(
        args.key, read_passphrase(args.passphrase_file, "Officer passphrase: "), "officer"
    )
    try:
        verify_policy(view.policy, org_fp)
        if view.request.policy_fingerprint != policy_fingerprint(view.policy.policy):
            raise EscrowError("the request was made under another policy")
        verify_dispute(view.request, policy=view.policy.policy)
    except EscrowError as exc:
        print(f"chat-escrow: refusing to approve: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    request = view.request
    policy = view.policy.policy
    index = next((i for i, o in enumerate(policy.officers) if o.sign_pk == key.sign_pk), None)
    if index is None or key.box_key is None:
        print("chat-escrow: this key is not an officer of the request's policy", file=sys.stderr)
        return EXIT_FOREIGN
    print(f"request {request.request_id} for case {request.case_id} ({request.kind})")
    print(f"filed {_time(request.timestamp)}; policy {request.policy_fingerprint}")
    if request.kind == "legal":
        order = request.order
        assert order is not None  # verify_dispute checked
        signer = policy.legal_signers[order.signer_index]
        print(f"legal order: {request.legal_order}")
        print(
            f"  signed {_time(order.issued_at)} by {signer.name}, key fingerprint "
            f"{crypto.fingerprint(signer.sign_pk)} (a legal signer of the policy)"
        )
    else:
        assert request.requester_sign_pk is not None  # verify_dispute checked
        shown = _client_fingerprint(view)
        if shown is None:
            print(
                "chat-escrow: refusing to approve: the request comes without the client's "
                "signed box key, so the client's fingerprint cannot be shown",
                file=sys.stderr,
            )
            return EXIT_FOREIGN
        print(f"client {request.requester_id}, key fingerprint {shown}")
        print("  (the same key signed the client's consent and case key; compare this")
        print("   fingerprint with the client's own before approving)")
        if index >= len(request.reason_ct):
            print("chat-escrow: the reason is not sealed to this officer", file=sys.stderr)
            return EXIT_FOREIGN
        try:
            print(f"reason: {open_reason(request.reason_ct[index], key.box_key)}")
        except EscrowError as exc:
            print(f"chat-escrow: the reason does not open: {exc}", file=sys.stderr)
            return EXIT_FOREIGN
    head = view.audit_head
    print(
        f"audit log head you are shown: seq {head.seq}, {head.hash.hex()} (your approval signs it)"
    )
    approval = make_approval(key.sign_key, request, policy, now_ms(), head)
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(approval), indent=1) + b"\n")
    print(f"approval by officer #{index} ({policy.officers[index].name}) written to {args.out}")
    return EXIT_OK


def _client_fingerprint(view: RequestView) -> str | None:
    """The requester's account fingerprint (crypto.fingerprint_v2: the one its own client
    shows), once its box key's signature by the request's key verifies; else None."""
    sign_pk = view.request.requester_sign_pk
    box_pk, box_sig = view.requester_box_pk, view.requester_box_sig
    if sign_pk is None or box_pk is None or box_sig is None:
        return None
    try:
        crypto.verify_box_key(sign_pk, box_pk, box_sig)
    except CryptoError:
        return None
    return crypto.fingerprint_v2(sign_pk, box_pk)


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _legal_order(args: argparse.Namespace) -> int:
    org_fp = resolve_org_pin(args.org_fingerprint, [args.key])
    try:
        signed = msgspec.json.decode(args.policy.read_bytes(), type=f.SignedEscrowPolicy)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"chat-escrow: {args.policy} is not a policy: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    key = load_key(args.key, read_passphrase(args.passphrase_file, "Passphrase: "), "legal")
    try:
        verify_policy(signed, org_fp, now_ms())
        order = make_legal_order(key.sign_key, signed.policy, args.case, args.order, now_ms())
    except EscrowError as exc:
        print(f"chat-escrow: refusing to sign: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    write_private(args.out, msgspec.json.format(msgspec.json.encode(order), indent=1) + b"\n")
    print(f"legal order {args.order!r} for case {args.case} signed as {key.name}: {args.out}")
    print("record it with: chat-server disputes open-legal --order-file " + str(args.out))
    return EXIT_OK


def _fingerprint(args: argparse.Namespace) -> int:
    data = json.loads(args.file.read_text())
    if isinstance(data, dict) and "policy" in data and "sig" in data:
        signed = msgspec.json.decode(args.file.read_bytes(), type=f.SignedEscrowPolicy)
        print(f"policy: {policy_fingerprint(signed.policy)}")
        print(f"organisation: {crypto.fingerprint(signed.policy.org_sign_pk)}")
        return EXIT_OK
    if isinstance(data, dict) and "fingerprint" in data:
        print(data["fingerprint"])
        return EXIT_OK
    print(f"chat-escrow: {args.file} is not a key, .pub or policy file", file=sys.stderr)
    return EXIT_USAGE


def _certify(args: argparse.Namespace) -> int:
    try:
        pending = parse_pending(args.pending.read_bytes())
    except CertifyError as exc:
        print(f"chat-escrow: {args.pending}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    org = load_key(args.org_key, read_passphrase(args.passphrase_file, "Org passphrase: "), "org")

    def confirm(p: PendingCounselor, fp: str) -> bool:
        if args.yes:
            return True
        try:
            answer = input(f"certify {p.handle} as a counselor? [y/N] ")
        except EOFError:  # no terminal: nobody said yes
            return False
        return answer.strip().lower() in ("y", "yes")

    try:
        certs = certify(org, pending, now=now_ms(), confirm=confirm, say=print)
    except CertifyError as exc:
        print(f"chat-escrow: refusing to certify: {exc}", file=sys.stderr)
        return EXIT_FOREIGN
    args.out.write_bytes(certs_document(certs))
    print(f"{len(certs)} of {len(pending)} counselor(s) certified: {args.out}")
    print(f"organisation fingerprint (pin in clients): {org.fingerprint}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "name", "") is None:
        args.name = args.name_default
    commands = {
        "keygen": _keygen,
        "policy": _policy,
        "approve": _approve,
        "legal-order": _legal_order,
        "fingerprint": _fingerprint,
        "certify": _certify,
    }
    try:
        return commands[args.command](args)
    except WrongPassphrase as exc:
        print(f"chat-escrow: {exc}", file=sys.stderr)
        return EXIT_PASSPHRASE
    except PinError as exc:
        print(f"chat-escrow: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyFileError, EscrowError, OSError, ValueError) as exc:
        print(f"chat-escrow: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
