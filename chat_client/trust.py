"""Whether a directory entry may be used: box key signature, pins, counselor certificate.

Web counterpart: web_client/src/pins.js. Pure functions over protocol values (plus the
:class:`contacts.Contacts` store), so each rule is tested without a network:

* :func:`check_entry`: the box key must carry its identity key's signature
  (``box_sig``; V2 protocol section 1) and both keys must match the pin (section 3).
  Raises KeyNotSigned / KeyChanged; a missing signature is refused the same way, since
  the hub could strip it.
* :func:`check_counselor`: before a case key is shared with a counselor, its
  certificate must verify under the pinned organisation key (section 2). With no
  organisation pinned it returns the plain warning the caller shows once per case.
"""

from __future__ import annotations

import hmac

from protocol import crypto
from protocol import frames as f
from protocol.errors import CryptoError

from .contacts import Contacts
from .errors import KeyNotSigned, UncertifiedCounselor

__all__ = ["check_counselor", "check_entry", "no_org_warning", "normal_fingerprint"]


def normal_fingerprint(text: str) -> str:
    """A fingerprint as typed or printed, without spaces and in lower case."""
    return "".join(text.split()).lower()


def check_entry(entry: f.DirectoryEntry, contacts: Contacts) -> None:
    """KeyNotSigned unless ``box_sig`` verifies; KeyChanged if it differs from the pin."""
    who = f"{entry.handle} ({entry.account_id})"
    if entry.box_sig is None:
        raise KeyNotSigned(
            f"{who}: key not signed: the directory entry has no signature over the box "
            "key (an account not yet upgraded to protocol 2, or the hub removed it); "
            "nothing is sealed to or accepted from it"
        )
    try:
        crypto.verify_box_key(entry.sign_pk, entry.box_pk, entry.box_sig)
    except CryptoError:
        raise KeyNotSigned(
            f"{who}: key not signed: the box key's signature does not verify under the "
            "identity key, so the hub may have substituted it; nothing is sealed to it"
        ) from None
    contacts.check(entry.account_id, entry.handle, entry.sign_pk, entry.box_pk)


def no_org_warning(handle: str) -> str:
    return (
        f"no organisation key is pinned: the hub alone vouches that {handle} is a "
        "counselor (pin one with --org-fingerprint / CHAT_ORG_FINGERPRINT)"
    )


def check_counselor(entry: f.DirectoryEntry, org_fingerprint: str | None) -> str | None:
    """None if ``entry`` is certified by the pinned organisation key; the warning text if
    nothing is pinned; UncertifiedCounselor if a pin exists and the cert is missing,
    from another organisation, or not about exactly these keys."""
    if org_fingerprint is None:
        return no_org_warning(entry.handle)
    who = f"{entry.handle} ({entry.account_id})"
    cert = entry.cert
    if cert is None:
        raise UncertifiedCounselor(
            f"{who} has no counselor certificate from the pinned organisation key; "
            "the case key was not shared with them (ask the organisation to certify "
            "this counselor with chat-escrow certify)"
        )
    if not hmac.compare_digest(
        normal_fingerprint(crypto.fingerprint(cert.org_sign_pk)),
        normal_fingerprint(org_fingerprint),
    ):
        raise UncertifiedCounselor(
            f"{who}'s counselor certificate is signed by another organisation key "
            f"({crypto.fingerprint(cert.org_sign_pk)}); the case key was not shared"
        )
    try:
        crypto.verify_counselor_cert(
            cert,
            cert.org_sign_pk,
            account_id=entry.account_id,
            sign_pk=entry.sign_pk,
            box_pk=entry.box_pk,
        )
    except CryptoError as exc:
        raise UncertifiedCounselor(
            f"{who}'s counselor certificate does not hold ({exc}); the case key was not shared"
        ) from None
    return None
