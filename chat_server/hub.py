"""The hub: the services of one hub process, composed, and passed to every use case.

Nothing here decides anything; each room has its own module:

===================  ===============================================================
``registry``         live sessions by account, ``publish``, ``deliver`` (acks, fan-out)
``casebook``         case lookup and participants, opening, matching, assignment
``committer``        group commit of ``msg.send``; delivers through the registry
``disputes``         dispute requests, approvals, export; the watcher
``decoys``           answers for handles that do not exist (``credentials.py``)
===================  ===============================================================

The process holds no one's private key: ``server_key`` is the hub's own signing-only
key (it signs chain heads). ``stopping`` is set by :meth:`shutdown`; from then on new
requests are refused with ``unavailable``.
"""

from __future__ import annotations

import logging

from protocol.crypto import ServerKey
from protocol.errors import CloseCode
from storage.engine import Database

from .casebook import Casebook
from .committer import GroupCommitter
from .config import Config
from .credentials import LoginDecoys
from .disputes import DisputeService, DisputeWatcher
from .logs import log_event
from .registry import SessionRegistry

__all__ = ["Hub"]


class Hub:
    """One hub process's services (see the module docstring)."""

    def __init__(self, config: Config, db: Database, server_key: ServerKey) -> None:
        self.config = config
        self.db = db
        self.server_key = server_key
        self.registry = SessionRegistry(config.max_sessions_per_account)
        self.casebook = Casebook(db, self.registry)
        self.committer = GroupCommitter(db.messages, self.registry, max_batch=config.commit_batch)
        self.disputes = DisputeService(db)
        self.dispute_watcher = DisputeWatcher(db, self.registry)
        self.decoys = LoginDecoys(
            config.resolved_data_key(),
            opslimit=config.hash_opslimit,
            memlimit=config.hash_memlimit,
        )
        self.stopping = False

    def start(self) -> None:
        self.committer.start()

    async def shutdown(self) -> None:
        """Refuse new work, finish pending commits (their acks go out), then close 1001."""
        self.stopping = True
        await self.dispute_watcher.stop()
        await self.committer.stop()
        self.registry.close_all(CloseCode.GOING_AWAY, "server restarting: reconnect")
        log_event("hub.stopped", logging.INFO)
