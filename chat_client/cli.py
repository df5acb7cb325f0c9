"""``chat-client``: the terminal client.

    chat-client [--server URL] [--home DIR] [--json] [--passphrase-file F] COMMAND ...

The passphrase comes from --passphrase-file, else $CHAT_PASSPHRASE, else a prompt on
the terminal (asked twice on register). Exit codes are the shared table of
:mod:`protocol.exit_codes` (0 ok, 1 error, 2 usage, 3 authentication failed or wrong
passphrase, 4 connection failed, 5 security refusal: KDF downgrade, changed or unsigned
keys, uncertified counselor). Errors go to stderr as one line; with --json also as
``{"error": code, "message": ...}`` on stdout. The wording of the user-facing errors is
fixed in :mod:`chat_client.wording` (README, "Messages").
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from protocol import crypto
from protocol import errors as pe
from protocol.exit_codes import ExitCode, epilog
from protocol.frames import Handle

from .connection import tls_context
from .errors import (
    CaseNotReady,
    ClientClosed,
    ClientError,
    ConnectFailed,
    KdfTooWeak,
    KeyStoreError,
    RequestInterrupted,
    SecurityRefusal,
    SessionEnded,
    WeakPassphrase,
)
from .keystore import KeyStore
from .models import Safety
from .safetext import block, escape
from .sdk import ChatClient
from .terminal import (
    DEFAULT_BACKLOG,
    Names,
    Printer,
    case_json,
    message_json,
    run_chat,
    run_watch,
    show_messages,
)
from .wording import (
    BAD_HANDLE,
    CONSENT_REQUIRED,
    LANGUAGE_NOT_OFFERED,
    NO_TERMINAL_TO_ASK,
    case_error,
    no_such_case,
    queue_place,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECT",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_SECURITY",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = int(ExitCode.OK)
EXIT_ERROR = int(ExitCode.ERROR)
EXIT_USAGE = int(ExitCode.USAGE)
EXIT_AUTH = int(ExitCode.AUTH)
EXIT_CONNECT = int(ExitCode.CONNECT)
#: A security refusal (SecurityRefusal: a pinned key changed, a downgrade, ...).
EXIT_SECURITY = int(ExitCode.SECURITY)

EPILOG = epilog(
    ExitCode.OK,
    ExitCode.ERROR,
    ExitCode.USAGE,
    ExitCode.AUTH,
    ExitCode.CONNECT,
    ExitCode.SECURITY,
)

DEFAULT_SERVER = "ws://127.0.0.1:8765/ws"
DEFAULT_HOME = "~/.chat-client"

#: What each server error code means to a user.
_FRIENDLY = {
    "auth_failed": "authentication failed",
    "forbidden": "not allowed",
    "not_found": "not found",
    "conflict": "conflict",
    "duplicate": "a different message was already sent with this id",
    "rate_limited": "too many requests; slow down",
    "limit_exceeded": "limit exceeded",
    "invalid": "the server rejected the request as invalid",
    "not_authenticated": "not authenticated",
    "consent_required": CONSENT_REQUIRED,
    "unavailable": "the server is unavailable; try again",
}


class UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


# -- argument parsing -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-client",
        description="End-to-end-encrypted counseling chat: terminal client. "
        "Keys stay in --home; the server only ever sees ciphertext.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("CHAT_SERVER"),
        help=f"hub WebSocket URL (env CHAT_SERVER; default {DEFAULT_SERVER}, or the "
        "server stored in --home for commands that use an existing account)",
    )
    parser.add_argument(
        "--home",
        default=os.environ.get("CHAT_HOME", DEFAULT_HOME),
        help=f"key store directory (env CHAT_HOME; default {DEFAULT_HOME})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the passphrase from the first line of this file "
        "(else env CHAT_PASSPHRASE, else a prompt)",
    )
    parser.add_argument(
        "--org-fingerprint",
        default=os.environ.get("CHAT_ORG_FINGERPRINT"),
        help="pinned organisation key that must sign the hub's escrow policy "
        "(env CHAT_ORG_FINGERPRINT; docs/DISPUTES.md)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=os.environ.get("CHAT_CA_FILE"),
        help="trust only the CA certificate(s) in this PEM file for a wss:// server "
        "(env CHAT_CA_FILE; default: the system's trusted CAs)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connection events")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("register", help="create an account and its keys in --home")
    p.add_argument("--handle", required=True, help="public handle (a-z, 0-9, . _ -)")
    p.add_argument("--invite", help="counselor invite code (makes a counselor account)")
    p.add_argument(
        "--kdf-ops",
        type=int,
        default=None,
        help="Argon2id opslimit (default: the one the server requires of every account)",
    )
    p.add_argument(
        "--kdf-mem",
        type=int,
        default=None,
        help="Argon2id memlimit in bytes (default: the one the server requires)",
    )

    p = sub.add_parser("login", help="log in on this device (fetches the wrapped keys)")
    p.add_argument("--handle", required=True, help="your handle")

    sub.add_parser("whoami", help="show the account in --home and its fingerprint (no network)")

    p = sub.add_parser(
        "safety", help="show your and a contact's fingerprints and your shared safety number"
    )
    p.add_argument("handle", help="the contact's handle (someone you share a case with)")

    p = sub.add_parser("trust", help="re-pin a contact whose keys changed (after checking)")
    p.add_argument("handle", help="the contact's handle")
    p.add_argument(
        "--reset",
        action="store_true",
        required=True,
        help="forget the pinned keys and pin the ones the hub presents now; do this only "
        "after comparing the safety number with the person out of band",
    )

    p = sub.add_parser("open-case", help="ask for counseling on a topic")
    p.add_argument("--topic", required=True, help="topic, e.g. anxiety")
    p.add_argument("--language", required=True, help="language code, e.g. en")

    sub.add_parser("cases", help="list your cases")

    p = sub.add_parser("send", help="send one message and wait for the server's ack")
    p.add_argument("case", help="case id")
    p.add_argument("text", help="message text")

    p = sub.add_parser("history", help="print a case's messages, decrypted and verified")
    p.add_argument("case", help="case id")

    p = sub.add_parser("chat", help="interactive chat in a case (EOF or /quit to leave)")
    p.add_argument("case", help="case id")
    p.add_argument(
        "--backlog",
        type=int,
        default=DEFAULT_BACKLOG,
        metavar="N",
        help=f"first show the case's last N messages (default {DEFAULT_BACKLOG}; 0: none)",
    )

    p = sub.add_parser("watch", help="print incoming messages as they arrive")
    p.add_argument("--case", help="only this case")
    p.add_argument("--count", type=int, help="exit after this many messages")
    p.add_argument("--timeout", type=float, help="exit after this many seconds")

    p = sub.add_parser("receipt", help="send a delivered/read receipt")
    p.add_argument("case", help="case id")
    p.add_argument("--kind", choices=["delivered", "read"], default="read")
    p.add_argument("--up-to", type=int, required=True, help="highest seq covered")

    p = sub.add_parser("close-case", help="close a case for both participants")
    p.add_argument("case", help="case id")

    p = sub.add_parser("logout", help="revoke this device's session token")
    p.add_argument(
        "--all",
        action="store_true",
        dest="everywhere",
        help="revoke every session of the account, on every device",
    )

    p = sub.add_parser("consent", help="show the terms (escrow policy) and accept them")
    p.add_argument("--yes", action="store_true", help="accept without asking")

    p = sub.add_parser("dispute", help="ask the escrow officers to review a case")
    p.add_argument("case", help="case id")
    p.add_argument("--reason", required=True, help="why (sealed to the officers)")

    sub.add_parser("disputes", help="list your dispute requests and their states")
    for command in sub.choices.values():
        command.epilog = EPILOG
    return parser


# -- passphrase -------------------------------------------------------------------------


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    if args.passphrase_file is not None:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read passphrase file: {exc.strerror}") from None
        passphrase = text.splitlines()[0] if text else ""
    elif os.environ.get("CHAT_PASSPHRASE"):
        passphrase = os.environ["CHAT_PASSPHRASE"]
    elif not sys.stdin.isatty():
        # getpass would fall back to echoing on stdin with a GetPassWarning: refuse instead.
        raise UsageError(NO_TERMINAL_TO_ASK)
    else:
        try:
            passphrase = getpass.getpass("Passphrase: ")
            if confirm and getpass.getpass("Repeat passphrase: ") != passphrase:
                raise UsageError("passphrases do not match")
        except EOFError:  # the terminal went away while asking
            raise UsageError(NO_TERMINAL_TO_ASK) from None
    if not passphrase:
        raise UsageError("empty passphrase")
    return passphrase


# -- commands ---------------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser()


def server_url(value: str | None) -> str | None:
    """``--server`` as given, with the hub's chat endpoint ``/ws`` added to a bare origin
    (``ws://host:port`` or ``ws://host:port/``): that is where every hub serves it."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme in ("ws", "wss") and parts.path in ("", "/") and not parts.query:
        return urlunsplit((parts.scheme, parts.netloc, "/ws", "", ""))
    return value


def check_handle(handle: str) -> str:
    """``handle`` if the protocol accepts it, else a UsageError saying what is allowed."""
    try:
        return msgspec.convert(handle, Handle)
    except msgspec.ValidationError:
        raise UsageError(f"invalid handle {handle!r}: {BAD_HANDLE}") from None


async def _open(args: argparse.Namespace) -> ChatClient:
    # An explicit --server / CHAT_SERVER wins; otherwise the server the account lives on.
    return await ChatClient.open(
        server_url(args.server),
        _home(args),
        read_passphrase(args),
        org_fingerprint=args.org_fingerprint,
        tls=_tls(args),
    )


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    return tls_context(Path(args.ca_file).expanduser() if args.ca_file else None)


def _account_summary(client: ChatClient) -> dict[str, Any]:
    return {
        "account_id": client.account_id,
        "handle": client.handle,
        "role": client.role,
        "fingerprint": client.fingerprint,
    }


def _print_account(out: Printer, summary: dict[str, Any]) -> None:
    out.emit(
        f"account  {summary['account_id']}\nhandle   {summary['handle']}\n"
        f"role     {summary['role']}\nidentity {summary['fingerprint']}",
        summary,
    )


async def cmd_register(args: argparse.Namespace, out: Printer) -> int:
    handle = check_handle(args.handle)
    passphrase = read_passphrase(args, confirm=True)
    client = await ChatClient.register(
        server_url(args.server) or DEFAULT_SERVER,
        handle,
        passphrase,
        home=_home(args),
        invite=args.invite,
        opslimit=args.kdf_ops,
        memlimit=args.kdf_mem,
        tls=_tls(args),
    )
    async with client:
        _print_account(out, _account_summary(client))
    return EXIT_OK


async def cmd_login(args: argparse.Namespace, out: Printer) -> int:
    handle = check_handle(args.handle)
    client = await ChatClient.login(
        server_url(args.server) or DEFAULT_SERVER,
        handle,
        read_passphrase(args),
        home=_home(args),
        tls=_tls(args),
    )
    async with client:
        _print_account(out, _account_summary(client))
    return EXIT_OK


async def cmd_whoami(args: argparse.Namespace, out: Printer) -> int:
    record = KeyStore.load(_home(args)).record
    summary = {
        "account_id": record.account_id,
        "handle": record.handle,
        "role": record.role,
        "fingerprint": crypto.fingerprint_v2(record.sign_pk, record.box_pk),
        "server": record.server,
    }
    _print_account(out, summary)
    return EXIT_OK


def _print_safety(out: Printer, client: ChatClient, view: Safety) -> None:
    entry = view.entry
    theirs = crypto.fingerprint_v2(entry.sign_pk, entry.box_pk)
    lines = [
        f"you      {client.handle:<20} {client.fingerprint}",
        f"contact  {entry.handle:<20} {theirs}",
        f"safety number  {view.safety_number}",
    ]
    if view.changed:
        lines.append(
            f"! KEYS CHANGED: pinned was {view.pinned_fingerprint}. Nothing is sealed to the "
            f"new keys. If the safety number matches what {entry.handle} reads to you, "
            f"run: chat-client trust {entry.handle} --reset"
        )
    lines.append(
        "Compare the safety number with the other person in person or by phone; it is the "
        "same on both sides only if nobody substituted a key."
    )
    out.emit(
        "\n".join(lines),
        {
            "handle": client.handle,
            "fingerprint": client.fingerprint,
            "contact": entry.handle,
            "contact_account_id": entry.account_id,
            "contact_fingerprint": theirs,
            "safety_number": view.safety_number,
            "changed": view.changed,
            "pinned_fingerprint": view.pinned_fingerprint,
        },
    )


async def cmd_safety(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        view = await client.safety(args.handle)
        _print_safety(out, client, view)
    return EXIT_SECURITY if view.changed else EXIT_OK


async def cmd_trust(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        view = await client.trust_reset(args.handle)
        if not out.as_json:
            out.line(f"pinned the keys {args.handle} presents now:")
        _print_safety(out, client, view)
    return EXIT_OK


async def cmd_open_case(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        case = await client.open_case(args.topic, args.language)
        queue = client.queue(case.case_id)
        text = f"{case.case_id} {case.state}"
        if queue is not None:
            text += ": " + queue_place(queue, escape(case.topic), escape(case.language))
        elif case.state == "assigned":
            text += ": a counselor has the case; talk with: chat-client chat " + case.case_id
        value = case_json(case)
        value["queue"] = msgspec.to_builtins(queue) if queue is not None else None
        out.emit(text, value)
    return EXIT_OK


async def cmd_cases(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        cases = await client.cases()
        if out.as_json:
            out.json({"cases": [case_json(c) for c in cases]})
            return EXIT_OK
        names = Names(client)
        await names.resolve(a for c in cases for a in (c.client_id, c.counselor_id) if a)
        if not cases:
            out.line("no cases")
            return EXIT_OK
        out.line(f"{'CASE':<28} {'STATE':<9} {'TOPIC':<14} {'LANG':<5} {'WITH':<20} LAST")
        for c in cases:
            other = c.counselor_id if c.client_id == client.account_id else c.client_id
            with_ = names[other] if other else "-"
            out.line(
                f"{c.case_id:<28} {c.state:<9} {escape(c.topic):<14} {escape(c.language):<5} "
                f"{with_:<20} {c.last_seq}"
            )
    return EXIT_OK


async def cmd_send(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        sent = await client.send(args.case, args.text)
        out.emit(
            f"sent seq {sent.seq}" + (" (duplicate)" if sent.duplicate else ""),
            {
                "case_id": sent.case_id,
                "seq": sent.seq,
                "client_msg_id": sent.client_msg_id,
                "chain_hash": sent.chain_hash.hex(),
                "duplicate": sent.duplicate,
            },
        )
    return EXIT_OK


async def cmd_history(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        messages, problems = await client.history_report(args.case)
        names = Names(client)
        if out.as_json:
            await names.resolve(m.sender_id for m in messages)
            out.json(
                {
                    "case_id": args.case,
                    "messages": [message_json(m, names) for m in messages],
                    "order_problems": [
                        {"seq": p.seq, "kind": p.kind, "sender_id": p.sender_id, "detail": p.detail}
                        for p in problems
                    ],
                }
            )
            return EXIT_OK
        await show_messages(client, messages, out, names)
        bad = sum(1 for m in messages if not m.verified)
        if bad:
            out.line(f"! {bad} of {len(messages)} messages did NOT verify")
        for p in problems:
            out.line(f"! WARNING history does not match what was signed: {escape(str(p))}")
    return EXIT_OK


async def cmd_chat(args: argparse.Namespace, out: Printer) -> int:
    if args.backlog < 0:
        raise UsageError("--backlog must be 0 or more")
    async with await _open(args) as client:
        case = next((c for c in await client.cases() if c.case_id == args.case), None)
        if case is None:
            raise CaseNotReady(no_such_case(args.case))
        return await run_chat(client, case, out, backlog=args.backlog)


async def cmd_watch(args: argparse.Namespace, out: Printer) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    async with await _open(args) as client:
        return await run_watch(
            client, out, case_id=args.case, count=args.count, seconds=args.timeout
        )


async def cmd_receipt(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        await client.receipt(args.case, args.kind, args.up_to)
        out.emit(f"{args.kind} up to {args.up_to}", {"ok": True})
    return EXIT_OK


async def cmd_close_case(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        await client.close_case(args.case)
        out.emit(f"{args.case} closed", {"case_id": args.case, "state": "closed"})
    return EXIT_OK


async def cmd_logout(args: argparse.Namespace, out: Printer) -> int:
    client = await _open(args)
    await client.logout(everywhere=args.everywhere)
    out.emit(
        "logged out everywhere" if args.everywhere else "logged out",
        {"ok": True, "all": args.everywhere},
    )
    return EXIT_OK


async def cmd_consent(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        terms = await client.terms()
        if terms is None:
            out.emit("this hub has no escrow policy: nothing to accept", {"escrow": False})
            return EXIT_OK
        if not out.as_json:
            print(block(terms.text))
            print()
            print(f"Organisation key fingerprint: {terms.org_fingerprint}")
            if terms.tofu:
                print(
                    "  Not pinned yet: accepting pins it in this home (trust on first use)."
                    " Compare it with the fingerprint the service publishes."
                )
        if not args.yes:
            answer = (await asyncio.to_thread(input, "Accept these terms? [y/N] ")).strip().lower()
            if answer not in ("y", "yes"):
                out.emit("not accepted", {"accepted": False})
                return EXIT_ERROR
        # Exactly the policy and terms version shown above: no second fetch.
        await client.consent(terms)
        out.emit(
            f"accepted terms version {terms.version} under policy {terms.policy_fingerprint}"
            + (f"; organisation {terms.org_fingerprint} pinned" if terms.tofu else ""),
            {
                "accepted": True,
                "terms_version": terms.version,
                "policy_fingerprint": terms.policy_fingerprint,
                "org_fingerprint": terms.org_fingerprint,
                "org_pinned_now": terms.tofu,
            },
        )
    return EXIT_OK


def _dispute_json(d: Any) -> dict[str, Any]:
    return {
        "request_id": d.request_id,
        "case_id": d.case_id,
        "state": d.state,
        "created_at": d.created_at,
        "kind": d.kind,
        "legal_order": d.legal_order,
    }


async def cmd_dispute(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        d = await client.file_dispute(args.case, args.reason)
        out.emit(f"{d.request_id} {d.state}", _dispute_json(d))
    return EXIT_OK


async def cmd_disputes(args: argparse.Namespace, out: Printer) -> int:
    async with await _open(args) as client:
        items = await client.disputes()
        if out.as_json:
            out.json([_dispute_json(d) for d in items])
        else:
            for d in items:
                legal = f"  LEGAL ORDER {d.legal_order}" if d.kind == "legal" else ""
                out.line(f"{d.request_id}  {d.case_id}  {d.state}{legal}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Printer], Coroutine[Any, Any, int]]] = {
    "register": cmd_register,
    "login": cmd_login,
    "whoami": cmd_whoami,
    "safety": cmd_safety,
    "trust": cmd_trust,
    "open-case": cmd_open_case,
    "cases": cmd_cases,
    "send": cmd_send,
    "history": cmd_history,
    "chat": cmd_chat,
    "watch": cmd_watch,
    "receipt": cmd_receipt,
    "close-case": cmd_close_case,
    "logout": cmd_logout,
    "consent": cmd_consent,
    "dispute": cmd_dispute,
    "disputes": cmd_disputes,
}


# -- errors -----------------------------------------------------------------------------


def describe_error(exc: BaseException, case_id: str | None = None) -> tuple[int, str, str]:
    """(exit code, short code, message) for an exception escaping a command about
    ``case_id`` (if it names one)."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE, "usage", str(exc)
    if case_id is not None and (wording := case_error(exc, case_id)) is not None:
        short = exc.code.value if isinstance(exc, pe.RemoteError) else "case"
        return EXIT_ERROR, short, wording
    if isinstance(exc, pe.ConsentRequired):
        return EXIT_ERROR, exc.code.value, CONSENT_REQUIRED
    if isinstance(exc, pe.InvalidFrame) and LANGUAGE_NOT_OFFERED in str(exc):
        return EXIT_USAGE, exc.code.value, escape(str(exc))
    if isinstance(exc, pe.InvalidFrame) and "$.handle" in str(exc):
        return EXIT_USAGE, exc.code.value, f"invalid handle: {BAD_HANDLE}"
    if isinstance(exc, pe.CryptoError):
        code = EXIT_AUTH if "passphrase" in str(exc) else EXIT_ERROR
        return code, "crypto", str(exc)
    if isinstance(exc, pe.AuthFailed):
        return EXIT_AUTH, exc.code.value, f"authentication failed: {exc}"
    if isinstance(exc, pe.RemoteError):
        friendly = _FRIENDLY.get(exc.code.value, exc.code.value.replace("_", " "))
        return EXIT_ERROR, exc.code.value, f"{friendly}: {exc}"
    if isinstance(exc, ConnectFailed):
        return EXIT_CONNECT, "connect_failed", str(exc)
    if isinstance(exc, SessionEnded):
        auth = exc.code == pe.CloseCode.AUTH_TIMEOUT
        return (EXIT_AUTH if auth else EXIT_CONNECT), "session_ended", str(exc)
    if isinstance(exc, SecurityRefusal):
        return EXIT_SECURITY, type(exc).__name__, f"security: {exc}"
    if isinstance(exc, KdfTooWeak):
        return EXIT_USAGE, "kdf_too_weak", str(exc)
    if isinstance(exc, WeakPassphrase):
        return EXIT_USAGE, "weak_passphrase", str(exc)
    if isinstance(exc, KeyStoreError | CaseNotReady | RequestInterrupted | ClientClosed):
        return EXIT_ERROR, type(exc).__name__, str(exc)
    if isinstance(exc, ClientError | ValueError):
        return EXIT_ERROR, "error", str(exc)
    return EXIT_ERROR, "internal", f"unexpected {type(exc).__name__}: {exc}"


def _fail(out: Printer, exc: BaseException, case_id: str | None = None) -> int:
    code, short, message = describe_error(exc, case_id)
    if out.as_json:
        out.json({"error": short, "message": message})
    print(f"chat-client: {escape(message)}", file=sys.stderr)  # the hub wrote part of it
    if short == "internal":
        logging.getLogger("chat_client").info("unexpected error", exc_info=exc)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    out = Printer(as_json=args.json)
    try:
        return asyncio.run(COMMANDS[args.command](args, out))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _fail(out, exc, getattr(args, "case", None))
