"""The hub's parts without sockets, for tests of its use cases and services (Synapse's
tests/handlers habit): a :class:`RecordingPeer` where a connection would be, account
records, and a :class:`World` of people with real keys and cases made through the real
storage.

Only the socket is absent: accounts, cases and keys go through the real repositories with
real key pairs, so every signature a use case checks really verifies; a use case is
called with the frozen :class:`~chat_server.context.Caller` the ``auth`` use case would
have made, and what it pushes to a peer is read back from the recording.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from chat_server.context import Caller
from chat_server.credentials import token_hash
from chat_server.hub import Hub
from protocol import codec, crypto
from protocol import frames as f
from protocol.clock import now_ms
from storage.records import AccountRecord, CaseRecord, EpochKeyRecord, Role

__all__ = ["Person", "RecordingPeer", "World", "account"]

_T = TypeVar("_T", bound=msgspec.Struct)


class RecordingPeer:
    """A :class:`~chat_server.context.Peer` that keeps what it is sent, decoded."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.frames: list[f.ServerFrame] = []
        self.closed: tuple[int, str] | None = None
        self._arrived = asyncio.Event()

    def push(self, frame: msgspec.Struct) -> None:
        self.push_raw(codec.encode(frame))

    def push_raw(self, data: bytes) -> None:
        # Through the real codec, as a client would read it.
        self.frames.append(codec.decode_server(data))
        self._arrived.set()

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def of(self, kind: type[_T]) -> list[_T]:
        return [x for x in self.frames if isinstance(x, kind)]

    async def next(self, kind: type[_T], timeout: float = 5.0) -> _T:
        """Wait until a frame of ``kind`` has arrived (event-driven, no polling sleep)."""
        async with asyncio.timeout(timeout):
            while not self.of(kind):
                self._arrived.clear()
                await self._arrived.wait()
        return self.of(kind)[0]


def account(
    account_id: str,
    role: Role = "client",
    languages: tuple[str, ...] = (),
    specialties: tuple[str, ...] = (),
) -> AccountRecord:
    """An account record with placeholder keys (for code that never checks a signature)."""
    return AccountRecord(
        id=account_id,
        handle=f"h-{account_id}",
        role=role,
        salt=bytes(16),
        opslimit=1,
        memlimit=8192,
        auth_hash="x",
        sign_pk=bytes(32),
        box_pk=bytes(32),
        wrapped_keys=bytes(104),
        languages=languages,
        specialties=specialties,
    )


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
            account(
                "acc_" + secrets.token_hex(6),
                role,
                languages if counselor else (),
                specialties if counselor else (),
            ),
            sign_pk=identity.sign_pk,
            box_pk=identity.box_pk,
            box_sig=crypto.sign_box_key(identity),
            created_at=now_ms(),
        )
        created = await self.hub.db.accounts.create(record)
        peer = RecordingPeer("s_" + secrets.token_hex(4))
        caller = Caller(
            peer=peer,
            session_id=peer.session_id,
            account_id=created.id,
            role=created.role,
            sign_pk=created.sign_pk,
            token_hash=token_hash(secrets.token_urlsafe(8)),
        )
        person = Person(created, identity, peer, caller)
        if online:
            await self.hub.registry.attach(peer, created)
        return person

    async def client_counselor_stranger(self) -> tuple[Person, Person, Person]:
        """Two people who will share a case, and a client who takes no part in it."""
        return await self.person(), await self.person("counselor"), await self.person()

    async def second_session(self, person: Person) -> RecordingPeer:
        peer = RecordingPeer("s_" + secrets.token_hex(4))
        await self.hub.registry.attach(peer, person.account)
        person.others.append(peer)
        return peer

    async def case(
        self,
        client: Person,
        counselor: Person | None = None,
        *,
        key: bool = True,
        escrow: str = crypto.NO_ESCROW,
    ) -> CaseRecord:
        """A case made through storage (as another hub, or an earlier session, would
        have): waiting without a counselor, else assigned, with an epoch-1 key made by
        the client and bound to ``escrow``."""
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
                    commitment_sig=crypto.sign_commitment(
                        client.identity, case_id, 1, commitment, escrow=escrow
                    ),
                    escrow=escrow,
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
