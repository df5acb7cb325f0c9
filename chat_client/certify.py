"""``chat-escrow certify``: the organisation key certifies counselors, offline.

The ceremony (docs/DISPUTES.md, "Counselor certificates"; V2 protocol section 2)::

    chat-server admin counselors pending --json > pending.json     (on the hub)
    chat-escrow certify --org-key org.key pending.json -o certs.json   (offline)
    chat-server admin counselors install-certs certs.json           (on the hub)

``pending.json`` is a JSON list (or ``{"counselors": [...]}``) of
:class:`PendingCounselor`; ``certs.json`` is a JSON list of ``CounselorCert`` (bytes
base64). Every entry's ``box_sig`` must verify under its own identity key before the
organisation vouches for it, and each counselor is shown (handle, account, fingerprint
over both keys) and confirmed one by one unless ``--yes``: the fingerprint is what the
operator compares with the counselor in person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import msgspec

from protocol import crypto
from protocol import frames as f
from protocol.errors import CryptoError

from .keyfiles import KeyFile

__all__ = ["CertifyError", "PendingCounselor", "certify", "parse_pending"]


class CertifyError(Exception):
    """pending.json is unreadable, or an entry's keys do not verify (nothing written)."""


class PendingCounselor(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One line of ``chat-server admin counselors pending --json``."""

    account_id: f.Id
    handle: f.Handle
    sign_pk: f.Key32
    box_pk: f.Key32
    box_sig: f.Sig
    fingerprint: str


class _Wrapped(msgspec.Struct, frozen=True, kw_only=True):
    counselors: list[PendingCounselor]


def parse_pending(data: bytes) -> list[PendingCounselor]:
    """Decode pending.json (a list, or an object with ``counselors``)."""
    try:
        if data.lstrip()[:1] == b"{":
            return msgspec.json.decode(data, type=_Wrapped).counselors
        return msgspec.json.decode(data, type=list[PendingCounselor])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CertifyError(f"not a pending-counselors file: {exc}") from None


@dataclasses.dataclass(frozen=True)
class _OrgSigner:
    """The org key file as a :class:`protocol.crypto.Signer`."""

    key: KeyFile

    @property
    def sign_pk(self) -> bytes:
        return self.key.sign_pk

    def sign(self, message: bytes) -> bytes:
        return bytes(self.key.sign_key.sign(message).signature)


def certify(
    org: KeyFile,
    pending: Sequence[PendingCounselor],
    *,
    now: int,
    confirm: Callable[[PendingCounselor, str], bool],
    say: Callable[[str], None],
) -> list[f.CounselorCert]:
    """Certificates for the counselors ``confirm`` accepts. Every entry's box_sig is
    checked first, so a pending list with one forged key certifies nobody."""
    for p in pending:
        try:
            crypto.verify_box_key(p.sign_pk, p.box_pk, p.box_sig)
        except CryptoError:
            raise CertifyError(
                f"{p.handle} ({p.account_id}): box key not signed by its identity key; "
                "the list was altered or the account is not upgraded. Nothing certified."
            ) from None
    signer = _OrgSigner(org)
    certs: list[f.CounselorCert] = []
    for p in pending:
        fp = crypto.fingerprint_v2(p.sign_pk, p.box_pk)
        say(f"{p.handle}  account {p.account_id}\n  fingerprint {fp}")
        if p.fingerprint.strip() != fp:
            say("  note: the fingerprint in the file differs; compare the one above")
        if not confirm(p, fp):
            say("  skipped")
            continue
        certs.append(
            crypto.sign_counselor_cert(
                signer,
                account_id=p.account_id,
                handle=p.handle,
                sign_pk=p.sign_pk,
                box_pk=p.box_pk,
                issued_at=now,
            )
        )
        say("  certified")
    return certs
