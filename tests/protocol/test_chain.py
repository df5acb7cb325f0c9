"""The per-case hash chain and the signed chain head."""

from __future__ import annotations

import nacl.hash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import asdict, replace
from nacl.encoding import RawEncoder

from protocol import chain
from protocol.chain import GENESIS
from protocol.crypto import Identity, lp, u64
from protocol.errors import CryptoError
from protocol.frames import MessageRecord

SERVER = Identity.from_secret_bytes(bytes(range(64)))
OTHER = Identity.from_secret_bytes(bytes(range(64, 128)))
CASE = "case-1"


def make_chain(
    n: int, case_id: str = CASE, prev: bytes = GENESIS, first_seq: int = 1
) -> list[MessageRecord]:
    links = []
    for seq in range(first_seq, first_seq + n):
        fields = {
            "case_id": case_id,
            "seq": seq,
            "epoch": 1 + seq // 3,
            "sender_id": "acct-a" if seq % 2 else "acct-b",
            "client_msg_id": f"cmid-{seq:04d}",
            "nonce": bytes([seq % 256]) * 24,
            "ciphertext": bytes([seq % 256]) * (17 + seq),
        }
        prev = chain.chain_hash(prev, **fields)  # type: ignore[arg-type]
        links.append(MessageRecord(chain_hash=prev, server_ts=1000 + seq, **fields))  # type: ignore[arg-type]
    return links


def rehash(links: list[MessageRecord], prev: bytes = GENESIS) -> list[MessageRecord]:
    """What a forger who controls the whole store would write: a self-consistent chain."""
    out = []
    for link in links:
        prev = chain.chain_hash(
            prev,
            case_id=link.case_id,
            seq=link.seq,
            epoch=link.epoch,
            sender_id=link.sender_id,
            client_msg_id=link.client_msg_id,
            nonce=link.nonce,
            ciphertext=link.ciphertext,
        )
        out.append(replace(link, chain_hash=prev))
    return out


def test_chain_hash_transcript() -> None:
    link = make_chain(1)[0]
    data = lp(
        b"chat.chain.v1",
        GENESIS,
        CASE.encode(),
        u64(1),
        u64(link.epoch),
        link.sender_id.encode(),
        link.client_msg_id.encode(),
        link.nonce,
        link.ciphertext,
    )
    expected = nacl.hash.blake2b(
        data, digest_size=32, person=b"chat-chain-hash1", encoder=RawEncoder
    )
    assert link.chain_hash == expected
    assert bytes(32) == GENESIS


