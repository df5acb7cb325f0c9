"""Case use cases: open (and match), list, key epochs, close, and the key directory.

State-sensitive verbs read the case fresh (``casebook.fresh``) and let the database
decide under its own conditions (``add_epoch_key`` only from the current epoch of an
assigned case, ``close`` only once), so a hub never acts on what another hub changed.
"""

from __future__ import annotations

from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import Conflict, CryptoError, Forbidden, InvalidFrame, LimitExceeded
from storage.records import EpochKeyRecord

from ..account_ratelimit import require
from ..casebook import case_info
from ..context import Caller
from ..hub import Hub
from ..logs import log_event
from . import escrow

__all__ = [
    "case_close",
    "case_key",
    "case_key_share",
    "case_keys",
    "case_list",
    "case_open",
    "directory_get",
]


async def case_open(hub: Hub, caller: Caller, frame: f.CaseOpen) -> f.CaseOpened:
    if caller.role != "client":
        raise Forbidden("only clients open cases")
    await escrow.require_consent(hub, caller)
    await require(hub.case_open_limit, caller.account_id, "cases opened")
    offered = await hub.casebook.languages_offered(frame.language)
    if offered and frame.language not in offered:
        # No counselor of this service speaks it: the case would wait forever. (With no
        # counselor at all, a fresh install, the case waits for the first one.)
        raise InvalidFrame(
            f"no counselor of this service speaks {frame.language!r}; "
            f"languages offered: {', '.join(sorted(offered))}"
        )
    await _within_case_caps(hub, caller.account_id)
    case = await hub.casebook.open(caller.account_id, frame.topic, frame.language)
    queue = await hub.casebook.queue(case)
    return f.CaseOpened(id=frame.id, case=case_info(case), queue=queue)


async def _within_case_caps(hub: Hub, client_id: str) -> None:
    """A client may have ``max_waiting_cases`` waiting and ``max_open_cases`` not closed
    (docs/PROTOCOL.md 11). Read before the insert, so sessions opening cases at the same
    moment may pass it together: at most one extra case per concurrent session."""
    cases = await hub.casebook.for_account(client_id)
    mine = [c for c in cases if c.client_id == client_id]
    waiting = sum(1 for c in mine if c.state == "waiting")
    open_ = sum(1 for c in mine if c.state != "closed")
    if waiting >= hub.config.max_waiting_cases:
        raise LimitExceeded(
            f"{waiting} case(s) already waiting for a counselor; wait for it or close it"
        )
    if open_ >= hub.config.max_open_cases:
        raise LimitExceeded(f"{open_} cases already open; close one first")


async def case_list(hub: Hub, caller: Caller, frame: f.CaseList) -> f.CaseListResult:
    cases = await hub.casebook.for_account(caller.account_id)
    return f.CaseListResult(id=frame.id, cases=[case_info(c) for c in cases])


async def case_key(hub: Hub, caller: Caller, frame: f.CaseKeyDeposit) -> f.Ok:
    case = await hub.casebook.fresh(frame.case_id, caller.account_id)
    if case.state == "closed":
        raise Forbidden("case is closed")
    if frame.epoch <= case.epoch:
        raise Conflict("epoch already has a key")
    if frame.epoch != case.epoch + 1:
        raise InvalidFrame("epoch must follow the current epoch")
    participants = case.participants
    sealed_for = [s.account_id for s in frame.seals]
    # One seal per participant, the depositor's and the client's at least: a key the
    # client made while the case waited (or just as it was assigned) reaches the
    # counselor later through case.key.share, after the client verified them.
    required = {caller.account_id, case.client_id}
    if (
        len(sealed_for) != len(set(sealed_for))
        or not set(sealed_for) <= set(participants)
        or not required <= set(sealed_for)
    ):
        raise InvalidFrame("need exactly one sealed key per participant")
    try:
        crypto.verify_commitment(
            caller.sign_pk,
            case.id,
            frame.epoch,
            frame.commitment,
            frame.commitment_sig,
            escrow=frame.escrow,
        )
    except CryptoError:
        raise InvalidFrame("commitment signature does not verify") from None
    capsules = frame.capsules if isinstance(frame.capsules, list) else None
    capsule = await escrow.deposit_capsule_for_key(
        hub, case.client_id, caller.account_id, case.id, frame.epoch, frame.escrow, capsules
    )
    # The database re-checks "assigned, at epoch n" in the same statement that moves the
    # case to epoch n + 1: a close or a deposit committed meanwhile anywhere wins.
    await hub.db.cases.add_epoch_key(
        EpochKeyRecord(
            case_id=case.id,
            epoch=frame.epoch,
            creator_id=caller.account_id,
            commitment=frame.commitment,
            commitment_sig=frame.commitment_sig,
            seals={s.account_id: s.sealed for s in frame.seals},
            created_at=now_ms(),
            escrow=frame.escrow,
        ),
        capsule,
    )
    log_event("case.key", case=case.id, epoch=frame.epoch, account=caller.account_id)
    hub.registry.publish(
        participants, f.CaseKeyNew(case_id=case.id, epoch=frame.epoch), exclude=caller.peer
    )
    return f.Ok(id=frame.id)


