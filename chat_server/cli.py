"""``chat-server``: run the hub and administer it.

chat-server serve [--host H] [--port P] [--db URL] [--redis URL --node-id NAME]
chat-server migrate [--db URL]
chat-server admin invite-counselor --name N --languages en,ur --specialties anxiety,grief
chat-server admin escrow-policy install policy.json --org-fingerprint FP
chat-server disputes list | show ID | approve ID --approval F | export ID --out B  [--json]
chat-server disputes open-legal --order-file ORDER  [--json]
chat-server consents export --out FILE  [--json]
chat-server audit verify [--anchor FILE ...] | list  [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from storage.engine import open_database, sqlite_url

from .config import Config
from .credentials import invite_code_hash
from .logs import configure

__all__ = ["main"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="End-to-end-encrypted counseling chat hub (stores and routes ciphertext only).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
        help="browser Origin allowed to open the WebSocket (repeatable; "
        "env CHAT_ALLOWED_ORIGINS, comma-separated; default: the hub's own)",
    )
    serve.add_argument(
        "--min-kdf",
        choices=["interactive", "test"],
        default=None,
        help="lowest Argon2id cost clients may register with; 'test' is for "
        "test suites only (default interactive)",
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
    return parser


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


async def _migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    db = await open_database(config.db_url, config.resolved_data_key())
    await db.close()
    print("database schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .app import run_forever

        extra: dict[str, object] = {
            "host": args.host,
            "port": args.port,
            "log_file": args.log_file,
            "log_level": args.log_level,
            "idle_lock_minutes": args.idle_lock_minutes,
            "rate_per_s": args.rate_per_s,
            "rate_burst": args.rate_burst,
            "org_fingerprint": args.org_fingerprint,
            "web_root": args.web_root,
            "redis_url": args.redis,
            "node_id": args.node_id,
            "redis_prefix": args.redis_prefix,
        }
        if args.origins:
            extra["allowed_origins"] = tuple(args.origins)
        if args.presence_ttl is not None:
            if args.presence_ttl <= 0:
                print("chat-server: --presence-ttl must be positive", file=sys.stderr)
                return 2
            extra.update(
                presence_ttl_s=args.presence_ttl, presence_heartbeat_s=args.presence_ttl / 3
            )
        if args.min_kdf == "test":
            extra.update(min_opslimit=1, min_memlimit=8192, hash_opslimit=1, hash_memlimit=8192)
        config = _config(args, **extra)
        try:
            config.resolved_node_id()
        except ValueError as exc:
            print(f"chat-server: {exc}", file=sys.stderr)
            return 2
        configure(config.log_level, config.log_file)
        if args.uvloop:
            import uvloop  # type: ignore[import-not-found,unused-ignore]

            uvloop.run(run_forever(config))
        else:
            asyncio.run(run_forever(config))
        return 0
    configure("WARNING")
    if args.command == "migrate":
        return asyncio.run(_migrate(args))
    if args.command == "admin" and args.admin_command == "invite-counselor":
        return asyncio.run(_invite(args))
    if args.command in ("disputes", "consents", "audit") or (
        args.command == "admin" and args.admin_command == "escrow-policy"
    ):
        from . import disputes_cli

        return disputes_cli.run(args, _config(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
