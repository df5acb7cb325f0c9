"""Case use cases: open (and match), list, key epochs, close, and the key directory."""

from __future__ import annotations

import secrets

from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import Conflict, CryptoError, Forbidden, InvalidFrame
from storage.records import EpochKeyRecord

from ..hub import Hub, case_info
from ..logs import log_event
from ..session import Session
from . import escrow

__all__ = ["case_close", "case_key", "case_keys", "case_list", "case_open", "directory_get"]


async def case_open(hub: Hub, session: Session, frame: f.CaseOpen) -> f.CaseOpened:
    assert session.account is not None
    if session.account.role != "client":
        raise Forbidden("only clients open cases")
    await escrow.require_consent(hub, session)
    case = await hub.db.cases.create(
        client_id=session.account_id,
        topic=frame.topic,
        language=frame.language,
        case_id="case_" + secrets.token_hex(10),
        now_ms=now_ms(),
    )
    hub.remember(case)
    log_event("case.opened", case=case.id, account=session.account_id)
    case = await hub.match_case(case)
    return f.CaseOpened(id=frame.id, case=case_info(case))


async def case_list(hub: Hub, session: Session, frame: f.CaseList) -> f.CaseListResult:
    cases = await hub.db.cases.for_account(session.account_id)
    for case in cases:
        hub.remember(case)
    return f.CaseListResult(id=frame.id, cases=[case_info(c) for c in cases])


async def case_key(hub: Hub, session: Session, frame: f.CaseKeyDeposit) -> f.Ok:
    case = await hub.case_for(frame.case_id, session)
    if case.state != "assigned" or case.counselor_id is None:
        raise Forbidden(f"case is {case.state}; keys are deposited once it is assigned")
    if frame.epoch <= case.epoch:
        raise Conflict("epoch already has a key")
    if frame.epoch != case.epoch + 1:
        raise InvalidFrame("epoch must follow the current epoch")
    participants = {case.client_id, case.counselor_id}
    sealed_for = [s.account_id for s in frame.seals]
    if len(sealed_for) != len(set(sealed_for)) or set(sealed_for) != participants:
        raise InvalidFrame("need exactly one sealed key per participant")
    assert session.account is not None
    try:
        crypto.verify_commitment(
            session.account.sign_pk, case.id, frame.epoch, frame.commitment, frame.commitment_sig
        )
    except CryptoError:
        raise InvalidFrame("commitment signature does not verify") from None
    capsules = frame.capsules if isinstance(frame.capsules, list) else None
    capsule = await escrow.deposit_capsule_for_key(hub, session, case.id, frame.epoch, capsules)
    await hub.db.cases.add_epoch_key(
        EpochKeyRecord(
            case_id=case.id,
            epoch=frame.epoch,
            creator_id=session.account_id,
            commitment=frame.commitment,
            commitment_sig=frame.commitment_sig,
            seals={s.account_id: s.sealed for s in frame.seals},
            created_at=now_ms(),
        ),
        capsule,
    )
    fresh = await hub.db.cases.get(case.id)
    if fresh is not None:
        hub.remember(fresh)
    log_event("case.key", case=case.id, epoch=frame.epoch, account=session.account_id)
    hub.publish(participants, f.CaseKeyNew(case_id=case.id, epoch=frame.epoch), exclude=session)
    return f.Ok(id=frame.id)


async def case_keys(hub: Hub, session: Session, frame: f.CaseKeys) -> f.CaseKeysResult:
    case = await hub.case_for(frame.case_id, session)
    records = await hub.db.cases.keys_for(case.id, session.account_id)
    return f.CaseKeysResult(
        id=frame.id,
        case_id=case.id,
        keys=[
            f.EpochKey(
                epoch=r.epoch,
                creator_id=r.creator_id,
                commitment=r.commitment,
                commitment_sig=r.commitment_sig,
                sealed=r.seals[session.account_id],
            )
            for r in records
            if session.account_id in r.seals
        ],
    )


async def case_close(hub: Hub, session: Session, frame: f.CaseClose) -> f.Ok:
    case = await hub.case_for(frame.case_id, session)
    if case.state == "closed":
        return f.Ok(id=frame.id)
    closed = await hub.db.cases.close(case.id, now_ms())
    if closed is not None:
        hub.remember(closed)
    log_event("case.closed", case=case.id, account=session.account_id)
    hub.publish([case.client_id, case.counselor_id], f.CaseClosed(case_id=case.id))
    return f.Ok(id=frame.id)


async def directory_get(hub: Hub, session: Session, frame: f.DirectoryGet) -> f.DirectoryResult:
    wanted = set(frame.account_ids)
    visible = {session.account_id}
    for case in await hub.db.cases.for_account(session.account_id):
        visible.update(a for a in (case.client_id, case.counselor_id) if a is not None)
    if not wanted <= visible:
        raise Forbidden("directory entries are visible only to case participants")
    accounts = await hub.db.accounts.by_ids(sorted(wanted))
    return f.DirectoryResult(
        id=frame.id,
        entries=[
            f.DirectoryEntry(
                account_id=a.id, handle=a.handle, role=a.role, sign_pk=a.sign_pk, box_pk=a.box_pk
            )
            for a in accounts
        ],
    )
