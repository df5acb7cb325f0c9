"""A bare protocol peer for server tests: frames in, frames out, no SDK logic.

It does the client-side crypto with protocol/ directly, so server tests can send
exactly the frames they mean to, including wrong ones.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from protocol import codec, crypto, opening
from protocol import frames as f
from protocol.limits import MAX_SERVER_FRAME_BYTES

__all__ = [
    "RawClient",
    "pair",
    "resend",
    "rid",
]

_ids = itertools.count(1)


def rid() -> str:
    return f"r{next(_ids)}"


def resend(frame: f.MsgSend) -> f.MsgSend:
    """The same message (same client_msg_id, nonce, ciphertext) under a new request id."""
    return msgspec.structs.replace(frame, id=rid())


@dataclass
class RawClient:
    ws: ClientConnection
    identity: crypto.Identity | None = None
    account_id: str = ""
    token: str = ""
    handle: str = ""
    events: list[msgspec.Struct] = field(default_factory=list)
    #: This peer's running message counter per case (the envelope's ``n``).
    counters: dict[str, int] = field(default_factory=dict)
    #: The answer to the last login (keys, box_sig and cert as the hub holds them).
    login_result: f.LoginResult | None = None

    @classmethod
    async def connect(cls, url: str, **kw: Any) -> RawClient:
        ws = await connect(url, compression=None, max_size=MAX_SERVER_FRAME_BYTES, **kw)
        return cls(ws)

    async def close(self) -> None:
        await self.ws.close()

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data, text=True) if isinstance(data, bytes) else await self.ws.send(data)

    async def send(self, frame: msgspec.Struct) -> None:
        await self.ws.send(codec.encode(frame), text=True)

    async def recv(self, timeout: float = 5.0) -> f.ServerFrame:
        raw = await asyncio.wait_for(self.ws.recv(decode=False), timeout)
        return codec.decode_server(raw)

    async def reply(self, rid_: str, timeout: float = 5.0) -> f.ServerFrame:
        """Receive until the frame answering ``rid_``; events seen meanwhile are kept."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if getattr(frame, "id", None) == rid_:
                return frame
            self.events.append(frame)

    async def request(self, frame: msgspec.Struct, timeout: float = 5.0) -> f.ServerFrame:
        await self.send(frame)
        return await self.reply(frame.id, timeout)  # type: ignore[attr-defined]

    async def pipeline(
        self, frames: list[f.MsgSend], timeout: float = 20.0
    ) -> dict[str, f.ServerFrame]:
        """Send every frame at once, then read until each has its answer (by request
        id); events seen meanwhile are kept in ``events``."""
        for frame in frames:
            await self.send(frame)
        return await self.answers([frame.id for frame in frames], timeout)

    async def answers(self, ids: list[str], timeout: float = 20.0) -> dict[str, f.ServerFrame]:
        """Read until each request in ``ids`` has its answer; events are kept."""
        waiting = set(ids)
        answers: dict[str, f.ServerFrame] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            request_id = getattr(frame, "id", None)
            if request_id in waiting:
                waiting.discard(request_id)
                answers[request_id] = frame
            else:
                self.events.append(frame)
        return answers

    async def sync_all(self, case_id: str) -> list[f.MessageRecord]:
        """Every stored message of the case, paging through ``sync``."""
        records: list[f.MessageRecord] = []
        while True:
            after = records[-1].seq if records else 0
            result = await self.request(f.Sync(id=rid(), case_id=case_id, after_seq=after))
            assert isinstance(result, f.SyncResult), result
            records += result.messages
            if not result.has_more:
                return records

    async def event(self, kind: type[msgspec.Struct], timeout: float = 5.0) -> Any:
        for i, e in enumerate(self.events):
            if isinstance(e, kind):
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(frame, kind):
                return frame
            self.events.append(frame)

    # -- account flows -------------------------------------------------------

    async def register(
        self, handle: str, passphrase: str = "pw", invite: str | None = None
    ) -> None:
        self.identity = crypto.Identity.generate()
        salt = crypto.new_salt()
        keys = crypto.derive_login_keys(passphrase, salt, 1, 8192)
        reply = await self.request(
            f.Register(
                id=rid(),
                handle=handle,
                salt=salt,
                opslimit=1,
                memlimit=8192,
                auth_key=keys.auth_key,
                sign_pk=self.identity.sign_pk,
                box_pk=self.identity.box_pk,
                box_sig=crypto.sign_box_key(self.identity),
                wrapped_keys=crypto.wrap_identity(self.identity, keys.wrap_key),
                invite=invite,
            )
        )
        assert isinstance(reply, f.Registered), reply
        self.account_id = reply.account_id
        self.handle = handle
        await self.login(passphrase)

    async def login(self, passphrase: str = "pw") -> None:
        pre = await self.request(f.Prelogin(id=rid(), handle=self.handle))
        assert isinstance(pre, f.PreloginResult), pre
        keys = crypto.derive_login_keys(passphrase, pre.salt, pre.opslimit, pre.memlimit)
        res = await self.request(f.Login(id=rid(), handle=self.handle, auth_key=keys.auth_key))
        assert isinstance(res, f.LoginResult), res
        self.identity = opening.unwrap_identity(res.wrapped_keys, keys.wrap_key)
        self.token = res.token
        self.login_result = res

    async def authenticate(self) -> f.Welcome:
        challenge = await self.request(f.Hello(id=rid()))
        assert isinstance(challenge, f.Challenge), challenge
        assert self.identity is not None
        sig = crypto.sign_challenge(self.identity, challenge.nonce, self.account_id)
        welcome = await self.request(
            f.AuthRequest(id=rid(), account_id=self.account_id, token=self.token, sig=sig)
        )
        assert isinstance(welcome, f.Welcome), welcome
        return welcome

    async def reconnect(self, url: str) -> f.Welcome:
        """A second session of the same account (new connection, same keys and token)."""
        other = await RawClient.connect(url)
        other.identity, other.account_id, other.token = self.identity, self.account_id, self.token
        other.handle = self.handle
        self.ws = other.ws
        self.events.clear()
        return await self.authenticate()

    async def session_of_same_account(self, url: str) -> RawClient:
        other = await RawClient.connect(url)
        other.identity, other.account_id, other.token = self.identity, self.account_id, self.token
        other.handle = self.handle
        await other.authenticate()
        return other

    # -- case and message helpers ---------------------------------------------

    async def deposit_key(self, case: f.CaseInfo, peer_box_pk: bytes, epoch: int = 1) -> bytes:
        assert self.identity is not None and case.counselor_id is not None
        key = crypto.new_case_key()
        commitment = crypto.key_commitment(key, case.case_id, epoch)
        seals = [
            f.KeySeal(
                account_id=self.account_id, sealed=crypto.seal_case_key(key, self.identity.box_pk)
            ),
            f.KeySeal(
                account_id=case.counselor_id
                if self.account_id == case.client_id
                else case.client_id,
                sealed=crypto.seal_case_key(key, peer_box_pk),
            ),
        ]
        reply = await self.request(
            f.CaseKeyDeposit(
                id=rid(),
                case_id=case.case_id,
                epoch=epoch,
                commitment=commitment,
                commitment_sig=crypto.sign_commitment(
                    self.identity, case.case_id, epoch, commitment, escrow=crypto.NO_ESCROW
                ),
                escrow=crypto.NO_ESCROW,
                seals=seals,
            )
        )
        assert isinstance(reply, f.Ok), reply
        return key

    def receipt(
        self, case_id: str, record: f.MessageRecord, kind: f.ReceiptKind = "read"
    ) -> f.Receipt:
        """A receipt up to ``record``, signed over its chain hash."""
        assert self.identity is not None
        return f.Receipt(
            id=rid(),
            case_id=case_id,
            kind=kind,
            up_to_seq=record.seq,
            chain_hash=record.chain_hash,
            sig=crypto.sign_receipt(self.identity, case_id, kind, record.seq, record.chain_hash),
        )

    def encrypt(
        self,
        key: bytes,
        case_id: str,
        text: str,
        cmid: str | None = None,
        epoch: int = 1,
        *,
        prev: tuple[int, bytes] = (0, bytes(32)),
    ) -> f.MsgSend:
        """A signed, encrypted message; ``prev`` is the (seq, chain_hash) this peer
        claims to have seen last (the hub does not check it; participants do)."""
        assert self.identity is not None
        cmid = cmid or secrets.token_urlsafe(12)
        n = self.counters[case_id] = self.counters.get(case_id, 0) + 1
        nonce, ct = crypto.encrypt_message(
            key,
            self.identity,
            case_id=case_id,
            epoch=epoch,
            sender_id=self.account_id,
            envelope=crypto.Envelope(
                body=text,
                ts=int(time.time() * 1000),
                client_msg_id=cmid,
                prev_seq=prev[0],
                prev_hash=prev[1],
                n=n,
            ),
        )
        return f.MsgSend(
            id=rid(), case_id=case_id, epoch=epoch, client_msg_id=cmid, nonce=nonce, ciphertext=ct
        )


async def pair(
    url: str, invite: str, tag: str = "", *, counselor_url: str | None = None, **connect: Any
) -> tuple[RawClient, RawClient, f.CaseInfo, bytes]:
    """A counselor and a client, online, with an assigned case and its epoch-1 key.
    The counselor connects to ``counselor_url`` if given (another hub node); ``connect``
    goes to both connections (``ssl=`` for a ``wss://`` url)."""
    counselor = await RawClient.connect(counselor_url or url, **connect)
    await counselor.register(f"counselor{tag}{secrets.token_hex(3)}", invite=invite)
    await counselor.authenticate()
    client = await RawClient.connect(url, **connect)
    await client.register(f"client{tag}{secrets.token_hex(3)}")
    await client.authenticate()
    opened = await client.request(f.CaseOpen(id=rid(), topic="anxiety", language="en"))
    assert isinstance(opened, f.CaseOpened), opened
    assert opened.case.state == "assigned", opened.case
    await counselor.event(f.CaseAssigned)
    assert counselor.identity is not None
    key = await client.deposit_key(opened.case, counselor.identity.box_pk)
    await counselor.event(f.CaseKeyNew)
    return client, counselor, opened.case, key
