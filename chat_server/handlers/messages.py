"""Message use cases: send (ack after commit, then fan-out), sync, receipts, typing.

``msg_send`` does not wait for the commit: it checks that the caller takes part in the
case, hands the message to the group committer and returns, so one session can pipeline
many sends into one transaction. Whether the case still accepts it (not closed, the
epoch has a key; a waiting case takes its client's messages) is decided by the append
itself, under the case's row lock, so a close committed on any hub refuses every later
send. The committer then hands
the outcome to the session registry, which acks (or refuses) and fans out, in commit
order.
"""

from __future__ import annotations

from protocol import crypto
from protocol import frames as f
from protocol.errors import CryptoError, Forbidden, InvalidFrame, RateLimited
from protocol.limits import MAX_SERVER_FRAME_BYTES
from storage.records import NewMessage

from ..context import Caller
from ..hub import Hub

__all__ = ["msg_send", "receipt", "sync", "typing"]


async def msg_send(hub: Hub, caller: Caller, frame: f.MsgSend) -> None:
    decision = hub.account_messages.take_now(caller.account_id)
    if not decision.allowed:
        # One budget for all of the account's sessions (each also has its own).
        raise RateLimited(
            "too many messages from this account; slow down",
            retry_after_ms=decision.retry_after_ms,
        )
    participants = await hub.casebook.participants(frame.case_id, caller.account_id)
    hub.committer.submit(
        NewMessage(
            case_id=frame.case_id,
            epoch=frame.epoch,
            sender_id=caller.account_id,
            client_msg_id=frame.client_msg_id,
            nonce=frame.nonce,
            ciphertext=frame.ciphertext,
        ),
        caller.peer,
        frame.id,
        participants,
    )


#: Budget for one sync.result, under MAX_SERVER_FRAME_BYTES with room for the envelope.
_SYNC_BYTES = MAX_SERVER_FRAME_BYTES - 64 * 1024


def _encoded_size(m: f.MessageRecord) -> int:
    # base64 of the binary fields plus a generous allowance for ids and JSON punctuation.
    return (len(m.ciphertext) + len(m.nonce) + len(m.chain_hash)) * 4 // 3 + 400


async def sync(hub: Hub, caller: Caller, frame: f.Sync) -> f.SyncResult:
    await hub.casebook.participants(frame.case_id, caller.account_id)
    rows = await hub.db.messages.range(frame.case_id, frame.after_seq, frame.limit + 1)
    last_seq, _ = await hub.db.messages.last(frame.case_id)
    batch: list[f.MessageRecord] = []
    budget = _SYNC_BYTES
    for m in rows[: frame.limit]:
        budget -= _encoded_size(m)
        if budget < 0 and batch:
            break
        batch.append(m)
    return f.SyncResult(
        id=frame.id,
        case_id=frame.case_id,
        messages=batch,
        last_seq=last_seq,
        has_more=len(rows) > len(batch),
        receipts=await hub.db.receipts.signed_for_case(frame.case_id),
    )


async def receipt(hub: Hub, caller: Caller, frame: f.Receipt) -> f.Ok:
    """Store a participant's signed receipt: its signature must verify under the
    caller's key and its chain hash must be the stored record's at ``up_to_seq`` (so a
    receipt is evidence of the history the hub presented to that participant)."""
    participants = await hub.casebook.participants(frame.case_id, caller.account_id)
    signed = f.SignedReceipt(
        account_id=caller.account_id,
        kind=frame.kind,
        up_to_seq=frame.up_to_seq,
        chain_hash=frame.chain_hash,
        sig=frame.sig,
    )
    try:
        crypto.verify_receipt(caller.sign_pk, frame.case_id, signed)
    except CryptoError:
        raise InvalidFrame("receipt signature does not verify") from None
    stored_hash = await hub.db.messages.chain_hash_at(frame.case_id, frame.up_to_seq)
    if stored_hash is None:
        raise InvalidFrame(f"no message at seq {frame.up_to_seq}")
    if stored_hash != frame.chain_hash:
        raise InvalidFrame(f"chain_hash does not match the stored message at seq {frame.up_to_seq}")
    stored = await hub.db.receipts.advance(
        frame.case_id, caller.account_id, frame.kind, frame.up_to_seq, frame.chain_hash, frame.sig
    )
    if stored == frame.up_to_seq:
        hub.registry.publish(
            participants,
            f.ReceiptNew(
                case_id=frame.case_id,
                account_id=caller.account_id,
                kind=frame.kind,
                up_to_seq=stored,
                chain_hash=frame.chain_hash,
                sig=frame.sig,
            ),
            exclude=caller.peer,
        )
    return f.Ok(id=frame.id)


async def typing(hub: Hub, caller: Caller, frame: f.Typing) -> f.Ok:
    # Typing is never stored, but an indicator for a closed case would be a lie: read
    # the state unless the case is known to be closed (closing is final).
    if hub.casebook.known_closed(frame.case_id):
        await hub.casebook.participants(frame.case_id, caller.account_id)
        raise Forbidden("case is closed")
    case = await hub.casebook.fresh(frame.case_id, caller.account_id)
    if case.state == "closed":
        raise Forbidden("case is closed")
    if case.state != "assigned":
        raise Forbidden("case is not assigned to a counselor yet")
    hub.registry.publish(
        case.participants,
        f.TypingNew(case_id=case.id, account_id=caller.account_id, active=frame.active),
        exclude=caller.peer,
    )
    return f.Ok(id=frame.id)
