"""Pinned contacts: trust on first use, hard failure on change (V2 protocol section 3).

Web counterpart: web_client/src/pins.js (there the pins live in the encrypted prefs blob).

``contacts.json`` beside ``account.json`` in the client's home maps account_id ->
(handle, sign_pk, box_pk, first_seen). Every directory entry the client uses passes
:meth:`Contacts.check`: an unknown account is pinned, a known one must present exactly
the pinned keys, otherwise :class:`KeyChanged` names the handle, both fingerprints and
the way out (compare the safety number out of band, then ``chat-client trust HANDLE
--reset``). Nothing secret is stored: public keys and handles only. Written atomically,
mode 0600, like the key store.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from protocol import crypto
from protocol.clock import now_ms

from .errors import KeyChanged, KeyStoreError

__all__ = ["CONTACTS_FILE", "Contacts", "Pin"]

CONTACTS_FILE = "contacts.json"
_FORMAT = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Pin:
    account_id: str
    handle: str
    sign_pk: bytes
    box_pk: bytes
    first_seen: int

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint_v2(self.sign_pk, self.box_pk)


class Contacts:
    """The pins of one home directory (``home`` None: in memory only, never written)."""

    def __init__(self, home: Path | None, pins: dict[str, Pin] | None = None) -> None:
        self.home = home
        self._pins: dict[str, Pin] = dict(pins or {})

    @classmethod
    def load(cls, home: Path) -> Contacts:
        path = home / CONTACTS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(home)
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read {path}: {exc}") from None
        try:
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            pins = {
                str(a): Pin(
                    account_id=str(a),
                    handle=str(p["handle"]),
                    sign_pk=base64.b64decode(p["sign_pk"], validate=True),
                    box_pk=base64.b64decode(p["box_pk"], validate=True),
                    first_seen=int(p["first_seen"]),
                )
                for a, p in dict(data["contacts"]).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreError(f"{path} is corrupt ({exc})") from None
        return cls(home, pins)

    def get(self, account_id: str) -> Pin | None:
        return self._pins.get(account_id)

    def by_handle(self, handle: str) -> list[Pin]:
        return [p for p in self._pins.values() if p.handle == handle]

    def check(self, account_id: str, handle: str, sign_pk: bytes, box_pk: bytes) -> None:
        """Pin an unseen account; raise KeyChanged if a pinned one shows other keys."""
        pin = self._pins.get(account_id)
        if pin is None:
            self._pins[account_id] = Pin(account_id, handle, sign_pk, box_pk, now_ms())
            self.save()
            return
        if (pin.sign_pk, pin.box_pk) == (sign_pk, box_pk):
            return
        raise KeyChanged(
            f"the keys of {pin.handle} ({account_id}) changed: pinned fingerprint "
            f"{pin.fingerprint}, the hub now presents {crypto.fingerprint_v2(sign_pk, box_pk)}. "
            "Nothing was sent to or accepted from the new keys. This happens if the hub "
            "swapped them, or if the person set up a new account. Compare the safety number "
            f"with {pin.handle} in person or by phone (chat-client safety {pin.handle}); only "
            f"if it matches, run: chat-client trust {pin.handle} --reset"
        )

    def forget(self, handle: str) -> list[Pin]:
        """Drop the pins of ``handle`` (``trust --reset``); returns what was dropped."""
        dropped = self.by_handle(handle)
        for pin in dropped:
            del self._pins[pin.account_id]
        if dropped:
            self.save()
        return dropped

    def save(self) -> None:
        if self.home is None:
            return
        data: dict[str, Any] = {
            "format": _FORMAT,
            "contacts": {
                a: {
                    "handle": p.handle,
                    "sign_pk": base64.b64encode(p.sign_pk).decode("ascii"),
                    "box_pk": base64.b64encode(p.box_pk).decode("ascii"),
                    "first_seen": p.first_seen,
                }
                for a, p in sorted(self._pins.items())
            },
        }
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".contacts-", suffix=".tmp", dir=self.home)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(data, indent=2) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.home / CONTACTS_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
