"""Hub configuration: flags and environment variables resolved into one frozen value."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import socket
from pathlib import Path

import nacl.pwhash

from protocol import limits
from protocol.crypto import ServerKey

__all__ = [
    "DEFAULT_WEB_ROOT",
    "KDF_PROFILES",
    "ORG_FINGERPRINT_FILE",
    "Config",
    "kdf_profile",
    "load_key_file",
]

#: The counselor web chat's built files: the repository's web_client/ next to this
#: package, which is where the editable install of scripts/setup finds it. A packaged
#: deploy ships the built page separately and sets --web-root / CHAT_WEB_ROOT
#: (docs/DECISIONS.md).
DEFAULT_WEB_ROOT = Path(__file__).resolve().parents[1] / "web_client"

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: The hub's KDF profiles (``--kdf``): the one (opslimit, memlimit) every account of the
#: hub registers with, announced in ``challenge`` and answered by ``prelogin`` for real
#: and unknown handles alike (docs/DECISIONS.md, "One KDF cost per hub"). ``test`` is
#: below every client's floor and exists for test suites only.
KDF_PROFILES: dict[str, tuple[int, int]] = {
    "standard": (3, 64 * 1024 * 1024),
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    "moderate": (
        nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    ),
    "test": (1, 8192),
}


def kdf_profile(name: str) -> dict[str, int]:
    """Config values for the ``--kdf`` profile ``name``; ``test`` also lowers the hub's
    own hash of each auth_key to the minimum."""
    ops, mem = KDF_PROFILES[name]
    values = {"kdf_opslimit": ops, "kdf_memlimit": mem}
    if name == "test":
        values.update(hash_opslimit=1, hash_memlimit=8192)
    return values


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    db_url: str = "sqlite+aiosqlite:///var/chat.db"
    #: Directory for the server's own key files (identity key, data key) when not given.
    state_dir: Path = Path("var")
    #: 32-byte key encrypting personal data at rest (topic, counselor names); None: from file.
    data_key: bytes | None = None
    #: The Argon2id cost of every account's login KDF (the ``--kdf`` profile): announced
    #: in ``challenge``, required at ``register``, answered by ``prelogin`` for any handle.
    kdf_opslimit: int = KDF_PROFILES["standard"][0]
    kdf_memlimit: int = KDF_PROFILES["standard"][1]
    #: Cost of the server-side Argon2id hash of each auth_key (already 256-bit strong).
    hash_opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MIN + 1
    hash_memlimit: int = 16 * 1024 * 1024
    max_frame_bytes: int = limits.MAX_FRAME_BYTES
    auth_timeout_s: float = limits.AUTH_TIMEOUT_S
    max_sessions_per_account: int = limits.MAX_SESSIONS_PER_ACCOUNT
    rate_per_s: float = limits.RATE_PER_S
    rate_burst: int = limits.RATE_BURST
    send_queue_frames: int = limits.SEND_QUEUE_FRAMES
    send_queue_bytes: int = limits.SEND_QUEUE_BYTES
    close_timeout_s: float = limits.CLOSE_TIMEOUT_S
    token_ttl_s: int = limits.TOKEN_TTL_S
    #: Expired session tokens are deleted this often (seconds).
    token_purge_interval_s: float = 600.0
    #: Largest number of messages committed in one transaction.
    commit_batch: int = 512
    #: Browser origins allowed to open the WebSocket and load the web chat; None: those of
    #: the listen address (``origins.OriginPolicy``). ``Host`` must name one of them.
    #: Requests without an Origin (native clients) are always allowed to the WebSocket.
    allowed_origins: tuple[str, ...] | None = None
    #: The URL the hub is reached at through a proxy (``https://chat.example.org``); its
    #: origin is always allowed, besides ``allowed_origins`` or the listen address's.
    public_url: str | None = None
    #: The counselor web chat locks itself after this long without input (served to the
    #: page by ``/config.json``; the passphrase unlocks it).
    idle_lock_minutes: float = 10.0
    #: The organisation key fingerprint the escrow policy must be signed with, served to
    #: the counselor web chat by ``/config.json`` as its pin (docs/WEB.md: weaker than a
    #: pin the client holds itself, since the hub serves the page too). None: the page
    #: refuses to escrow, so counselors cannot create epoch keys while a policy is installed.
    org_fingerprint: str | None = None
    #: Where the built counselor web chat is served from (index.html, style.css, dist/).
    web_root: Path = DEFAULT_WEB_ROOT
    log_file: Path | None = None
    log_level: str = "INFO"
    #: Redis for several nodes (event bus, presence, shared rate limits); None: one node,
    #: everything in this process (docs/DEPLOYMENT.md).
    redis_url: str | None = None
    #: Put in front of every Redis key and channel (several deployments or test runs
    #: may share one Redis).
    redis_prefix: str = "chat:"
    #: This process's name among the nodes: unique, stable across restarts, no ":" or
    #: "|". None: the host name and process id.
    node_id: str | None = None
    #: Presence entries live this long unless the node's heartbeat renews them, so a
    #: killed node's counselors stop being matched within it.
    presence_ttl_s: float = 15.0
    presence_heartbeat_s: float = 5.0
    #: Per-account budgets shared by every node (``account_ratelimit``): cases opened,
    #: dispute requests filed, as (tokens per second, burst).
    case_open_rate: tuple[float, int] = (1 / 60, 10)
    dispute_request_rate: tuple[float, int] = (1 / 60, 10)
    #: A client's cases at once: waiting for a counselor, and open (waiting or assigned).
    max_waiting_cases: int = 1
    max_open_cases: int = 3
    #: Dispute requests one client may file about one case (in any state).
    max_disputes_per_case: int = 3
    #: Per-account budgets over all of an account's sessions on this node (in memory:
    #: checked on every frame, so no Redis round trip), as (per second, burst): every
    #: request after auth, and ``msg.send`` alone.
    account_request_rate: tuple[float, int] = (100.0, 400)
    account_message_rate: tuple[float, int] = (20.0, 100)
    #: Unauthenticated work (``guard.py``, docs/PROTOCOL.md 11): Argon2id hashes at once
    #: on this node (one per core: more only starve the event loop; measured with
    #: ``scripts/bench --abuse-auth``), per client address (running or waiting), and
    #: waiting in all.
    argon2_concurrency: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 2)
    argon2_per_ip: int = 2
    argon2_queue: int = 64
    #: Failed logins per handle and per address, as (tokens per second, burst), and
    #: registrations per address (shared by all nodes with ``redis_url``).
    login_fail_handle_rate: tuple[float, int] = (1 / 60, 10)
    login_fail_ip_rate: tuple[float, int] = (1 / 6, 50)
    register_ip_rate: tuple[float, int] = (1 / 60, 20)
    #: Seconds a refused stranger waits for its answer (``rate_limited`` at login or
    #: register, or over the session's frame rate before auth), reading nothing meanwhile.
    tarpit_s: float = 1.0
    #: Unauthenticated connections on this node, in all and per address.
    max_guests: int = 1000
    max_guests_per_ip: int = 50
    #: Addresses of reverse proxies (HAProxy) whose ``X-Forwarded-For`` names the client
    #: address the per-address limits count; empty: the connection's own address.
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        """Defaults, then CHAT_* environment variables, then explicit overrides."""
        env: dict[str, object] = {}
        if url := os.environ.get("CHAT_DB_URL"):
            env["db_url"] = url
        if host := os.environ.get("CHAT_HOST"):
            env["host"] = host
        if port := os.environ.get("CHAT_PORT"):
            env["port"] = int(port)
        if state := os.environ.get("CHAT_STATE_DIR"):
            env["state_dir"] = Path(state)
        if key := os.environ.get("CHAT_DATA_KEY"):
            env["data_key"] = _parse_key(key)
        if origins := os.environ.get("CHAT_ALLOWED_ORIGINS"):
            env["allowed_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        if public_url := os.environ.get("CHAT_PUBLIC_URL"):
            env["public_url"] = public_url.strip()
        if log_file := os.environ.get("CHAT_LOG_FILE"):
            env["log_file"] = Path(log_file)
        if level := os.environ.get("CHAT_LOG_LEVEL"):
            env["log_level"] = level
        if org_fp := os.environ.get("CHAT_ORG_FINGERPRINT"):
            env["org_fingerprint"] = org_fp
        if web_root := os.environ.get("CHAT_WEB_ROOT"):
            env["web_root"] = Path(web_root)
        if redis_url := os.environ.get("CHAT_REDIS_URL"):
            env["redis_url"] = redis_url
        if redis_prefix := os.environ.get("CHAT_REDIS_PREFIX"):
            env["redis_prefix"] = redis_prefix
        if node_id := os.environ.get("CHAT_NODE_ID"):
            env["node_id"] = node_id
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)  # type: ignore[arg-type]

    def resolved_data_key(self) -> bytes:
        if self.data_key is not None:
            return self.data_key
        return load_key_file(self.state_dir / "data.key")

    def resolved_node_id(self) -> str:
        """``node_id``, or one made of the host name and process id (unique per process
        on a host; set a stable one in production so logs and metrics line up)."""
        if self.node_id is not None:
            if not _NODE_ID.fullmatch(self.node_id):
                raise ValueError("node id: 1-64 of A-Z a-z 0-9 . _ - (no ':' or '|')")
            return self.node_id
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "node"
        return f"{host}-{os.getpid()}"

    def served_org_fingerprint(self) -> str | None:
        """The page's escrow pin: ``org_fingerprint``, else the organisation the operator
        confirmed at ``escrow-policy install`` (``state_dir/org-fingerprint``, read at
        each use so a hub already running picks it up)."""
        if self.org_fingerprint:
            return self.org_fingerprint
        try:
            text = (self.state_dir / ORG_FINGERPRINT_FILE).read_text(encoding="utf-8")
        except OSError:
            return None
        return text.strip() or None

    def server_key(self) -> ServerKey:
        """The hub's own signing key (``state_dir/server.key``, created on first use)."""
        return ServerKey.from_seed(load_key_file(self.state_dir / "server.key"))


#: In ``state_dir``: the organisation fingerprint confirmed at ``escrow-policy install``.
ORG_FINGERPRINT_FILE = "org-fingerprint"


def _parse_key(text: str) -> bytes:
    key = bytes.fromhex(text.strip())
    if len(key) != 32:
        raise ValueError("CHAT_DATA_KEY must be 64 hex digits (32 bytes)")
    return key


def load_key_file(path: Path) -> bytes:
    """Read a 32-byte key (hex) from ``path``, creating it with mode 0600 if missing."""
    if path.exists():
        return _parse_key(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key
