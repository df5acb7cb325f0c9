"""contacts.py (pins) and trust.py (box_sig, pins, counselor certificates), offline."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import msgspec
import pytest
from nacl.signing import SigningKey

from chat_client.contacts import CONTACTS_FILE, Contacts
from chat_client.errors import KeyChanged, KeyNotSigned, KeyStoreError, UncertifiedCounselor
from chat_client.trust import check_counselor, check_entry
from protocol import crypto
from protocol.frames import DirectoryEntry


class Org:
    def __init__(self) -> None:
        self.key = SigningKey.generate()

    @property
    def sign_pk(self) -> bytes:
        return bytes(self.key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.key.sign(message).signature)

    @property
    def fingerprint(self) -> str:
        return crypto.fingerprint(self.sign_pk)


def entry_for(
    identity: crypto.Identity, *, account_id: str = "acc_dr", **extra: object
) -> DirectoryEntry:
    fields: dict[str, object] = {
        "account_id": account_id,
        "handle": "dr-who",
        "role": "counselor",
        "sign_pk": identity.sign_pk,
        "box_pk": identity.box_pk,
        "box_sig": crypto.sign_box_key(identity),
    }
    fields.update(extra)
    return DirectoryEntry(**fields)  # type: ignore[arg-type]


def certified(identity: crypto.Identity, org: Org) -> DirectoryEntry:
    entry = entry_for(identity)
    cert = crypto.sign_counselor_cert(
        org,
        account_id=entry.account_id,
        handle=entry.handle,
        sign_pk=entry.sign_pk,
        box_pk=entry.box_pk,
        issued_at=1,
    )
    return msgspec.structs.replace(entry, cert=cert)


def test_first_use_pins_and_persists(tmp_path: Path) -> None:
    dr = crypto.Identity.generate()
    contacts = Contacts.load(tmp_path)
    check_entry(entry_for(dr), contacts)
    path = tmp_path / CONTACTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Contacts.load(tmp_path)
    pin = again.get("acc_dr")
    assert pin is not None and (pin.sign_pk, pin.box_pk) == (dr.sign_pk, dr.box_pk)
    check_entry(entry_for(dr), again)  # same keys: fine


@pytest.mark.parametrize("swap", ["box", "both"])
def test_changed_keys_are_a_hard_explained_failure(tmp_path: Path, swap: str) -> None:
    dr, evil = crypto.Identity.generate(), crypto.Identity.generate()
    check_entry(entry_for(dr), Contacts.load(tmp_path))
    if swap == "box":  # a swapped box key: box_sig no longer verifies
        bad = msgspec.structs.replace(entry_for(dr), box_pk=evil.box_pk)
        with pytest.raises(KeyNotSigned, match="key not signed"):
            check_entry(bad, Contacts.load(tmp_path))
        return
    # A whole new identity, self-consistent (the hub made it): the pin catches it.
    with pytest.raises(KeyChanged) as err:
        check_entry(entry_for(evil), Contacts.load(tmp_path))
    text = str(err.value)
    assert crypto.fingerprint_v2(dr.sign_pk, dr.box_pk) in text
    assert crypto.fingerprint_v2(evil.sign_pk, evil.box_pk) in text
    assert "chat-client trust dr-who --reset" in text and "safety number" in text
    pin = Contacts.load(tmp_path).get("acc_dr")
    assert pin is not None and pin.sign_pk == dr.sign_pk  # the pin is untouched


def test_missing_box_sig_is_refused(tmp_path: Path) -> None:
    entry = entry_for(crypto.Identity.generate(), box_sig=None)
    with pytest.raises(KeyNotSigned, match=r"dr-who \(acc_dr\): key not signed"):
        check_entry(entry, Contacts(None))


def test_forget_then_repin(tmp_path: Path) -> None:
    dr, new = crypto.Identity.generate(), crypto.Identity.generate()
    contacts = Contacts.load(tmp_path)
    check_entry(entry_for(dr), contacts)
    assert [p.account_id for p in contacts.forget("dr-who")] == ["acc_dr"]
    assert contacts.forget("dr-who") == []
    check_entry(entry_for(new), contacts)
    pin = Contacts.load(tmp_path).get("acc_dr")
    assert pin is not None and pin.sign_pk == new.sign_pk


def test_corrupt_contacts_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / CONTACTS_FILE).write_text(json.dumps({"format": 1, "contacts": {"a": {}}}))
    with pytest.raises(KeyStoreError, match="corrupt"):
        Contacts.load(tmp_path)
    (tmp_path / CONTACTS_FILE).write_text("{not json")
    with pytest.raises(KeyStoreError, match="cannot read"):
        Contacts.load(tmp_path)


def test_counselor_certificate_rules() -> None:
    dr, org, other_org = crypto.Identity.generate(), Org(), Org()
    good = certified(dr, org)
    assert check_counselor(good, org.fingerprint) is None
    assert check_counselor(good, org.fingerprint.upper().replace(" ", "")) is None
    warning = check_counselor(good, None)
    assert warning is not None and "no organisation key is pinned" in warning
    assert "the hub alone vouches that dr-who is a counselor" in warning
    with pytest.raises(UncertifiedCounselor, match="no counselor certificate"):
        check_counselor(entry_for(dr), org.fingerprint)
    with pytest.raises(UncertifiedCounselor, match="another organisation key"):
        check_counselor(certified(dr, other_org), org.fingerprint)
    # A cert for the real keys, shown with a swapped box key (and its fresh box_sig).
    evil = crypto.Identity.generate()
    swapped = msgspec.structs.replace(good, box_pk=evil.box_pk)
    with pytest.raises(UncertifiedCounselor, match="does not hold"):
        check_counselor(swapped, org.fingerprint)
    assert good.cert is not None
    forged = msgspec.structs.replace(good, cert=msgspec.structs.replace(good.cert, issued_at=2))
    with pytest.raises(UncertifiedCounselor, match="does not hold"):
        check_counselor(forged, org.fingerprint)