@pytest.mark.parametrize(
    "change",
    [
        {"case_id": "case-2"},
        {"seq": 2},
        {"epoch": 2},
        {"sender_id": "acct-x"},
        {"client_msg_id": "cmid-x"},
        {"nonce": bytes(24)},
        {"ciphertext": b"\x02" * 18},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_field_is_covered(change: dict[str, object]) -> None:
    link = make_chain(1)[0]
    fields = {k: v for k, v in asdict(link).items() if k not in ("chain_hash", "server_ts")}
    assert chain.chain_hash(GENESIS, **fields) == link.chain_hash
    assert chain.chain_hash(b"\x01" * 32, **fields) != link.chain_hash  # prev is covered
    fields.update(change)
    assert chain.chain_hash(GENESIS, **fields) != link.chain_hash


def test_intact_chain_verifies() -> None:
    assert chain.verify_chain([]) == []
    assert chain.verify_chain(make_chain(1)) == []
    assert chain.verify_chain(make_chain(5)) == []
    assert chain.verify_chain(iter(make_chain(5))) == []  # any iterable


def test_continuation_from_a_known_hash() -> None:
    links = make_chain(6)
    assert chain.verify_chain(links[3:], prev=links[2].chain_hash) == []
    assert chain.verify_chain(links[3:]) == [4]  # not from genesis


def test_altered_record_keeping_its_hash() -> None:
    links = make_chain(5)
    links[2] = replace(links[2], ciphertext=b"\xff" * 40)
    assert chain.verify_chain(links) == [3]


def test_altered_record_with_recomputed_hash_breaks_the_next_link() -> None:
    links = make_chain(5)
    altered = replace(links[2], ciphertext=b"\xff" * 40)
    links[2] = rehash([altered], prev=links[1].chain_hash)[0]
    assert chain.verify_chain(links) == [4]


def test_altered_hash() -> None:
    links = make_chain(5)
    links[1] = replace(links[1], chain_hash=bytes(32))
    assert chain.verify_chain(links) == [2, 3]


def test_dropped_record() -> None:
    links = make_chain(5)
    del links[2]
    assert chain.verify_chain(links) == [4]


def test_dropped_first_record() -> None:
    links = make_chain(3)
    assert chain.verify_chain(links[1:]) == [2]


def test_swapped_records() -> None:
    links = make_chain(5)
    links[1], links[2] = links[2], links[1]
    assert chain.verify_chain(links) == [3, 2, 4]


def test_inserted_record() -> None:
    links = make_chain(4)
    forged = make_chain(1, first_seq=3, prev=links[1].chain_hash)[0]
    forged = replace(forged, ciphertext=b"\x42" * 30)
    forged = rehash([forged], prev=links[1].chain_hash)[0]
    tampered = [*links[:2], forged, *links[2:]]
    # The forged record links correctly to seq 2; the genuine seq 3 after it is out of
    # place and does not link to it. (Seq 4 links to the stored hash of seq 3 again.)
    assert chain.verify_chain(tampered) == [3]


def test_record_from_another_case() -> None:
    links = make_chain(3)
    foreign = make_chain(3, case_id="case-2")
    assert chain.verify_chain([links[0], foreign[1], links[2]]) == [2, 3]


def test_truncation_and_full_rewrite_need_the_signed_head() -> None:
    """The chain alone cannot see a dropped tail or a history rewritten from genesis."""
    links = make_chain(5)
    head_sig = chain.sign_head(SERVER, CASE, 5, links[-1].chain_hash)

    truncated = links[:3]
    assert chain.verify_chain(truncated) == []
    with pytest.raises(CryptoError):
        chain.verify_head(SERVER.sign_pk, CASE, 3, truncated[-1].chain_hash, head_sig)

    rewritten = rehash([replace(link, ciphertext=b"\x00" * 20) for link in links])
    assert chain.verify_chain(rewritten) == []
    with pytest.raises(CryptoError):
        chain.verify_head(SERVER.sign_pk, CASE, 5, rewritten[-1].chain_hash, head_sig)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=8),
    op=st.sampled_from(["alter", "drop", "swap", "insert", "duplicate"]),
    data=st.data(),
)
def test_any_tampering_is_detected(n: int, op: str, data: st.DataObject) -> None:
    links = make_chain(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 2))
    if op == "alter":
        links[i] = replace(links[i], ciphertext=links[i].ciphertext + b"\x00")
    elif op == "drop":
        del links[i]
    elif op == "swap":
        links[i], links[i + 1] = links[i + 1], links[i]
    elif op == "insert":
        extra = replace(links[i], client_msg_id="cmid-forged")
        links.insert(i + 1, rehash([extra], prev=links[i].chain_hash)[0])
    else:
        links.insert(i + 1, links[i])
    assert chain.verify_chain(links) != []


def test_head_signature() -> None:
    head = make_chain(3)[-1].chain_hash
    sig = chain.sign_head(SERVER, CASE, 3, head)
    assert chain.head_transcript(CASE, 3, head) == lp(
        b"chat.chainhead.v1", CASE.encode(), u64(3), head
    )
    chain.verify_head(SERVER.sign_pk, CASE, 3, head, sig)
    SERVER_PK = SERVER.sign_pk
    for pk, case_id, seq, h in [
        (OTHER.sign_pk, CASE, 3, head),
        (SERVER_PK, "case-2", 3, head),
        (SERVER_PK, CASE, 2, head),
        (SERVER_PK, CASE, 3, bytes(32)),
    ]:
        with pytest.raises(CryptoError):
            chain.verify_head(pk, case_id, seq, h, sig)
