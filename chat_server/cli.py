"""``chat-server``: run the hub and administer it.

chat-server serve [--host H] [--port P] [--db URL] [--redis URL --node-id NAME]
chat-server migrate [--db URL]
chat-server admin invite-counselor --name N --languages en,ur --specialties anxiety,grief
chat-server admin escrow-policy install policy.json --org-fingerprint FP
chat-server admin counselors pending [--json] | install-certs certs.json
chat-server disputes list | show ID | approve ID --approval F | export ID --out B  [--json]
chat-server disputes open-legal --order-file ORDER  [--json]
chat-server consents export --out FILE  [--json]
chat-server audit verify [--anchor FILE ...] | list  [--json]

Exit codes (the shared table, protocol/exit_codes.py): 0 ok, 1 error, 2 usage (also an
invalid port), 4 the database cannot be reached, 6 cannot listen (the port is in use,
e.g. by a hub already running, or not allowed), 10 the audit log is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.errors import ProtocolError
from protocol.exit_codes import ExitCode, epilog
from storage.engine import open_database, sqlite_url

from .config import KDF_PROFILES, Config, kdf_profile
from .credentials import invite_code_hash
from .logs import configure
from .origins import normalize_origin

if TYPE_CHECKING:
    from .app import ListenFailed

__all__ = ["EPILOG", "main"]

EPILOG = epilog(
    ExitCode.OK,
    ExitCode.ERROR,
    ExitCode.USAGE,
    ExitCode.CONNECT,
    ExitCode.START_FAILED,
    ExitCode.TAMPERED,
)


def _db_url(value: str | None) -> str | None:
    """Accept a SQLAlchemy URL or a plain path to a SQLite file."""
    if value is None:
        return None
    return value if "://" in value else sqlite_url(Path(value))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL|PATH",
        help="database URL or SQLite path (env CHAT_DB_URL; default ./var/chat.db)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the server's key files live (env CHAT_STATE_DIR; default ./var)",
    )


def _config(args: argparse.Namespace, **extra: object) -> Config:
    # CHAT_DB_URL may be a plain SQLite path too, like --db (README, Configuration).
    db = _db_url(args.db or os.environ.get("CHAT_DB_URL"))
    return Config.from_env(db_url=db, state_dir=args.state_dir, **extra)


#: ``--limit NAME=RATE,BURST``: the Config field each named budget sets.
BUDGETS = {
    "case_open": "case_open_rate",
    "dispute_request": "dispute_request_rate",
    "login_fail_handle": "login_fail_handle_rate",
    "login_fail_ip": "login_fail_ip_rate",
    "register_ip": "register_ip_rate",
    "account_request": "account_request_rate",
    "account_message": "account_message_rate",
}


def _budget(text: str) -> tuple[str, tuple[float, int]]:
    """``NAME=RATE,BURST`` (tokens per second, burst) -> (Config field, value)."""
    try:
        name, value = text.split("=", 1)
        rate, burst = value.split(",", 1)
        field, parsed = BUDGETS[name.strip()], (float(rate), int(burst))
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected NAME=RATE,BURST with NAME one of {', '.join(BUDGETS)}"
        ) from None
    if parsed[0] <= 0 or parsed[1] < 1:
        raise argparse.ArgumentTypeError("RATE must be positive and BURST at least 1")
    return field, parsed


def _limit_flags(serve: argparse.ArgumentParser) -> None:
    """The abuse limits (docs/PROTOCOL.md 11 lists each with its default and error)."""
    serve.add_argument(
        "--limit",
        type=_budget,
        action="append",
        default=[],
        metavar="NAME=RATE,BURST",
        help="a shared budget in tokens per second and burst, e.g. register_ip=0.0167,20 "
        f"(repeatable; NAME: {', '.join(BUDGETS)})",
    )
    for flag, field, text in (
        (
            "--argon2-concurrency",
            "argon2_concurrency",
            "Argon2id hashes at once (default: one per core)",
        ),
        ("--argon2-per-ip", "argon2_per_ip", "Argon2id hashes at once per address (default 2)"),
        ("--argon2-queue", "argon2_queue", "logins/registrations waiting for a hash (64)"),
        ("--max-guests", "max_guests", "unauthenticated connections (default 1000)"),
        ("--max-guests-per-ip", "max_guests_per_ip", "... per address (default 50)"),
        ("--max-waiting-cases", "max_waiting_cases", "cases a client has waiting (default 1)"),
        ("--max-open-cases", "max_open_cases", "cases a client has not closed (default 3)"),
        ("--max-disputes-per-case", "max_disputes_per_case", "per client (default 3)"),
    ):
        serve.add_argument(flag, type=int, dest=field, metavar="N", help=text)
    serve.add_argument(
        "--tarpit-s",
        type=float,
        dest="tarpit_s",
        metavar="S",
        help="seconds a refused stranger waits for its answer, reading nothing (default 1)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="ADDR",
        help="a reverse proxy whose X-Forwarded-For names the client address (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="End-to-end-encrypted counseling chat hub (stores and routes ciphertext only).",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Command)

    serve = sub.add_parser("serve", help="run the hub")
    _common(serve)
    serve.add_argument("--host", help="listen address (env CHAT_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="listen port, 0 for any (env CHAT_PORT; default 8765)"
    )
    serve.add_argument(
        "--log-file", type=Path, help="write JSON logs here (env CHAT_LOG_FILE; default stderr)"
    )
    serve.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING (env CHAT_LOG_LEVEL; default INFO)"
    )
    serve.add_argument(
        "--allowed-origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="browser Origin allowed to open the WebSocket and the web chat (repeatable; "
        "env CHAT_ALLOWED_ORIGINS, comma-separated; default: the listen address's); the "
        "Host header must name one of them",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="URL clients reach the hub at through a proxy, e.g. https://chat.example.org "
        "(env CHAT_PUBLIC_URL); its origin is always allowed",
    )
    serve.add_argument(
        "--kdf",
        "--min-kdf",  # its old name, when it was a minimum
        dest="kdf",
        choices=sorted(KDF_PROFILES),
        default=None,
        help="the Argon2id cost every account registers with, announced in challenge: "
        "standard (opslimit 3, 64 MiB), interactive (2, 64 MiB), moderate (3, 256 MiB); "
        "'test' (1, 8 KiB) is for test suites only (default standard)",
    )
    serve.add_argument(
        "--idle-lock-minutes",
        type=float,
        metavar="MIN",
        help="lock the counselor web chat after MIN minutes without input (default 10)",
    )
    serve.add_argument(
        "--org-fingerprint",
        metavar="FP",
        help="organisation key fingerprint the escrow policy must be signed with, pinned "
        "by the counselor web chat (env CHAT_ORG_FINGERPRINT; see docs/WEB.md)",
    )
    serve.add_argument(
        "--web-root",
        type=Path,
        metavar="DIR",
        help="directory of the built counselor web chat (env CHAT_WEB_ROOT; "
        "default: web_client/ next to the installed package)",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="Redis shared by several nodes: redis://, rediss:// (TLS) or unix:// "
        "(env CHAT_REDIS_URL; default: none, a single node)",
    )
    serve.add_argument(
        "--node-id",
        metavar="NAME",
        help="this node's unique, stable name (env CHAT_NODE_ID; default HOSTNAME-PID)",
    )
    serve.add_argument(
        "--redis-prefix",
        metavar="PREFIX",
        help="prefix of every Redis key and channel (env CHAT_REDIS_PREFIX; default chat:)",
    )
    serve.add_argument(
        "--presence-ttl",
        type=float,
        metavar="S",
        help="seconds a killed node's counselors stay matchable; the heartbeat comes "
        "every third of it (default 15)",
    )
    serve.add_argument("--uvloop", action="store_true", help="run on uvloop (pip install uvloop)")
    serve.add_argument(
        "--rate-per-s",
        type=float,
        help="frames per second each session may send on average (default 50; benchmarks raise it)",
    )
    serve.add_argument(
        "--rate-burst", type=int, help="frames a session may send in one burst (default 200)"
    )
    _limit_flags(serve)

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(migrate)

    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    invite = admin_sub.add_parser(
        "invite-counselor", help="create a single-use counselor invite code"
    )
    _common(invite)
    invite.add_argument("--name", required=True, help="counselor's display name (stored encrypted)")
    invite.add_argument("--languages", required=True, help="comma-separated, e.g. en,ur")
    invite.add_argument("--specialties", default="", help="comma-separated, e.g. anxiety,grief")
    invite.add_argument("--json", action="store_true", help="print JSON")
    # Escrow and disputes (chat_server/disputes_cli.py, docs/DISPUTES.md).
    from . import disputes_cli

    disputes_cli.add_policy_parser(admin_sub, _common)
    disputes_cli.add_parsers(sub, _common)
    # Counselor certificates (chat_server/counselors_cli.py, docs/DISPUTES.md).
    from . import counselors_cli

    counselors_cli.add_parser(admin_sub, _common)
    return parser


class _Command(argparse.ArgumentParser):
    """A (sub)command parser whose --help ends with the exit-code table; the commands
    nested under it are made with this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)


