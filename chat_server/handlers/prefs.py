"""The account's encrypted preferences blob (docs/PROTOCOL.md, "Preferences").

The web client keeps its contact pins there, sealed under a key derived from the
passphrase, so the hub stores bytes it cannot read. ``prefs.put`` is compare-and-swap
on the version the client last read: a stale write is refused with ``conflict``.
"""

from __future__ import annotations

from protocol import frames as f
from protocol.clock import now_ms

from ..context import Caller
from ..hub import Hub
from ..logs import log_event

__all__ = ["prefs_get", "prefs_put"]


async def prefs_get(hub: Hub, caller: Caller, frame: f.PrefsGet) -> f.PrefsResult:
    blob, version = await hub.db.prefs.get(caller.account_id)
    return f.PrefsResult(id=frame.id, blob=blob, version=version)


async def prefs_put(hub: Hub, caller: Caller, frame: f.PrefsPut) -> f.PrefsResult:
    version = await hub.db.prefs.put(caller.account_id, frame.blob, frame.version, now_ms())
    log_event("prefs.stored", account=caller.account_id, version=version)
    return f.PrefsResult(id=frame.id, blob=frame.blob, version=version)
