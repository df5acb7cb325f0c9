"""What this client has seen of the organisation's escrow policies, kept in its home.

``escrow-pins.json`` next to ``account.json`` (mode 0600, written atomically) holds:

* ``org_fingerprint``: the organisation key pinned on first use, when the person
  accepted terms that showed it (``chat-client consent`` without --org-fingerprint);
  a pin given explicitly (flag, $CHAT_ORG_FINGERPRINT) must agree with it;
* ``policy_versions``: per organisation fingerprint, the highest policy version this
  client has verified. A policy of that organisation with a lower version is refused
  (:class:`PolicyRollback`): a hub cannot keep serving policy 1 after the organisation
  replaced it with policy 2 (e.g. without an officer it no longer trusts).

Nothing here is secret; it is integrity state the hub must not be able to roll back.
Web counterpart: none yet (the page keeps no such state; see docs/DISPUTES.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from protocol.escrow import PolicyError

__all__ = ["PINS_FILE", "EscrowPins", "OrgPinChanged", "PolicyRollback"]

PINS_FILE = "escrow-pins.json"


class PolicyRollback(PolicyError):
    """The hub serves an older policy version than one this client already verified."""


class OrgPinChanged(PolicyError):
    """The organisation fingerprint given differs from the one pinned in the home."""


def _normal(fp: str) -> str:
    return "".join(fp.split()).lower()


class EscrowPins:
    """The pins file of one home (None: keep the state in memory only)."""

    def __init__(self, home: Path | None) -> None:
        self._path = home / PINS_FILE if home is not None else None
        self._org: str | None = None
        self._versions: dict[str, int] = {}
        if self._path is not None and self._path.exists():
            try:
                data = json.loads(self._path.read_text(encoding="utf-8"))
                org = data.get("org_fingerprint")
                self._org = str(org) if org else None
                self._versions = {
                    str(k): int(v) for k, v in dict(data.get("policy_versions", {})).items()
                }
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise PolicyError(f"cannot read {self._path}: {exc}") from None

    @property
    def org_fingerprint(self) -> str | None:
        return self._org

    def resolve(self, given: str | None) -> str | None:
        """The organisation pin in force: ``given`` if any (it must agree with a stored
        pin), else the one pinned in the home."""
        if given and self._org and _normal(given) != _normal(self._org):
            raise OrgPinChanged(
                f"the organisation fingerprint given ({given}) is not the one pinned in "
                f"this home ({self._org}); if the organisation really changed its key, "
                f"verify the new one out of band and remove {self._path}"
            )
        return given or self._org

    def pin_org(self, fingerprint: str) -> None:
        """Trust on first use: store the organisation fingerprint the person accepted."""
        self.resolve(fingerprint)
        self._org = fingerprint
        self._save()

    def check_version(self, org_fingerprint: str, version: int) -> None:
        """PolicyRollback if a higher version of this organisation's policy was seen;
        else remember ``version`` if it is the highest so far."""
        org = _normal(org_fingerprint)
        highest = self._versions.get(org, 0)
        if version < highest:
            raise PolicyRollback(
                f"the hub serves escrow policy version {version}, but this client has "
                f"already seen version {highest} from the same organisation: refusing "
                "the older policy"
            )
        if version > highest:
            self._versions[org] = version
            self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        data = {"org_fingerprint": self._org, "policy_versions": self._versions}
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pins-", suffix=".tmp", dir=self._path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
