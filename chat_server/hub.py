"""The hub: live sessions by account, case cache, fan-out, matching, group commit.

The hub is passed to every handler; it is the only shared state of a hub process and
holds no one's private key (the server's own signing key only signs chain heads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec
import nacl.hash
import nacl.pwhash
import nacl.utils
from nacl.encoding import RawEncoder

from protocol import codec
from protocol.clock import now_ms
from protocol.crypto import Identity
from protocol.errors import CloseCode, Forbidden, NotFound
from protocol.frames import CaseAssigned, CaseInfo
from storage.engine import Database
from storage.records import AccountRecord, CaseRecord

from .committer import GroupCommitter
from .config import Config
from .logs import log_event
from .matching import choose_counselor
from .session import Session

__all__ = ["Hub", "case_info"]


def db_key_material(config: Config) -> bytes:
    return config.resolved_data_key()


def case_info(case: CaseRecord) -> CaseInfo:
    return CaseInfo(
        case_id=case.id,
        client_id=case.client_id,
        counselor_id=case.counselor_id,
        state=case.state,
        topic=case.topic,
        language=case.language,
        epoch=case.epoch,
        last_seq=case.last_seq,
        created_at=case.created_at,
    )


class Hub:
    def __init__(self, config: Config, db: Database, server_identity: Identity) -> None:
        self.config = config
        self.db = db
        self.server_identity = server_identity
        self.committer = GroupCommitter(db.messages, max_batch=config.commit_batch)
        self.stopping = False
        self._sessions: dict[str, list[Session]] = {}
        self._all: set[Session] = set()
        self._cases: dict[str, CaseRecord] = {}
        self._match_lock = asyncio.Lock()
        #: Publishes dispute state changes made by the offline `chat-server disputes` CLI.
        self.dispute_watcher: asyncio.Task[None] | None = None
        # Keys for answers about handles that do not exist (see handlers.auth).
        self.fake_salt_key = nacl.hash.blake2b(
            db_key_material(config), digest_size=32, person=b"chat-fake-saltk1", encoder=RawEncoder
        )
        self.dummy_auth_hash: bytes = nacl.pwhash.argon2id.str(
            nacl.utils.random(32), opslimit=config.hash_opslimit, memlimit=config.hash_memlimit
        )

    def start(self) -> None:
        self.committer.start()

    # -- sessions --------------------------------------------------------------

    def connect(self, session: Session) -> None:
        self._all.add(session)

    def attach(self, session: Session) -> None:
        """Register an authenticated session; evict the oldest one past the limit."""
        live = self._sessions.setdefault(session.account_id, [])
        live.append(session)
        while len(live) > self.config.max_sessions_per_account:
            oldest = live.pop(0)
            oldest.close(CloseCode.REPLACED, "replaced by a newer session")

    def detach(self, session: Session) -> None:
        self._all.discard(session)
        if session.account is None:
            return
        live = self._sessions.get(session.account.id)
        if live and session in live:
            live.remove(session)
            if not live:
                del self._sessions[session.account.id]

    def is_online(self, account_id: str) -> bool:
        return account_id in self._sessions

    def online_counselors(self) -> list[AccountRecord]:
        out = []
        for sessions in self._sessions.values():
            account = sessions[0].account
            if account is not None and account.role == "counselor":
                out.append(account)
        return out

    @property
    def session_count(self) -> int:
        return len(self._all)

    def publish(
        self,
        account_ids: Iterable[str | None],
        frame: msgspec.Struct,
        *,
        exclude: Session | None = None,
    ) -> None:
        """Queue ``frame`` (encoded once) to every live session of ``account_ids``."""
        data = codec.encode(frame)
        for account_id in set(account_ids):
            if account_id is None:
                continue
            for session in self._sessions.get(account_id, ()):
                if session is not exclude:
                    session.push_raw(data)

    # -- cases -----------------------------------------------------------------

    async def case(self, case_id: str) -> CaseRecord:
        case = self._cases.get(case_id)
        if case is None:
            case = await self.db.cases.get(case_id)
            if case is None:
                raise NotFound("no such case")
            self._cases[case_id] = case
        return case

    async def case_for(self, case_id: str, session: Session) -> CaseRecord:
        """The case, if ``session``'s account is one of its participants (else forbidden).

        Unknown and foreign cases get the same answer, so case ids cannot be probed.
        """
        try:
            case = await self.case(case_id)
        except NotFound:
            raise Forbidden("not a participant of this case") from None
        if session.account_id not in (case.client_id, case.counselor_id):
            raise Forbidden("not a participant of this case")
        return case

    def remember(self, case: CaseRecord) -> None:
        self._cases[case.id] = case

    async def match_waiting(self) -> None:
        """Assign every waiting case that an online counselor can take (oldest first)."""
        async with self._match_lock:
            counselors = self.online_counselors()
            if not counselors:
                return
            waiting = await self.db.cases.waiting()
            if not waiting:
                return
            counts = await self.db.cases.open_counts([c.id for c in counselors])
            for case in waiting:
                await self._assign(case, counselors, counts)

    async def match_case(self, case: CaseRecord) -> CaseRecord:
        async with self._match_lock:
            counselors = self.online_counselors()
            counts = await self.db.cases.open_counts([c.id for c in counselors])
            return await self._assign(case, counselors, counts)

    async def _assign(
        self, case: CaseRecord, counselors: list[AccountRecord], counts: dict[str, int]
    ) -> CaseRecord:
        chosen = choose_counselor(
            counselors, topic=case.topic, language=case.language, open_cases=counts
        )
        if chosen is None:
            return case
        assigned = await self.db.cases.assign(case.id, chosen.id, now_ms())
        if assigned is None:  # another hub assigned it first
            fresh = await self.db.cases.get(case.id)
            return fresh if fresh is not None else case
        counts[chosen.id] = counts.get(chosen.id, 0) + 1
        self.remember(assigned)
        log_event("case.assigned", case=case.id, counselor=chosen.id)
        self.publish(
            [assigned.client_id, assigned.counselor_id], CaseAssigned(case=case_info(assigned))
        )
        return assigned

    # -- shutdown --------------------------------------------------------------

    async def shutdown(self) -> None:
        """Refuse new work, finish pending commits (their acks go out), then close 1001."""
        self.stopping = True
        if self.dispute_watcher is not None:
            self.dispute_watcher.cancel()
        await self.committer.stop()
        for session in list(self._all):
            session.close(CloseCode.GOING_AWAY, "server restarting: reconnect")
        log_event("hub.stopped", logging.INFO)