async def case_key_share(hub: Hub, caller: Caller, frame: f.CaseKeyShare) -> f.Ok:
    """The case's client adds the counselor's seal to an epoch key it made (the key of
    a case it wrote in while waiting). The hub cannot check the seal (only the counselor
    can open it and compare it with the signed commitment); it checks who shares what."""
    case = await hub.casebook.fresh(frame.case_id, caller.account_id)
    if caller.account_id != case.client_id:
        raise Forbidden("only the case's client shares its keys")
    if case.counselor_id is None:
        raise Forbidden("case is waiting; there is no counselor to share the key with")
    if frame.seal.account_id != case.counselor_id:
        raise InvalidFrame("the seal must be for the case's counselor")
    key = await hub.db.cases.epoch_key(case.id, frame.epoch)
    if key is None:
        raise InvalidFrame("the epoch has no key")
    if key.creator_id != caller.account_id:
        raise Forbidden("only the key's creator shares it")
    await hub.db.cases.add_seal(case.id, frame.epoch, case.counselor_id, frame.seal.sealed)
    log_event("case.key.share", case=case.id, epoch=frame.epoch, account=caller.account_id)
    hub.registry.publish((case.counselor_id,), f.CaseKeyNew(case_id=case.id, epoch=frame.epoch))
    return f.Ok(id=frame.id)


async def case_keys(hub: Hub, caller: Caller, frame: f.CaseKeys) -> f.CaseKeysResult:
    await hub.casebook.participants(frame.case_id, caller.account_id)
    records = await hub.db.cases.keys_for(frame.case_id, caller.account_id)
    return f.CaseKeysResult(
        id=frame.id,
        case_id=frame.case_id,
        keys=[
            f.EpochKey(
                epoch=r.epoch,
                creator_id=r.creator_id,
                commitment=r.commitment,
                commitment_sig=r.commitment_sig,
                escrow=r.escrow,
                sealed=r.seals[caller.account_id],
                sealed_for=list(r.sealed_for),
            )
            for r in records
            if caller.account_id in r.seals
        ],
    )


async def case_close(hub: Hub, caller: Caller, frame: f.CaseClose) -> f.Ok:
    await hub.casebook.participants(frame.case_id, caller.account_id)
    if hub.casebook.known_closed(frame.case_id):
        return f.Ok(id=frame.id)
    closed = await hub.casebook.close(frame.case_id)
    if closed is None:  # closed already, here or on another hub: it was announced then
        return f.Ok(id=frame.id)
    log_event("case.closed", case=closed.id, account=caller.account_id)
    hub.registry.publish(closed.participants, f.CaseClosed(case_id=closed.id))
    if closed.counselor_id is None:  # it was waiting: the cases behind it move up
        await hub.casebook.announce_queue()
    return f.Ok(id=frame.id)


async def directory_get(hub: Hub, caller: Caller, frame: f.DirectoryGet) -> f.DirectoryResult:
    wanted = set(frame.account_ids)
    visible = {caller.account_id}
    for case in await hub.casebook.for_account(caller.account_id):
        visible.update(case.participants)
    if not wanted <= visible:
        raise Forbidden("directory entries are visible only to case participants")
    accounts = await hub.db.accounts.by_ids(sorted(wanted))
    return f.DirectoryResult(
        id=frame.id,
        entries=[
            f.DirectoryEntry(
                account_id=a.id,
                handle=a.handle,
                role=a.role,
                sign_pk=a.sign_pk,
                box_pk=a.box_pk,
                box_sig=a.box_sig,
                cert=a.cert,
            )
            for a in accounts
        ],
    )
