"""Message use cases: send (ack after commit, then fan-out), sync, receipts, typing.

``msg_send`` does not wait for the commit: it validates, hands the message to the group
committer and returns, so one session can pipeline many sends into one transaction.
The ack and the fan-out happen in the callback the committer calls right after the
commit, in commit order.
"""

from __future__ import annotations

import logging
from functools import partial

from protocol import frames as f
from protocol.errors import (
    CloseCode,
    ErrorCode,
    Forbidden,
    InvalidFrame,
    ProtocolError,
    RemoteError,
)
from protocol.limits import MAX_SERVER_FRAME_BYTES
from storage.records import AlreadyStored, AppendResult, CaseRecord, NewMessage

from ..hub import Hub
from ..logs import log_event
from ..session import Session

__all__ = ["msg_send", "receipt", "sync", "typing"]


def _require_open(case: CaseRecord) -> None:
    if case.state == "closed":
        raise Forbidden("case is closed")
    if case.state != "assigned":
        raise Forbidden("case is not assigned to a counselor yet")


async def msg_send(hub: Hub, session: Session, frame: f.MsgSend) -> None:
    case = await hub.case_for(frame.case_id, session)
    _require_open(case)
    if frame.epoch > case.epoch:
        raise InvalidFrame("no key has been deposited for this epoch")
    hub.committer.submit(
        NewMessage(
            case_id=case.id,
            epoch=frame.epoch,
            sender_id=session.account_id,
            client_msg_id=frame.client_msg_id,
            nonce=frame.nonce,
            ciphertext=frame.ciphertext,
        ),
        partial(_committed, hub, session, frame, case),
    )


def _committed(
    hub: Hub,
    session: Session,
    frame: f.MsgSend,
    case: CaseRecord,
    outcome: AppendResult | ProtocolError,
) -> None:
    # Called by the committer right after the commit holding the message, in commit order.
    try:
        _ack_and_fan_out(hub, session, frame, case, outcome)
    except Exception:
        # Not left to the committer's handler: the session must learn that it failed.
        log_event("msg.fan_out_failed", logging.ERROR, exc=True, case=case.id)
        session.close(CloseCode.INTERNAL, "internal error")


def _ack_and_fan_out(
    hub: Hub,
    session: Session,
    frame: f.MsgSend,
    case: CaseRecord,
    outcome: AppendResult | ProtocolError,
) -> None:
    if isinstance(outcome, AlreadyStored):
        first = outcome.message
        session.push(
            f.MsgAck(
                id=frame.id,
                case_id=case.id,
                client_msg_id=frame.client_msg_id,
                seq=first.seq,
                chain_hash=first.chain_hash,
                duplicate=True,
            )
        )
        return  # already delivered (or reachable by sync) when it was first stored
    if not isinstance(outcome, f.MessageRecord):
        if isinstance(outcome, RemoteError):
            session.push(f.ErrorFrame(code=outcome.code, message=outcome.message, id=frame.id))
        else:
            session.push(
                f.ErrorFrame(code=ErrorCode.UNAVAILABLE, message="not stored; retry", id=frame.id)
            )
        return
    session.push(
        f.MsgAck(
            id=frame.id,
            case_id=case.id,
            client_msg_id=frame.client_msg_id,
            seq=outcome.seq,
            chain_hash=outcome.chain_hash,
        )
    )
    hub.publish([case.client_id, case.counselor_id], f.MsgNew(message=outcome), exclude=session)


#: Budget for one sync.result, under MAX_SERVER_FRAME_BYTES with room for the envelope.
_SYNC_BYTES = MAX_SERVER_FRAME_BYTES - 64 * 1024


def _encoded_size(m: f.MessageRecord) -> int:
    # base64 of the binary fields plus a generous allowance for ids and JSON punctuation.
    return (len(m.ciphertext) + len(m.nonce) + len(m.chain_hash)) * 4 // 3 + 400


async def sync(hub: Hub, session: Session, frame: f.Sync) -> f.SyncResult:
    case = await hub.case_for(frame.case_id, session)
    rows = await hub.db.messages.range(case.id, frame.after_seq, frame.limit + 1)
    last_seq, _ = await hub.db.messages.last(case.id)
    batch: list[f.MessageRecord] = []
    budget = _SYNC_BYTES
    for m in rows[: frame.limit]:
        budget -= _encoded_size(m)
        if budget < 0 and batch:
            break
        batch.append(m)
    return f.SyncResult(
        id=frame.id,
        case_id=case.id,
        messages=batch,
        last_seq=last_seq,
        has_more=len(rows) > len(batch),
    )


async def receipt(hub: Hub, session: Session, frame: f.Receipt) -> f.Ok:
    case = await hub.case_for(frame.case_id, session)
    stored = await hub.db.receipts.advance(case.id, session.account_id, frame.kind, frame.up_to_seq)
    if stored == frame.up_to_seq:
        hub.publish(
            [case.client_id, case.counselor_id],
            f.ReceiptNew(
                case_id=case.id, account_id=session.account_id, kind=frame.kind, up_to_seq=stored
            ),
            exclude=session,
        )
    return f.Ok(id=frame.id)


async def typing(hub: Hub, session: Session, frame: f.Typing) -> f.Ok:
    case = await hub.case_for(frame.case_id, session)
    _require_open(case)
    hub.publish(
        [case.client_id, case.counselor_id],
        f.TypingNew(case_id=case.id, account_id=session.account_id, active=frame.active),
        exclude=session,
    )
    return f.Ok(id=frame.id)
