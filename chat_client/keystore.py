"""The local key store: one ``account.json`` in the client's home directory.

What is on disk (all of it useless without the passphrase):

* server url, handle, account id, role, Argon2id salt and limits;
* ``wrapped_keys``: the identity (Ed25519 seed || X25519 secret) in a SecretBox under
  wrap_key, exactly the blob the server also holds;
* public keys (to check the unwrapped identity);
* the session token, SecretBox-encrypted under a subkey of wrap_key;
* per-case cursors (last delivered seq and its chain hash): metadata, never plaintext.

No message text and no unwrapped key is ever written. The directory is created 0700 and
the file 0600, written atomically (temp file + rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.hash
import nacl.secret
from nacl.encoding import RawEncoder

from protocol.crypto import Identity, LoginKeys, derive_login_keys
from protocol.errors import CryptoError
from protocol.opening import unwrap_identity

from .cursors import Cursor
from .errors import KeyStoreError

__all__ = ["ACCOUNT_FILE", "AccountRecord", "KeyStore", "StoredToken"]

ACCOUNT_FILE = "account.json"
_FORMAT = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _token_key(wrap_key: bytes) -> bytes:
    # A separate subkey so the token box and the identity wrap never share a key.
    return nacl.hash.blake2b(
        b"", digest_size=32, key=wrap_key, person=b"chat-token-box-1", encoder=RawEncoder
    )


@dataclasses.dataclass(frozen=True, slots=True)
class StoredToken:
    token: str
    expires_ms: int

    def expired(self, *, margin_s: float = 60.0) -> bool:
        return self.expires_ms <= (time.time() + margin_s) * 1000


@dataclasses.dataclass(slots=True)
class AccountRecord:
    """Everything account.json holds, decoded (secrets still wrapped)."""

    server: str
    handle: str
    account_id: str
    role: str
    salt: bytes
    opslimit: int
    memlimit: int
    wrapped_keys: bytes
    sign_pk: bytes
    box_pk: bytes
    token_box: bytes | None = None
    cursors: dict[str, Cursor] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "server": self.server,
            "handle": self.handle,
            "account_id": self.account_id,
            "role": self.role,
            "salt": _b64(self.salt),
            "opslimit": self.opslimit,
            "memlimit": self.memlimit,
            "wrapped_keys": _b64(self.wrapped_keys),
            "sign_pk": _b64(self.sign_pk),
            "box_pk": _b64(self.box_pk),
            "token": _b64(self.token_box) if self.token_box is not None else None,
            "cursors": {
                case_id: {
                    "seq": c.seq,
                    "chain_hash": c.chain_hash.hex() if c.chain_hash is not None else None,
                }
                for case_id, c in sorted(self.cursors.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountRecord:
        if data.get("format") != _FORMAT:
            raise KeyStoreError(f"unsupported key store format {data.get('format')!r}")
        token = data.get("token")
        cursors = {
            str(case_id): Cursor(
                int(c["seq"]),
                bytes.fromhex(c["chain_hash"]) if c.get("chain_hash") else None,
            )
            for case_id, c in dict(data.get("cursors") or {}).items()
        }
        return cls(
            server=str(data["server"]),
            handle=str(data["handle"]),
            account_id=str(data["account_id"]),
            role=str(data["role"]),
            salt=_unb64(data["salt"]),
            opslimit=int(data["opslimit"]),
            memlimit=int(data["memlimit"]),
            wrapped_keys=_unb64(data["wrapped_keys"]),
            sign_pk=_unb64(data["sign_pk"]),
            box_pk=_unb64(data["box_pk"]),
            token_box=_unb64(token) if token else None,
            cursors=cursors,
        )


class KeyStore:
    """account.json in ``home``. Create with :meth:`create`, read with :meth:`load`.

    The passphrase never touches this class except through :meth:`unlock`, which derives
    the login keys and unwraps the identity; both stay in the caller's memory only.
    """

    def __init__(self, home: Path, record: AccountRecord) -> None:
        self.home = home
        self.record = record

    @property
    def path(self) -> Path:
        return self.home / ACCOUNT_FILE

    @staticmethod
    def exists(home: Path) -> bool:
        return (home / ACCOUNT_FILE).exists()

    @classmethod
    def create(cls, home: Path, record: AccountRecord, *, overwrite: bool = False) -> KeyStore:
        if cls.exists(home) and not overwrite:
            raise KeyStoreError(f"{home} already holds an account; use another --home")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by the umask and ignored for existing directories.
        os.chmod(home, 0o700)
        store = cls(home, record)
        store.save()
        return store

    @classmethod
    def load(cls, home: Path) -> KeyStore:
        path = home / ACCOUNT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyStoreError(
                f"no account in {home}; run 'chat-client register' or 'login' first"
            ) from None
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read {path}: {exc}") from None
        try:
            return cls(home, AccountRecord.from_json(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreError(f"{path} is corrupt ({type(exc).__name__})") from None

    def save(self) -> None:
        """Write atomically with mode 0600."""
        text = json.dumps(self.record.to_json(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".account-", suffix=".tmp", dir=self.home)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- secrets -----------------------------------------------------------------

    def derive(self, passphrase: str) -> LoginKeys:
        """Argon2id with the stored salt and limits (slow on purpose: run it in a thread)."""
        r = self.record
        return derive_login_keys(passphrase, r.salt, r.opslimit, r.memlimit)

    def unlock(self, keys: LoginKeys) -> Identity:
        """Unwrap the identity; a wrong passphrase raises CryptoError("wrong passphrase")."""
        try:
            identity = unwrap_identity(self.record.wrapped_keys, keys.wrap_key)
        except CryptoError:
            raise CryptoError("wrong passphrase") from None
        if identity.sign_pk != self.record.sign_pk or identity.box_pk != self.record.box_pk:
            raise CryptoError("key store is inconsistent: unwrapped keys do not match")
        return identity

    def store_token(self, token: str, expires_ms: int, wrap_key: bytes) -> None:
        payload = json.dumps({"token": token, "expires": expires_ms}).encode()
        self.record.token_box = bytes(nacl.secret.SecretBox(_token_key(wrap_key)).encrypt(payload))
        self.save()

    def read_token(self, wrap_key: bytes) -> StoredToken | None:
        if self.record.token_box is None:
            return None
        try:
            payload = nacl.secret.SecretBox(_token_key(wrap_key)).decrypt(self.record.token_box)
            data = json.loads(payload)
            return StoredToken(str(data["token"]), int(data["expires"]))
        except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError):
            # A token we cannot read is just a missing token: log in again.
            return None

    # -- cursors -------------------------------------------------------------------

    def set_cursors(self, cursors: dict[str, Cursor]) -> None:
        self.record.cursors = dict(cursors)
