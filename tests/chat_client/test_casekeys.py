"""Verification rules: epoch keys and messages, without a network."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from chat_client.casekeys import (
    Keyring,
    link_matches,
    make_epoch_key,
    open_epoch_key,
    open_record,
    participants,
    share_seal,
)
from protocol import crypto
from protocol.chain import GENESIS, chain_hash
from protocol.crypto import NO_ESCROW
from protocol.errors import CryptoError
from protocol.frames import CaseInfo, DirectoryEntry, EpochKey, MessageRecord

CASE = "case_1"


@dataclasses.dataclass
class Party:
    account_id: str
    identity: crypto.Identity

    @property
    def entry(self) -> DirectoryEntry:
        return DirectoryEntry(
            account_id=self.account_id,
            handle=self.account_id.replace("_", "-"),
            role="client",
            sign_pk=self.identity.sign_pk,
            box_pk=self.identity.box_pk,
        )


@pytest.fixture
def world() -> tuple[Party, Party, Party, CaseInfo]:
    client = Party("acc_client", crypto.Identity.generate())
    counselor = Party("acc_counselor", crypto.Identity.generate())
    mallory = Party("acc_mallory", crypto.Identity.generate())
    case = CaseInfo(
        case_id=CASE,
        client_id=client.account_id,
        counselor_id=counselor.account_id,
        state="assigned",
        topic="anxiety",
        language="en",
        epoch=0,
        last_seq=0,
        created_at=0,
    )
    return client, counselor, mallory, case


def deposit_as_epoch_key(new, creator: Party, reader: Party) -> EpochKey:  # type: ignore[no-untyped-def]
    seal = next(s for s in new.seals if s.account_id == reader.account_id)
    return EpochKey(
        epoch=new.epoch,
        creator_id=creator.account_id,
        commitment=new.commitment,
        commitment_sig=new.commitment_sig,
        escrow=new.escrow,
        sealed=seal.sealed,
    )


def record_for(key: bytes, sender: Party, seq: int, prev: bytes, body: str = "hi") -> MessageRecord:
    envelope = crypto.Envelope(
        body=body,
        ts=1000 + seq,
        client_msg_id=f"cmid-{seq:04d}",
        prev_seq=seq - 1,
        prev_hash=prev,
        n=seq,
    )
    nonce, ct = crypto.encrypt_message(
        key, sender.identity, case_id=CASE, epoch=1, sender_id=sender.account_id, envelope=envelope
    )
    h = chain_hash(
        prev,
        case_id=CASE,
        seq=seq,
        epoch=1,
        sender_id=sender.account_id,
        client_msg_id=envelope.client_msg_id,
        nonce=nonce,
        ciphertext=ct,
    )
    return MessageRecord(
        case_id=CASE,
        seq=seq,
        epoch=1,
        sender_id=sender.account_id,
        client_msg_id=envelope.client_msg_id,
        nonce=nonce,
        ciphertext=ct,
        chain_hash=h,
        server_ts=99,
    )


def test_epoch_key_sealed_to_each_participant_and_opens(world) -> None:  # type: ignore[no-untyped-def]
    client, counselor, _, case = world
    directory = {p.account_id: p.entry for p in (client, counselor)}
    new = make_epoch_key(client.identity, case, 1, directory, NO_ESCROW)
    assert [s.account_id for s in new.seals] == participants(case)
    for reader in (client, counselor):
        ek = deposit_as_epoch_key(new, client, reader)
        assert open_epoch_key(reader.identity, case, ek, client.entry) == new.key


def test_epoch_key_from_non_participant_or_bad_sig_is_rejected(world) -> None:  # type: ignore[no-untyped-def]
    client, counselor, mallory, case = world
    directory = {p.account_id: p.entry for p in (client, counselor)}
    new = make_epoch_key(client.identity, case, 1, directory, NO_ESCROW)
    ek = deposit_as_epoch_key(new, client, counselor)
    forged = msgspec.structs.replace(ek, creator_id=mallory.account_id)
    with pytest.raises(CryptoError, match="non-participant"):
        open_epoch_key(counselor.identity, case, forged, mallory.entry)
    # Right creator id, but the signature is checked against the creator's real key.
    with pytest.raises(CryptoError, match="signature"):
        open_epoch_key(
            counselor.identity,
            case,
            ek,
            msgspec.structs.replace(client.entry, sign_pk=mallory.identity.sign_pk),
        )
    # A commitment that does not match the sealed key.
    other = make_epoch_key(client.identity, case, 1, directory, NO_ESCROW)
    mixed = msgspec.structs.replace(
        ek, commitment=other.commitment, commitment_sig=other.commitment_sig
    )
    with pytest.raises(CryptoError, match="commitment"):
        open_epoch_key(counselor.identity, case, mixed, client.entry)


def test_waiting_case_key_is_sealed_to_the_client_and_shared_later(world) -> None:  # type: ignore[no-untyped-def]
    client, counselor, _, case = world
    waiting = msgspec.structs.replace(case, counselor_id=None, state="waiting")
    new = make_epoch_key(client.identity, waiting, 1, {client.account_id: client.entry}, NO_ESCROW)
    assert [s.account_id for s in new.seals] == [client.account_id]
    # Once a counselor is assigned, the client adds their seal; it opens to the same K.
    seal = share_seal(new.key, counselor.entry)
    assert seal.account_id == counselor.account_id
    shared = EpochKey(
        epoch=1,
        creator_id=client.account_id,
        commitment=new.commitment,
        commitment_sig=new.commitment_sig,
        escrow=NO_ESCROW,
        sealed=seal.sealed,
    )
    assert open_epoch_key(counselor.identity, case, shared, client.entry) == new.key


def test_open_record_verifies_and_checks_chain(world) -> None:  # type: ignore[no-untyped-def]
    client, counselor, _, case = world
    key = crypto.new_case_key()
    r1 = record_for(key, client, 1, GENESIS, "first")
    r2 = record_for(key, counselor, 2, r1.chain_hash, "second")
    m1 = open_record(r1, case=case, key=key, sender=client.entry, prev_hash=GENESIS)
    m2 = open_record(r2, case=case, key=key, sender=counselor.entry, prev_hash=r1.chain_hash)
    assert (m1.verified, m1.body, m1.ts) == (True, "first", 1001)
    assert (m2.verified, m2.body) == (True, "second")
    assert link_matches(GENESIS, r1) and not link_matches(GENESIS, r2)
    # Unknown prev: no chain check, still verified by signature.
    assert open_record(r2, case=case, key=key, sender=counselor.entry, prev_hash=None).verified
    broken = open_record(r2, case=case, key=key, sender=counselor.entry, prev_hash=GENESIS)
    assert (broken.verified, broken.body) == (False, None)
    assert broken.error is not None and "chain" in broken.error


@pytest.mark.parametrize("tamper", ["ciphertext", "sender", "key", "signer", "stranger"])
def test_tampered_message_is_never_verified(world, tamper: str) -> None:  # type: ignore[no-untyped-def]
    client, counselor, mallory, case = world
    key = crypto.new_case_key()
    record = record_for(key, client, 1, GENESIS, "secret")
    sender = client.entry
    use_key = key
    if tamper == "ciphertext":
        ct = bytearray(record.ciphertext)
        ct[5] ^= 1
        record = msgspec.structs.replace(record, ciphertext=bytes(ct))
    elif tamper == "sender":
        record = msgspec.structs.replace(record, sender_id=counselor.account_id)
        sender = counselor.entry
    elif tamper == "key":
        use_key = crypto.new_case_key()
    elif tamper == "signer":
        sender = msgspec.structs.replace(client.entry, sign_pk=mallory.identity.sign_pk)
    elif tamper == "stranger":
        record = record_for(key, mallory, 1, GENESIS, "injected")
        sender = mallory.entry
    message = open_record(record, case=case, key=use_key, sender=sender, prev_hash=None)
    assert message.verified is False
    assert message.body is None
    assert message.error


def test_missing_key_or_case(world) -> None:  # type: ignore[no-untyped-def]
    client, _, _, case = world
    record = record_for(crypto.new_case_key(), client, 1, GENESIS)
    assert "no verified key" in (
        open_record(record, case=case, key=None, sender=client.entry, prev_hash=None).error or ""
    )
    assert open_record(record, case=None, key=None, sender=None, prev_hash=None).error == (
        "unknown case"
    )


def test_keyring() -> None:
    ring = Keyring()
    assert ring.latest("c") == 0 and ring.get("c", 1) is None
    ring.put("c", 1, b"k1")
    ring.put("c", 3, b"k3", "abcd " * 9 + "abcd")
    ring.put("d", 5, b"k5")
    assert ring.latest("c") == 3 and ring.get("c", 1) == b"k1"
    assert ring.escrow("c", 1) == NO_ESCROW and ring.escrow("c", 3) == "abcd " * 9 + "abcd"
    assert ring.escrow("c", 2) is None
