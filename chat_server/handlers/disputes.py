"""Dispute requests from clients (docs/DISPUTES.md): file one, list one's own.

``dispute.request``: the case's client asks the escrow officers to open the case. The
request names the case, the scope ("all"), a timestamp and the installed policy, and
carries the reason sealed to each officer; the client signs all of it. The dispute
service (``chat_server/disputes.py``) checks the signature, so a bundle's request
provably came from the client, and stores it; approvals and the export happen offline
and through ``chat-server disputes``, which use the same service. Its watcher then tells
the requester's live sessions of each state change (``dispute.updated``).
"""

from __future__ import annotations

from protocol import frames as f
from protocol.errors import Forbidden, LimitExceeded

from ..account_ratelimit import require
from ..context import Caller
from ..disputes import dispute_info
from ..hub import Hub

__all__ = ["dispute_list", "dispute_request"]


async def dispute_request(hub: Hub, caller: Caller, frame: f.DisputeRequest) -> f.DisputeCreated:
    participants = await hub.casebook.participants(frame.case_id, caller.account_id)
    if participants[0] != caller.account_id:
        raise Forbidden("only the case's client files a dispute request")
    await require(hub.dispute_limit, caller.account_id, "dispute requests")
    # The client's own requests about this case (legal orders on it do not count).
    filed = await hub.disputes.of_client(caller.account_id)
    own = sum(
        1 for r in filed if r.case_id == frame.case_id and r.requester_id == caller.account_id
    )
    if own >= hub.config.max_disputes_per_case:
        raise LimitExceeded("too many dispute requests about this case")
    record = await hub.disputes.file(caller.account_id, caller.sign_pk, frame)
    hub.dispute_watcher.ensure_running()
    return f.DisputeCreated(id=frame.id, dispute=dispute_info(record))


async def dispute_list(hub: Hub, caller: Caller, frame: f.DisputeList) -> f.DisputeListResult:
    records = await hub.disputes.of_client(caller.account_id)
    if any(r.state != "exported" for r in records):
        hub.dispute_watcher.ensure_running()
    return f.DisputeListResult(id=frame.id, disputes=[dispute_info(r) for r in records])
