"""Dispute requests from clients, and ``dispute.updated`` notifications.

``dispute.request``: the case's client asks the escrow officers to open the case. The
request names the case, the scope ("all"), a timestamp and the installed policy, and
carries the reason sealed to each officer; the client signs all of it. The hub checks
the signature (so a bundle's request provably came from the client) and stores it as a
:class:`protocol.escrow.DisputeDocument`; approvals and the export happen offline and
through ``chat-server disputes`` (chat_server/disputes_cli.py), in another process.

Because approvals are recorded by that other process, the hub learns of state changes
by polling the disputes table (every :data:`WATCH_INTERVAL_S`, only while some dispute
is not yet exported) and tells the requester's live sessions with ``dispute.updated``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import msgspec

from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import Forbidden, InvalidFrame, NotFound
from protocol.escrow import DisputeDocument, EscrowError, verify_dispute
from storage.disputes import DisputeRecord

from ..hub import Hub
from ..logs import log_event
from ..session import Session
from .escrow import installed_policy

__all__ = ["WATCH_INTERVAL_S", "dispute_info", "dispute_list", "dispute_request"]

#: How often the hub looks for approvals and exports recorded by the officers' CLI.
WATCH_INTERVAL_S = 0.5
#: A client's request timestamp may differ this much from the hub's clock.
MAX_SKEW_MS = 24 * 3600 * 1000

_encoder = msgspec.json.Encoder()


def dispute_info(record: DisputeRecord) -> f.DisputeInfo:
    return f.DisputeInfo(
        request_id=record.id,
        case_id=record.case_id,
        state=record.state,
        created_at=record.created_at,
    )


async def dispute_request(hub: Hub, session: Session, frame: f.DisputeRequest) -> f.DisputeCreated:
    case = await hub.case_for(frame.case_id, session)
    assert session.account is not None
    if case.client_id != session.account_id:
        raise Forbidden("only the case's client files a dispute request")
    installed = await installed_policy(hub)
    if installed is None:
        raise NotFound("this hub has no escrow policy; disputes are not available")
    if frame.policy_fingerprint != installed.fingerprint:
        raise InvalidFrame("the request names another escrow policy; fetch it again")
    if len(frame.reason_ct) != len(installed.policy.officers):
        raise InvalidFrame("the reason must be sealed to every officer of the policy")
    now = now_ms()
    if abs(now - frame.timestamp) > MAX_SKEW_MS:
        raise InvalidFrame("request timestamp is too far from the hub's clock")
    doc = DisputeDocument(
        request_id="dsp_" + secrets.token_hex(10),
        kind="client",
        case_id=case.id,
        scope=frame.scope,
        timestamp=frame.timestamp,
        policy_fingerprint=frame.policy_fingerprint,
        reason_ct=list(frame.reason_ct),
        requester_id=session.account_id,
        requester_sign_pk=session.account.sign_pk,
        sig=frame.sig,
        created_at=now,
    )
    try:
        verify_dispute(doc)
    except EscrowError:
        raise InvalidFrame("dispute request signature does not verify") from None
    record = await hub.db.disputes.create(
        dispute_id=doc.request_id,
        case_id=case.id,
        kind="client",
        requester_id=session.account_id,
        document=_encoder.encode(doc),
        policy_fingerprint=installed.fingerprint,
        legal_order=None,
        now_ms=now,
    )
    log_event("dispute.request", request=record.id, case=case.id, account=session.account_id)
    _ensure_watcher(hub)
    return f.DisputeCreated(id=frame.id, dispute=dispute_info(record))


async def dispute_list(hub: Hub, session: Session, frame: f.DisputeList) -> f.DisputeListResult:
    records = await hub.db.disputes.find(requester_id=session.account_id)
    if any(r.state != "exported" for r in records):
        _ensure_watcher(hub)
    return f.DisputeListResult(id=frame.id, disputes=[dispute_info(r) for r in records])


def _ensure_watcher(hub: Hub) -> None:
    task = hub.dispute_watcher
    if task is None or task.done():
        hub.dispute_watcher = asyncio.create_task(_watch(hub), name="dispute-watcher")


async def _watch(hub: Hub) -> None:
    """Publish every state change of a client's dispute to that client's sessions;
    stop when the hub stops or nothing is left to change."""
    try:
        await _publish_changes(hub)
    except asyncio.CancelledError:
        raise
    except Exception:
        # Clients still see every state with `dispute.list`; only the live nudge is lost.
        log_event("dispute.watcher_failed", logging.ERROR, exc=True)


async def _publish_changes(hub: Hub) -> None:
    seen: dict[str, str] = {}
    since = now_ms() - 60_000
    for record in await hub.db.disputes.find():
        seen[record.id] = record.state
    while not hub.stopping:
        await asyncio.sleep(WATCH_INTERVAL_S)
        if hub.stopping:
            return
        changed = await hub.db.disputes.find(changed_after=since - 1)
        for record in changed:
            since = max(since, record.updated_at)
            if seen.get(record.id) == record.state:
                continue
            seen[record.id] = record.state
            if record.requester_id is not None:
                hub.publish([record.requester_id], f.DisputeUpdated(dispute=dispute_info(record)))
        if seen and all(state == "exported" for state in seen.values()):
            return