def _listen_failed(exc: ListenFailed) -> str:
    where = f"{exc.host}:{exc.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {exc.port} is already in use on {exc.host} (is a hub already running? "
            f"stop it, or choose another port with --port)"
        )
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where}: use a port above 1023, or another --port"
    return f"{exc}; check --host and --port"


def _split(text: str) -> tuple[str, ...]:
    return tuple(sorted({p.strip().lower() for p in text.split(",") if p.strip()}))


async def _invite(args: argparse.Namespace) -> int:
    config = _config(args)
    languages = _split(args.languages)
    if not languages:
        print("chat-server: --languages needs at least one language", file=sys.stderr)
        return 2
    db = await open_database(config.db_url, config.resolved_data_key())
    try:
        code = "inv-" + secrets.token_urlsafe(15)
        await db.accounts.create_invite(
            invite_code_hash(code), "counselor", args.name, languages, _split(args.specialties)
        )
    finally:
        await db.close()
    if args.json:
        print(
            json.dumps(
                {
                    "code": code,
                    "role": "counselor",
                    "languages": list(languages),
                    "specialties": list(_split(args.specialties)),
                }
            )
        )
    else:
        print(code)
        print(
            f"Single-use counselor invite for languages {','.join(languages)}. Register with:\n"
            f"  chat-client register --handle HANDLE --invite {code}",
            file=sys.stderr,
        )
    return 0


