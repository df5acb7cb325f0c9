"""Property test of append_batch: random batches (with retries, conflicts and replayed
nonces) against a simple in-memory model of what the server promises."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.chain import GENESIS, verify_chain
from protocol.errors import Duplicate, NotFound, Replayed
from storage import AlreadyStored, Database, MessageRecord, NewMessage
from tests.helpers.storage_factories import add_account, all_messages, epoch_key

SENDERS = ["s0", "s1", "s2"]
CMIDS = ["a", "b", "c", "d", "e"]
N_CASES = 2  # index N_CASES stands for a case that does not exist

# One message: (case index, sender index, client_msg_id index, content variant).
# Few ids and two variants make identical retries and conflicting reuse common; the
# content depends on (cmid, variant) only, so two senders with one cmid make a replay.
_message = st.tuples(
    st.integers(0, N_CASES),
    st.integers(0, len(SENDERS) - 1),
    st.integers(0, len(CMIDS) - 1),
    st.integers(0, 1),
)
_batches = st.lists(st.lists(_message, min_size=0, max_size=12), min_size=1, max_size=4)

_example = itertools.count()


def _content(cmid: str, variant: int) -> tuple[bytes, bytes]:
    seed = f"{cmid}/{variant}".encode()
    return hashlib.sha256(b"n" + seed).digest()[:24], hashlib.sha256(b"c" + seed).digest()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=_batches)
async def test_append_batch_matches_model(
    db: Database, batches: list[list[tuple[int, ...]]]
) -> None:
    n = next(_example)
    if await db.accounts.by_id(SENDERS[0]) is None:  # first example on this database
        for s in SENDERS:
            await add_account(db, s)
    # Fresh cases per example: examples share the database but never a case.
    cases = [f"p{n}-{i}" for i in range(N_CASES)]
    for case_id in cases:
        await db.cases.create("s0", "topic", "en", case_id, n)
        await db.cases.assign(case_id, "s1", n)
        await db.cases.add_epoch_key(epoch_key(case_id, 1, "s0", ["s0", "s1"]))
    ids = [*cases, f"missing-{n}"]

    # The model: per idempotency key the record first stored; per case the head.
    stored: dict[tuple[str, str, str], MessageRecord] = {}
    nonces: set[tuple[str, bytes]] = set()  # a nonce is stored once per case
    heads = {c: (0, GENESIS) for c in cases}
    for round_, batch in enumerate(batches):
        msgs = []
        for ci, si, mi, variant in batch:
            nonce, ct = _content(CMIDS[mi], variant)
            msgs.append(NewMessage(ids[ci], 1, SENDERS[si], CMIDS[mi], nonce, ct))
        results = await db.messages.append_batch(msgs, now_ms=round_)
        assert len(results) == len(msgs)
        for m, r in zip(msgs, results, strict=True):
            key = (m.case_id, m.sender_id, m.client_msg_id)
            if m.case_id not in heads:
                assert isinstance(r, NotFound)
            elif key in stored:
                first = stored[key]
                if (first.nonce, first.ciphertext) == (m.nonce, m.ciphertext):
                    assert r == AlreadyStored(first)
                else:
                    assert isinstance(r, Duplicate)
            elif (m.case_id, m.nonce) in nonces:
                assert isinstance(r, Replayed)
            else:
                assert isinstance(r, MessageRecord)
                assert r.seq == heads[m.case_id][0] + 1 and r.server_ts == round_
                assert (r.case_id, r.sender_id, r.client_msg_id, r.epoch) == (*key, m.epoch)
                assert (r.nonce, r.ciphertext) == (m.nonce, m.ciphertext)
                heads[m.case_id] = (r.seq, r.chain_hash)
                stored[key] = r
                nonces.add((m.case_id, m.nonce))

    for case_id in cases:
        rows = await all_messages(db, case_id)
        assert [m.seq for m in rows] == list(range(1, heads[case_id][0] + 1))
        assert verify_chain(rows) == []
        assert await db.messages.last(case_id) == heads[case_id]
        for row in rows:
            assert stored[(row.case_id, row.sender_id, row.client_msg_id)] == row
    assert sum(1 for k in stored if k[0] in cases) == sum(h[0] for h in heads.values())
