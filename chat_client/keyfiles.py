"""Escrow key files: the organisation's signing key and each officer's key pair.

A key file is JSON; the secret is wrapped under Argon2id(passphrase) + SecretBox, and
the public keys and fingerprint stay in clear so a file can be identified without its
passphrase::

    {"kind": "counsel-chat/officer-key", "version": 1, "name": "officer1",
     "sign_pk": b64, "box_pk": b64, "fingerprint": "....",
     "kdf": {"alg": "argon2id13", "salt": b64, "opslimit": 3, "memlimit": 67108864},
     "wrapped": b64(nonce || SecretBox(sign seed 32 [|| box secret 32]))}

The matching ``.pub`` file holds only name and public keys. These files never go near
the hub: officers keep them offline (an import-linter contract keeps the server code
from importing this module).
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import json
import os
from pathlib import Path
from typing import Any, Literal

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from protocol import crypto
from protocol import frames as f

__all__ = [
    "DEFAULT_MEMLIMIT",
    "DEFAULT_OPSLIMIT",
    "ORG_PIN_SUFFIX",
    "KeyFile",
    "KeyFileError",
    "NoPassphrase",
    "PinError",
    "WrongPassphrase",
    "load_key",
    "load_legal_public",
    "load_public",
    "org_pin_path",
    "read_passphrase",
    "resolve_org_pin",
    "write_key",
    "write_org_pin",
    "write_private",
]

#: Next to an officer key file: the organisation fingerprint pinned at keygen.
ORG_PIN_SUFFIX = ".org-pin"

#: Officer keys are unlocked rarely, so they get the "moderate" Argon2id cost.
DEFAULT_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE

Kind = Literal["org", "officer", "legal"]
_KINDS: dict[Kind, str] = {
    "org": "counsel-chat/org-key",
    "officer": "counsel-chat/officer-key",
    # Signs legal orders (chat-escrow legal-order); named in the policy, kept offline.
    "legal": "counsel-chat/legal-key",
}


class KeyFileError(Exception):
    """A key file is missing, malformed or of the wrong kind."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not unwrap the key file."""


class NoPassphrase(KeyFileError):
    """No passphrase file, no environment variable and no terminal to ask on."""


class PinError(Exception):
    """No organisation fingerprint is pinned, or the pins given disagree (usage)."""


