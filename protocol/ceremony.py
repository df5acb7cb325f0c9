"""The files of the counselor certification ceremony (docs/DISPUTES.md, "Certifying
counselors"): what the hub lists, what the organisation signs offline.

1. ``chat-server admin counselors pending --json > pending.json``: a
   :class:`PendingCounselors` document, the counselors without a certificate, each with
   its keys, its box key signature and its fingerprint (crypto.fingerprint_v2).
2. ``chat-escrow certify --org-key org.key pending.json -o certs.json``: offline, the
   organisation checks each box key signature, shows each handle and fingerprint for a
   person to confirm, and writes a :class:`CounselorCerts` document.
3. ``chat-server admin counselors install-certs certs.json``: the hub checks each
   certificate against the installed escrow policy's organisation key and the keys it
   stores for the account, and stores it; directory entries then carry it.

Both documents are JSON with bytes as standard base64, like the wire frames. Neither
holds a secret: the hub never sees the organisation's private key.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import InvalidFrame
from .frames import CounselorCert, Handle, Id, Key32, Sig

__all__ = [
    "CounselorCerts",
    "PendingCounselor",
    "PendingCounselors",
    "decode_certs",
    "decode_pending",
    "encode_document",
]


class PendingCounselor(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    account_id: Id
    handle: Handle
    sign_pk: Key32
    box_pk: Key32
    box_sig: Sig
    #: crypto.fingerprint_v2(sign_pk, box_pk), for the person confirming.
    fingerprint: str


class PendingCounselors(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["counsel-chat/pending-counselors"] = "counsel-chat/pending-counselors"
    version: Literal[1] = 1
    counselors: list[PendingCounselor]


class CounselorCerts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["counsel-chat/counselor-certs"] = "counsel-chat/counselor-certs"
    version: Literal[1] = 1
    certs: list[CounselorCert]


_pending_decoder = msgspec.json.Decoder(PendingCounselors)
_certs_decoder = msgspec.json.Decoder(CounselorCerts)


def encode_document(document: PendingCounselors | CounselorCerts) -> bytes:
    """Indented JSON (people read these files before they sign or install them)."""
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def decode_pending(data: bytes) -> PendingCounselors:
    """InvalidFrame (naming the problem) unless ``data`` is a pending-counselors file."""
    try:
        return _pending_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidFrame(f"not a pending-counselors file: {str(exc)[:160]}") from None


def decode_certs(data: bytes) -> CounselorCerts:
    """InvalidFrame (naming the problem) unless ``data`` is a counselor-certs file."""
    try:
        return _certs_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidFrame(f"not a counselor-certs file: {str(exc)[:160]}") from None
