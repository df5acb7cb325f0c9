"""Case-key and message verification rules, as pure functions over protocol values.

These are the checks that decide whether anything is shown as verified, so they live
apart from the asyncio plumbing and are tested without a network:

* a new epoch key is sealed to exactly the case's participants, with a signed commitment
  that also names its escrow binding (the policy it is made under, or "none");
* a fetched epoch key is accepted only if its creator is a participant, the commitment
  and binding signature verifies under the creator's sign_pk, and the opened key matches
  the commitment (opening.open_case_key);
* a message is verified only if it decrypts under the epoch key, its sender is a
  participant whose signature verifies, its envelope is in the one canonical encoding
  (re-encoded after decoding: "noncanonical" otherwise), and its chain link follows
  from the previous one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from protocol import crypto, opening
from protocol.chain import chain_hash
from protocol.errors import CryptoError, Noncanonical
from protocol.frames import CaseInfo, DirectoryEntry, EpochKey, KeySeal, MessageRecord

from .models import Message

__all__ = [
    "Keyring",
    "NewEpochKey",
    "link_matches",
    "make_epoch_key",
    "open_epoch_key",
    "open_record",
    "participants",
    "share_seal",
]


def participants(case: CaseInfo) -> list[str]:
    """The account ids entitled to the case key (the client, then the counselor)."""
    ids = [case.client_id]
    if case.counselor_id is not None:
        ids.append(case.counselor_id)
    return ids


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class NewEpochKey:
    """A freshly made epoch key and the fields of its ``case.key`` deposit."""

    epoch: int
    key: bytes
    commitment: bytes
    commitment_sig: bytes
    seals: list[KeySeal]
    escrow: str


def make_epoch_key(
    identity: crypto.Identity,
    case: CaseInfo,
    epoch: int,
    directory: Mapping[str, DirectoryEntry],
    escrow: str,
) -> NewEpochKey:
    """Create K for ``epoch`` sealed to every participant (box_pk from the directory):
    the client alone while the case waits (the counselor's seal follows with
    :func:`share_seal`), bound to the escrow policy ``escrow`` (a fingerprint, or
    crypto.NO_ESCROW)."""
    members = participants(case)
    key = crypto.new_case_key()
    commitment = crypto.key_commitment(key, case.case_id, epoch)
    sig = crypto.sign_commitment(identity, case.case_id, epoch, commitment, escrow=escrow)
    seals = [
        KeySeal(account_id=a, sealed=crypto.seal_case_key(key, directory[a].box_pk))
        for a in members
    ]
    return NewEpochKey(epoch, key, commitment, sig, seals, escrow)


def share_seal(key: bytes, counselor: DirectoryEntry) -> KeySeal:
    """The seal of an existing epoch key for the case's counselor (``case.key.share``);
    ``counselor`` must have passed trust.check_entry and trust.check_counselor."""
    return KeySeal(
        account_id=counselor.account_id, sealed=crypto.seal_case_key(key, counselor.box_pk)
    )


def open_epoch_key(
    identity: crypto.Identity,
    case: CaseInfo,
    epoch_key: EpochKey,
    creator: DirectoryEntry | None,
) -> bytes:
    """Verify and open one ``case.keys`` entry; raise CryptoError if anything is off."""
    if epoch_key.creator_id not in participants(case) or creator is None:
        raise CryptoError(f"epoch {epoch_key.epoch} key was made by a non-participant")
    if creator.account_id != epoch_key.creator_id:
        raise CryptoError("directory entry does not match the key's creator")
    crypto.verify_commitment(
        creator.sign_pk,
        case.case_id,
        epoch_key.epoch,
        epoch_key.commitment,
        epoch_key.commitment_sig,
        escrow=epoch_key.escrow,
    )
    return opening.open_case_key(
        epoch_key.sealed, identity, case.case_id, epoch_key.epoch, epoch_key.commitment
    )


def link_matches(prev: bytes, record: MessageRecord) -> bool:
    """Does ``record.chain_hash`` follow from the previous record's hash?"""
    return (
        chain_hash(
            prev,
            case_id=record.case_id,
            seq=record.seq,
            epoch=record.epoch,
            sender_id=record.sender_id,
            client_msg_id=record.client_msg_id,
            nonce=record.nonce,
            ciphertext=record.ciphertext,
        )
        == record.chain_hash
    )


def open_record(
    record: MessageRecord,
    *,
    case: CaseInfo | None,
    key: bytes | None,
    sender: DirectoryEntry | None,
    prev_hash: bytes | None,
) -> Message:
    """Decrypt and verify one stored message. Never raises for a bad message: the
    failure is reported in ``Message.error`` with ``verified=False`` and no body.

    ``prev_hash`` is the chain hash of seq - 1 (None when not known: no chain check).
    """

    def rejected(why: str) -> Message:
        return Message(
            case_id=record.case_id,
            seq=record.seq,
            epoch=record.epoch,
            sender_id=record.sender_id,
            client_msg_id=record.client_msg_id,
            body=None,
            ts=record.server_ts,
            verified=False,
            error=why,
            chain_hash=record.chain_hash,
        )

    if case is None:
        return rejected("unknown case")
    if record.sender_id not in participants(case) or sender is None:
        return rejected("sender is not a participant of the case")
    if key is None:
        return rejected(f"no verified key for epoch {record.epoch}")
    try:
        envelope = opening.decrypt_message(
            key,
            sender.sign_pk,
            case_id=record.case_id,
            epoch=record.epoch,
            sender_id=record.sender_id,
            client_msg_id=record.client_msg_id,
            nonce=record.nonce,
            ciphertext=record.ciphertext,
        )
    except Noncanonical as exc:
        # Both clients re-encode after verifying (V2 section 5): other bytes, other reader.
        return rejected(f"noncanonical: {exc}")
    except CryptoError as exc:
        return rejected(str(exc))
    if prev_hash is not None and not link_matches(prev_hash, record):
        # Authentic content, but the server's history does not add up: say so.
        return rejected("hash chain mismatch (a stored message was dropped or altered)")
    return Message(
        case_id=record.case_id,
        seq=record.seq,
        epoch=record.epoch,
        sender_id=record.sender_id,
        client_msg_id=record.client_msg_id,
        body=envelope.body,
        ts=envelope.ts,
        verified=True,
        chain_hash=record.chain_hash,
        envelope=envelope,
    )


class Keyring:
    """In-memory cache of verified case keys: (case_id, epoch) -> K, with the escrow
    binding its creator signed. Never persisted."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, int], bytes] = {}
        self._escrow: dict[tuple[str, int], str] = {}

    def get(self, case_id: str, epoch: int) -> bytes | None:
        return self._keys.get((case_id, epoch))

    def escrow(self, case_id: str, epoch: int) -> str | None:
        """The escrow binding of a held key (None if the key is not held)."""
        return self._escrow.get((case_id, epoch))

    def put(self, case_id: str, epoch: int, key: bytes, escrow: str = crypto.NO_ESCROW) -> None:
        self._keys[(case_id, epoch)] = key
        self._escrow[(case_id, epoch)] = escrow

    def latest(self, case_id: str) -> int:
        """Highest epoch held for the case (0 if none)."""
        return max((e for (c, e) in self._keys if c == case_id), default=0)
