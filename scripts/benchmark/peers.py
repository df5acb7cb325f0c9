"""Protocol peers for the load generator: real accounts, real sessions, real encryption.

A :class:`Peer` speaks the wire protocol with ``protocol/`` directly (like
tests/helpers/rawclient.py, without its assertions-as-tests): register, login, hello, auth,
open a case, deposit its key. :func:`encrypt_frames` pre-encrypts and pre-encodes the
``msg.send`` frames of a timed phase, so the timed phase spends no client CPU on
crypto or JSON encoding.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from protocol import codec, crypto, opening
from protocol import frames as f
from protocol.limits import MAX_SERVER_FRAME_BYTES

__all__ = ["Pair", "Peer", "PeerError", "encrypt_frames", "open_ws", "setup_pair"]

_ids = itertools.count(1)

#: Argon2id at the protocol minimum (the hub runs with --kdf test).
KDF_OPS, KDF_MEM = 1, 8192


class PeerError(RuntimeError):
    """The hub answered something the benchmark did not expect (a failed benchmark)."""


def _rid() -> str:
    return f"s{next(_ids)}"


async def open_ws(url: str, tls: ssl.SSLContext | None = None) -> ClientConnection:
    # The client side of the benchmark answers the hub's pings but sends none of its own.
    options: dict[str, Any] = {"ssl": tls} if tls is not None else {}
    return await connect(
        url,
        **options,
        compression=None,
        max_size=MAX_SERVER_FRAME_BYTES,
        ping_interval=None,
        open_timeout=60,
        close_timeout=5,
    )


@dataclass
class Peer:
    ws: ClientConnection
    handle: str = ""
    identity: crypto.Identity | None = None
    account_id: str = ""
    token: str = ""

    async def request(self, frame: Any, wait_s: float = 60.0) -> Any:
        """Send ``frame``; return the answer with its id (events meanwhile are dropped)."""
        await self.ws.send(codec.encode(frame), text=True)
        deadline = time.monotonic() + wait_s
        while True:
            raw = await asyncio.wait_for(
                self.ws.recv(decode=False), max(0.01, deadline - time.monotonic())
            )
            reply = codec.decode_server(raw)
            if getattr(reply, "id", None) == frame.id:
                if isinstance(reply, f.ErrorFrame):
                    raise PeerError(f"{type(frame).__name__}: {reply.code}: {reply.message}")
                return reply

    async def register(self, handle: str, invite: str | None = None) -> None:
        self.identity = crypto.Identity.generate()
        salt = crypto.new_salt()
        keys = crypto.derive_login_keys("bench-passphrase", salt, KDF_OPS, KDF_MEM)
        reply = await self.request(
            f.Register(
                id=_rid(),
                handle=handle,
                salt=salt,
                opslimit=KDF_OPS,
                memlimit=KDF_MEM,
                auth_key=keys.auth_key,
                sign_pk=self.identity.sign_pk,
                box_pk=self.identity.box_pk,
                box_sig=crypto.sign_box_key(self.identity),
                wrapped_keys=crypto.wrap_identity(self.identity, keys.wrap_key),
                invite=invite,
            )
        )
        self.account_id, self.handle = reply.account_id, handle
        await self.login()

    async def login(self) -> None:
        pre = await self.request(f.Prelogin(id=_rid(), handle=self.handle))
        keys = crypto.derive_login_keys("bench-passphrase", pre.salt, pre.opslimit, pre.memlimit)
        res = await self.request(f.Login(id=_rid(), handle=self.handle, auth_key=keys.auth_key))
        self.identity = opening.unwrap_identity(res.wrapped_keys, keys.wrap_key)
        self.token = res.token

    async def authenticate(self) -> f.Welcome:
        challenge = await self.request(f.Hello(id=_rid(), client="bench"))
        assert self.identity is not None
        sig = crypto.sign_challenge(self.identity, challenge.nonce, self.account_id)
        welcome: f.Welcome = await self.request(
            f.AuthRequest(id=_rid(), account_id=self.account_id, token=self.token, sig=sig)
        )
        return welcome

    def clone(self, ws: ClientConnection) -> Peer:
        """Another session of the same account, on ``ws``."""
        return Peer(ws, self.handle, self.identity, self.account_id, self.token)


@dataclass
class Pair:
    """One client and its counselor, online, sharing an assigned case with a key."""

    index: int
    client: Peer
    counselor: Peer
    case_id: str
    key: bytes


async def setup_pair(
    url: str,
    tag: str,
    index: int,
    invite: str,
    language: str,
    *,
    counselor_url: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Pair:
    """Pair ``index``: its counselor connects to ``counselor_url`` (default ``url``: in
    a cluster, another node than its client's), both with ``tls`` for ``wss://``."""
    counselor = Peer(await open_ws(counselor_url or url, tls))
    await counselor.register(f"k{tag}{index}", invite=invite)
    await counselor.authenticate()
    client = Peer(await open_ws(url, tls))
    await client.register(f"c{tag}{index}")
    await client.authenticate()
    opened = await client.request(f.CaseOpen(id=_rid(), topic="anxiety", language=language))
    case = opened.case
    if case.state != "assigned" or case.counselor_id != counselor.account_id:
        raise PeerError(f"pair {index}: case not assigned to its counselor ({case.state})")
    assert client.identity is not None and counselor.identity is not None
    key = crypto.new_case_key()
    commitment = crypto.key_commitment(key, case.case_id, 1)
    await client.request(
        f.CaseKeyDeposit(
            id=_rid(),
            case_id=case.case_id,
            epoch=1,
            commitment=commitment,
            commitment_sig=crypto.sign_commitment(
                client.identity, case.case_id, 1, commitment, escrow=crypto.NO_ESCROW
            ),
            escrow=crypto.NO_ESCROW,
            seals=[
                f.KeySeal(
                    account_id=client.account_id,
                    sealed=crypto.seal_case_key(key, client.identity.box_pk),
                ),
                f.KeySeal(
                    account_id=counselor.account_id,
                    sealed=crypto.seal_case_key(key, counselor.identity.box_pk),
                ),
            ],
        )
    )
    return Pair(index, client, counselor, case.case_id, key)


def body_text(chars: int, k: int) -> str:
    """A message body of exactly ``chars`` characters (content is irrelevant: it is sealed)."""
    base = f"message {k}: how are you feeling today? " * (chars // 20 + 1)
    return base[:chars]


def encrypt_frames(
    identity: crypto.Identity,
    *,
    key: bytes,
    case_id: str,
    sender_id: str,
    cmids: list[str],
    body_chars: int,
) -> list[bytes]:
    """The encoded ``msg.send`` frames for ``cmids`` (request id = client_msg_id)."""
    out = []
    now_ms = int(time.time() * 1000)
    for k, cmid in enumerate(cmids):
        nonce, ct = crypto.encrypt_message(
            key,
            identity,
            case_id=case_id,
            epoch=1,
            sender_id=sender_id,
            # The benchmark's senders compose without reading: prev is "nothing seen"
            # and n counts this batch (the hub does not check either; the cost is the same).
            envelope=crypto.Envelope(
                body=body_text(body_chars, k),
                ts=now_ms,
                client_msg_id=cmid,
                prev_seq=0,
                prev_hash=bytes(32),
                n=k + 1,
            ),
        )
        out.append(
            codec.encode(
                f.MsgSend(
                    id=cmid,
                    case_id=case_id,
                    epoch=1,
                    client_msg_id=cmid,
                    nonce=nonce,
                    ciphertext=ct,
                )
            )
        )
    return out


class RelayIdentity:
    """Stand-in ids for relay pairs: the relay reads nothing, but frames are real-sized."""

    def __init__(self) -> None:
        self.identity = crypto.Identity.generate()
        self.key = crypto.new_case_key()
        self.case_id = "case_" + os.urandom(10).hex()


# Light decoders for the timed phase: only the fields the load generator checks.
class _Record(msgspec.Struct):
    client_msg_id: str = ""
    seq: int = 0


class Incoming(msgspec.Struct):
    type: str
    id: str | None = None
    client_msg_id: str | None = None
    seq: int = 0
    duplicate: bool = False
    code: str | None = None
    message: _Record | None = None


INCOMING = msgspec.json.Decoder(Incoming)
