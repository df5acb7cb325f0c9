"""The per-case hash chain over stored messages, and the signed chain head.

Each stored record's hash covers the previous record's hash, so a dropped, altered,
inserted or reordered record breaks every later link. The server signs the head
(case, seq, hash) with its own Ed25519 key so an exported bundle can prove which
history the server committed to.
"""

from __future__ import annotations

from collections.abc import Iterable

import nacl.hash
from nacl.encoding import RawEncoder

from .crypto import Signer, lp, u64, verify_signature
from .frames import MessageRecord

__all__ = [
    "GENESIS",
    "chain_hash",
    "head_transcript",
    "sign_head",
    "verify_chain",
    "verify_head",
]

#: The "previous hash" of the first message of every case.
GENESIS = bytes(32)


def chain_hash(
    prev: bytes,
    *,
    case_id: str,
    seq: int,
    epoch: int,
    sender_id: str,
    client_msg_id: str,
    nonce: bytes,
    ciphertext: bytes,
) -> bytes:
    data = lp(
        b"chat.chain.v1",
        prev,
        case_id.encode(),
        u64(seq),
        u64(epoch),
        sender_id.encode(),
        client_msg_id.encode(),
        nonce,
        ciphertext,
    )
    return nacl.hash.blake2b(data, digest_size=32, person=b"chat-chain-hash1", encoder=RawEncoder)


def verify_chain(records: Iterable[MessageRecord], prev: bytes = GENESIS) -> list[int]:
    """Return the seqs whose stored hash or position does not follow from the chain.

    Records must come in the order they are presented (a bundle's order); a record that
    is missing, altered or out of place makes its own seq (and the one after it) fail.
    ``server_ts`` is not covered: the server's clock is not evidence.
    """
    bad: list[int] = []
    expected_seq = None
    for link in records:
        if expected_seq is not None and link.seq != expected_seq:
            bad.append(link.seq)
        computed = chain_hash(
            prev,
            case_id=link.case_id,
            seq=link.seq,
            epoch=link.epoch,
            sender_id=link.sender_id,
            client_msg_id=link.client_msg_id,
            nonce=link.nonce,
            ciphertext=link.ciphertext,
        )
        if computed != link.chain_hash and link.seq not in bad:
            bad.append(link.seq)
        prev = link.chain_hash
        expected_seq = link.seq + 1
    return bad


def head_transcript(case_id: str, seq: int, head: bytes) -> bytes:
    return lp(b"chat.chainhead.v1", case_id.encode(), u64(seq), head)


def sign_head(server: Signer, case_id: str, seq: int, head: bytes) -> bytes:
    return server.sign(head_transcript(case_id, seq, head))


def verify_head(server_pk: bytes, case_id: str, seq: int, head: bytes, sig: bytes) -> None:
    verify_signature(server_pk, head_transcript(case_id, seq, head), sig)