def _counselors(args: argparse.Namespace) -> int:
    from . import counselors_cli

    config = _config(args)

    async def go() -> int:
        db = await open_database(config.db_url, config.resolved_data_key())
        try:
            return await counselors_cli.run(args, db)
        finally:
            await db.close()

    try:
        return asyncio.run(go())
    except (ProtocolError, OSError) as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return counselors_cli.EXIT_REFUSED


async def _migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    db = await open_database(config.db_url, config.resolved_data_key())
    await db.close()
    print("database schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ConnectionError, socket.gaierror, TimeoutError) as exc:
        # The database or Redis is not there: one line, not a traceback.
        print(
            f"chat-server: cannot connect: {exc}; check --db and --redis (are they running?)",
            file=sys.stderr,
        )
        return ExitCode.CONNECT


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from .app import ListenFailed, run_forever

        extra: dict[str, object] = {
            "host": args.host,
            "port": args.port,
            "log_file": args.log_file,
            "log_level": args.log_level,
            "idle_lock_minutes": args.idle_lock_minutes,
            "rate_per_s": args.rate_per_s,
            "rate_burst": args.rate_burst,
            "org_fingerprint": args.org_fingerprint,
            "public_url": args.public_url,
            "web_root": args.web_root,
            "redis_url": args.redis,
            "node_id": args.node_id,
            "redis_prefix": args.redis_prefix,
        }
        if args.origins:
            extra["allowed_origins"] = tuple(args.origins)
        for field in (
            "argon2_concurrency",
            "argon2_per_ip",
            "argon2_queue",
            "max_guests",
            "max_guests_per_ip",
            "max_waiting_cases",
            "max_open_cases",
            "max_disputes_per_case",
            "tarpit_s",
        ):
            extra[field] = getattr(args, field)
        if args.trusted_proxies:
            extra["trusted_proxies"] = tuple(args.trusted_proxies)
        extra.update(dict(args.limit))
        if args.presence_ttl is not None:
            if args.presence_ttl <= 0:
                print("chat-server: --presence-ttl must be positive", file=sys.stderr)
                return 2
            extra.update(
                presence_ttl_s=args.presence_ttl, presence_heartbeat_s=args.presence_ttl / 3
            )
        if args.kdf is not None:
            extra.update(kdf_profile(args.kdf))
        config = _config(args, **extra)
        if not 0 <= config.port <= 65535:
            print(
                f"chat-server: port {config.port} is not a port number: use 1 to 65535, "
                "or 0 for any free port",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        try:
            config.resolved_node_id()
            for origin in (*(config.allowed_origins or ()), config.public_url or "http://x"):
                normalize_origin(origin)
        except ValueError as exc:
            print(f"chat-server: {exc}", file=sys.stderr)
            return 2
        configure(config.log_level, config.log_file)
        try:
            if args.uvloop:
                import uvloop  # type: ignore[import-not-found,unused-ignore]

                uvloop.run(run_forever(config))
            else:
                asyncio.run(run_forever(config))
        except ListenFailed as exc:
            print(f"chat-server: {_listen_failed(exc)}", file=sys.stderr)
            return ExitCode.START_FAILED
        return 0
    configure("WARNING")
    if args.command == "migrate":
        return asyncio.run(_migrate(args))
    if args.command == "admin" and args.admin_command == "invite-counselor":
        return asyncio.run(_invite(args))
    if args.command == "admin" and args.admin_command == "counselors":
        return _counselors(args)
    if args.command in ("disputes", "consents", "audit") or (
        args.command == "admin" and args.admin_command == "escrow-policy"
    ):
        from . import disputes_cli

        return disputes_cli.run(args, _config(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
