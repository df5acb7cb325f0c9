"""The order participants signed, checked against the history a hub presents.

Every message's signed envelope carries ``prev_seq``/``prev_hash`` (the last record the
sender had seen) and ``n`` (the sender's running counter), and participants sign
receipts over (seq, chain hash). The hub assigns seqs and computes the chain, so it can
re-chain whatever it likes; what it cannot do is make the records it presents agree
with what the participants signed after it dropped, reordered, replayed or rewrote one.
Both ``chat-unseal`` (over a dispute bundle) and the clients (over synced history) run
:func:`check_order` and :func:`check_receipts`.

Rules, for each message at seq s from sender S (docs/PROTOCOL.md, "Signed order"):

(a) ``prev_seq < s`` (else **reordered**: S saw a later record before writing this one);
(b) if ``prev_seq > 0``, a record at ``prev_seq`` is presented (else **dropped**) and its
    chain hash is ``prev_hash`` (else **rewritten**: the history before s changed);
(c) S's ``n`` values in seq order are 1, 2, 3 ...: a value never seen although a higher
    one was is **dropped**; a value lower than one already seen is **reordered**;
(d) a repeated (S, client_msg_id) or a repeated (S, n) is **replayed**.

Records the caller could not open (no key, does not verify) are not in ``opened``; the
checks skip them, and their own failure is reported by whoever tried to open them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from .crypto import Envelope, verify_receipt
from .errors import CryptoError
from .frames import MessageRecord, SignedReceipt

__all__ = ["OrderKind", "OrderProblem", "check_order", "check_receipts"]

OrderKind = Literal["dropped", "reordered", "replayed", "rewritten"]


@dataclasses.dataclass(frozen=True)
class OrderProblem:
    """One finding: the seq it shows at, its kind, whose message or receipt, and why."""

    seq: int
    kind: OrderKind
    sender_id: str
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind} ({self.sender_id}): {self.detail}"


def check_order(
    records: Sequence[MessageRecord], opened: Mapping[int, Envelope]
) -> list[OrderProblem]:
    """Every contradiction between the presented ``records`` (in presented order) and
    the order their senders signed; ``opened`` maps a seq to its verified envelope."""
    problems: list[OrderProblem] = []
    by_seq = {r.seq: r for r in records}
    counters: dict[str, set[int]] = {}
    highest: dict[str, tuple[int, int]] = {}  # sender -> (highest n, seq it was at)
    message_ids: set[tuple[str, str]] = set()
    first_seq_above: dict[str, list[tuple[int, int]]] = {}  # sender -> [(n, seq)]
    for record in records:
        envelope = opened.get(record.seq)
        if envelope is None:
            continue
        s, sender = record.seq, record.sender_id

        def report(kind: OrderKind, detail: str, *, _s: int = s, _who: str = sender) -> None:
            problems.append(OrderProblem(_s, kind, _who, detail))

        if envelope.prev_seq >= s:
            report("reordered", f"written after seq {envelope.prev_seq}, stored at seq {s}")
        elif envelope.prev_seq > 0:
            seen = by_seq.get(envelope.prev_seq)
            if seen is None:
                report("dropped", f"seq {envelope.prev_seq}, which its sender saw, is missing")
            elif seen.chain_hash != envelope.prev_hash:
                report(
                    "rewritten",
                    f"history before seq {s} was rewritten (seq {envelope.prev_seq} differs "
                    "from what its sender saw)",
                )
        key = (sender, record.client_msg_id)
        if key in message_ids:
            report("replayed", f"message {record.client_msg_id} appears again")
        message_ids.add(key)
        seen_n = counters.setdefault(sender, set())
        top_n, top_seq = highest.get(sender, (0, 0))
        if envelope.n in seen_n:
            report("replayed", f"message n={envelope.n} of {sender} appears again")
        elif envelope.n < top_n:
            report(
                "reordered",
                f"message n={envelope.n} of {sender} comes after n={top_n} (seq {top_seq})",
            )
        seen_n.add(envelope.n)
        first_seq_above.setdefault(sender, []).append((envelope.n, s))
        if envelope.n > top_n:
            highest[sender] = (envelope.n, s)
    for sender, values in counters.items():
        top_n = highest[sender][0]
        for missing in sorted(set(range(1, top_n + 1)) - values):
            at = next(seq for n, seq in first_seq_above[sender] if n > missing)
            problems.append(
                OrderProblem(at, "dropped", sender, f"message n={missing} of {sender} is missing")
            )
    problems.sort(key=lambda p: p.seq)
    return problems


def check_receipts(
    case_id: str,
    records: Iterable[MessageRecord],
    receipts: Iterable[SignedReceipt],
    sign_pks: Mapping[str, bytes],
) -> list[OrderProblem]:
    """Each signed receipt must verify under its account's key and name the chain hash
    of the presented record at its seq (a mismatch: the history up to it was
    **rewritten**; no such record: it was **dropped**)."""
    by_seq = {r.seq: r for r in records}
    problems: list[OrderProblem] = []
    for receipt in receipts:
        seq, who = receipt.up_to_seq, receipt.account_id

        def report(kind: OrderKind, detail: str, *, _s: int = seq, _who: str = who) -> None:
            problems.append(OrderProblem(_s, kind, _who, detail))

        sign_pk = sign_pks.get(who)
        try:
            if sign_pk is None:
                raise CryptoError("not a participant")
            verify_receipt(sign_pk, case_id, receipt)
        except CryptoError:
            report("rewritten", f"{receipt.kind} receipt is not signed by {who}")
            continue
        if seq == 0:
            continue
        record = by_seq.get(seq)
        if record is None:
            report("dropped", f"seq {seq}, which {who} signed for, is missing")
        elif record.chain_hash != receipt.chain_hash:
            report("rewritten", f"history up to seq {seq} differs from what {who} signed")
    return problems