@dataclasses.dataclass(frozen=True, repr=False)
class KeyFile:
    kind: Kind
    name: str
    sign_key: SigningKey
    box_key: PrivateKey | None  # None for the organisation and legal-order keys

    @property
    def sign_pk(self) -> bytes:
        return bytes(self.sign_key.verify_key)

    @property
    def box_pk(self) -> bytes | None:
        return bytes(self.box_key.public_key) if self.box_key is not None else None

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.sign_pk)

    def officer(self) -> f.EscrowOfficer:
        if self.box_key is None:
            raise KeyFileError("not an officer key")
        return f.EscrowOfficer(
            name=self.name, box_pk=bytes(self.box_key.public_key), sign_pk=self.sign_pk
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise KeyFileError(f"{what} is not base64") from None


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` readable by its owner only (0600, also when it existed before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def pub_path(path: Path) -> Path:
    return path.with_suffix(".pub")


def write_key(
    path: Path,
    key: KeyFile,
    passphrase: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> Path:
    """Write ``path`` (mode 0600) and its ``.pub``; return the .pub path."""
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    wrap = nacl.pwhash.argon2id.kdf(
        32, passphrase.encode(), salt, opslimit=opslimit, memlimit=memlimit
    )
    secret = bytes(key.sign_key) + (bytes(key.box_key) if key.box_key is not None else b"")
    public: dict[str, Any] = {
        "kind": _KINDS[key.kind] + ".pub",
        "version": 1,
        "name": key.name,
        "sign_pk": _b64(key.sign_pk),
        "fingerprint": key.fingerprint,
    }
    if key.box_pk is not None:
        public["box_pk"] = _b64(key.box_pk)
    private = dict(public, kind=_KINDS[key.kind])
    private["kdf"] = {
        "alg": "argon2id13",
        "salt": _b64(salt),
        "opslimit": opslimit,
        "memlimit": memlimit,
    }
    private["wrapped"] = _b64(bytes(nacl.secret.SecretBox(wrap).encrypt(secret)))
    write_private(path, json.dumps(private, indent=1) + "\n")
    pub = pub_path(path)
    pub.write_text(json.dumps(public, indent=1) + "\n")
    return pub


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path} is not a key file")
    return data


def load_key(path: Path, passphrase: str, kind: Kind | None = None) -> KeyFile:
    """Unwrap a key file. WrongPassphrase if the passphrase does not open it."""
    data = _read_json(path)
    found: Kind | None = next((k for k, v in _KINDS.items() if data.get("kind") == v), None)
    if found is None or (kind is not None and found != kind):
        raise KeyFileError(f"{path} is not an {kind or 'escrow'} key file")
    try:
        kdf = data["kdf"]
        salt = _unb64(kdf["salt"], "salt")
        wrap = nacl.pwhash.argon2id.kdf(
            32,
            passphrase.encode(),
            salt,
            opslimit=int(kdf["opslimit"]),
            memlimit=int(kdf["memlimit"]),
        )
        wrapped = _unb64(data["wrapped"], "wrapped key")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise KeyFileError(f"{path} is malformed") from None
    try:
        secret = bytes(nacl.secret.SecretBox(wrap).decrypt(wrapped))
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase(f"wrong passphrase for {path}") from None
    want = 64 if found == "officer" else 32
    if len(secret) != want:
        raise KeyFileError(f"{path} holds a key of the wrong size")
    key = KeyFile(
        kind=found,
        name=str(data.get("name", "")),
        sign_key=SigningKey(secret[:32]),
        box_key=PrivateKey(secret[32:]) if found == "officer" else None,
    )
    if _b64(key.sign_pk) != data.get("sign_pk"):
        raise KeyFileError(f"{path}: the public key in clear does not match the secret")
    return key


def load_public(path: Path) -> f.EscrowOfficer:
    """An officer's public keys from its ``.pub`` (or its key file: the clear part)."""
    data = _read_json(path)
    if data.get("kind") not in (_KINDS["officer"], _KINDS["officer"] + ".pub"):
        raise KeyFileError(f"{path} is not an officer key or .pub file")
    try:
        return f.EscrowOfficer(
            name=str(data["name"]),
            box_pk=_unb64(data["box_pk"], "box_pk"),
            sign_pk=_unb64(data["sign_pk"], "sign_pk"),
        )
    except (KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is malformed: {exc}") from None


def load_legal_public(path: Path) -> f.LegalSigner:
    """A legal-order signer's public key from its ``.pub`` (or its key file)."""
    data = _read_json(path)
    if data.get("kind") not in (_KINDS["legal"], _KINDS["legal"] + ".pub"):
        raise KeyFileError(f"{path} is not a legal-order key or .pub file")
    try:
        return f.LegalSigner(name=str(data["name"]), sign_pk=_unb64(data["sign_pk"], "sign_pk"))
    except (KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is malformed: {exc}") from None


def read_passphrase(file: Path | None, prompt: str, *, confirm: bool = False) -> str:
    """--passphrase-file, else $CHAT_ESCROW_PASSPHRASE, else a prompt."""
    if file is not None:
        lines = file.read_text().splitlines()
        return lines[0] if lines else ""
    env = os.environ.get("CHAT_ESCROW_PASSPHRASE")
    if env is not None:
        return env
    try:
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != first:
            raise KeyFileError("passphrases do not match")
    except EOFError:  # no terminal to ask on (a script, a pipe)
        raise NoPassphrase(
            "no passphrase: set CHAT_ESCROW_PASSPHRASE or use --passphrase-file"
        ) from None
    return first


# -- the organisation pin ------------------------------------------------------------


def org_pin_path(key_path: Path) -> Path:
    return key_path.with_suffix(ORG_PIN_SUFFIX)


def write_org_pin(key_path: Path, fingerprint: str) -> Path:
    """Pin the organisation key next to an officer key file (at keygen)."""
    path = org_pin_path(key_path)
    path.write_text(" ".join(fingerprint.split()) + "\n")
    return path


def _normal(fp: str) -> str:
    return "".join(fp.split()).lower()


def resolve_org_pin(given: str | None, key_paths: list[Path]) -> str:
    """The organisation fingerprint to verify against: ``given`` (flag or environment)
    and every pin file next to ``key_paths`` must agree, and at least one must exist.
    PinError otherwise: nothing is trusted just because a policy embeds it."""
    found: dict[str, str] = {}
    if given:
        found[_normal(given)] = given
    for key in key_paths:
        pin = org_pin_path(key)
        if pin.exists():
            text = pin.read_text().strip()
            found.setdefault(_normal(text), text)
    if not found:
        raise PinError(
            "no organisation fingerprint is pinned: pass --org-fingerprint, set "
            "CHAT_ORG_FINGERPRINT, or keep the pin file written at keygen "
            f"(`{org_pin_path(key_paths[0]).name if key_paths else 'officer.org-pin'}`) "
            "next to the key"
        )
    if len(found) > 1:
        raise PinError(
            "the pinned organisation fingerprints disagree: " + " / ".join(found.values())
        )
    return next(iter(found.values()))
