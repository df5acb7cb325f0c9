"""``chat-escrow certify``: the organisation key certifies counselors, offline.

The ceremony (docs/DISPUTES.md, "Counselor certificates"; V2 protocol section 2)::

    chat-server admin counselors pending --json > pending.json     (on the hub)
    chat-escrow certify --org-key org.key pending.json -o certs.json   (offline)
    chat-server admin counselors install-certs certs.json           (on the hub)

``pending.json`` and ``certs.json`` are protocol/ceremony.py's documents. Every
entry's ``box_sig`` must verify under its own identity key before the organisation
vouches for any, and each counselor is shown (handle, account, fingerprint over both
keys, computed here) and confirmed one by one unless ``--yes``: the fingerprint is what
the operator compares with the counselor in person.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from protocol import crypto
from protocol import frames as f
from protocol.ceremony import CounselorCerts, PendingCounselor, decode_pending, encode_document
from protocol.errors import CryptoError, InvalidFrame

from .keyfiles import KeyFile

__all__ = ["CertifyError", "certify", "certs_document", "parse_pending"]


class CertifyError(Exception):
    """pending.json is unreadable, or an entry's keys do not verify (nothing written)."""


def parse_pending(data: bytes) -> list[PendingCounselor]:
    """The counselors of a pending-counselors document (CertifyError if it is not one)."""
    try:
        return decode_pending(data).counselors
    except InvalidFrame as exc:
        raise CertifyError(str(exc)) from None


def certs_document(certs: list[f.CounselorCert]) -> bytes:
    """certs.json for ``chat-server admin counselors install-certs``."""
    return encode_document(CounselorCerts(certs=certs))


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
