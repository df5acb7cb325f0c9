"""Use cases without sockets (Synapse's tests/handlers habit): the real hub services over
a real SQLite file, and a :class:`RecordingPeer` where a connection would be.

Only the socket is absent. Accounts, cases and keys are made through the real storage
with real key pairs, so every signature a use case checks really verifies; a use case is
called with the frozen :class:`~chat_server.context.Caller` the ``auth`` use case would
have made, and what it pushes to a peer is read back from the recording.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chat_server.context import Caller
from chat_server.credentials import token_hash
from chat_server.hub import Hub
from protocol import crypto
from protocol.clock import now_ms
from storage.engine import open_database, sqlite_url
from storage.records import AccountRecord, CaseRecord, EpochKeyRecord, Role
from tests.chat_server import builders
from tests.chat_server.builders import RecordingPeer
from tests.hubtools import test_config


@dataclass
class Person:
    """An account with real keys, and one live (recorded) session of it."""

    account: AccountRecord
    identity: crypto.Identity
    peer: RecordingPeer
    caller: Caller
    others: list[RecordingPeer] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.account.id


@dataclass
class World:
    hub: Hub

    async def person(
        self,
        role: Role = "client",
        *,
        online: bool = True,
        languages: tuple[str, ...] = ("en",),
        specialties: tuple[str, ...] = ("anxiety",),
    ) -> Person:
        identity = crypto.Identity.generate()
        counselor = role == "counselor"
        record = dataclasses.replace(
            builders.account(
                "acc_" + secrets.token_hex(6),
                role,
                languages if counselor else (),
                specialties if counselor else (),
            ),
            sign_pk=identity.sign_pk,
            box_pk=identity.box_pk,
            created_at=now_ms(),
        )
        account = await self.hub.db.accounts.create(record)
        peer = RecordingPeer("s_" + secrets.token_hex(4))
        caller = Caller(
            peer=peer,
            session_id=peer.session_id,
            account_id=account.id,
            role=account.role,
            sign_pk=account.sign_pk,
            token_hash=token_hash(secrets.token_urlsafe(8)),
        )
        person = Person(account, identity, peer, caller)
        if online:
            self.hub.registry.attach(peer, account)
        return person

    def second_session(self, person: Person) -> RecordingPeer:
        peer = RecordingPeer("s_" + secrets.token_hex(4))
        self.hub.registry.attach(peer, person.account)
        person.others.append(peer)
        return peer

    async def case(
        self, client: Person, counselor: Person | None = None, *, key: bool = True
    ) -> CaseRecord:
        """A case made through storage (as another hub, or an earlier session, would
        have): waiting without a counselor, else assigned, with an epoch-1 key."""
        db = self.hub.db
        case_id = "case_" + secrets.token_hex(6)
        case = await db.cases.create(client.id, "anxiety", "en", case_id, now_ms())
        if counselor is None:
            return case
        assigned = await db.cases.assign(case_id, counselor.id, now_ms())
        assert assigned is not None
        if key:
            k = crypto.new_case_key()
            commitment = crypto.key_commitment(k, case_id, 1)
            await db.cases.add_epoch_key(
                EpochKeyRecord(
                    case_id=case_id,
                    epoch=1,
                    creator_id=client.id,
                    commitment=commitment,
                    commitment_sig=crypto.sign_commitment(client.identity, case_id, 1, commitment),
                    seals={
                        p.id: crypto.seal_case_key(k, p.identity.box_pk)
                        for p in (client, counselor)
                    },
                    created_at=now_ms(),
                )
            )
        fresh = await db.cases.get(case_id)
        assert fresh is not None
        return fresh


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = test_config(tmp_path)
    db = await open_database(sqlite_url(tmp_path / "chat.db"), config.resolved_data_key())
    hub = Hub(config, db, config.server_key())
    hub.start()
    try:
        yield World(hub)
    finally:
        await hub.shutdown()
        await db.close()
