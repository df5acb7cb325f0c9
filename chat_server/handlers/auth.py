"""Registration, login and connection authentication (DESIGN.md: the Bitwarden pattern).

The server never sees a passphrase: it stores an Argon2id hash of the client-derived
``auth_key`` and the client's identity keys wrapped under a ``wrap_key`` it never gets.
Unknown handles are answered by the login decoys (``credentials.LoginDecoys``), so
neither ``prelogin`` nor ``login`` tells which handles exist.

``hello`` and ``auth`` do not change the connection themselves: they return
:class:`~chat_server.context.Challenged` and :class:`~chat_server.context.SignedIn`, and
the connection's state machine (protocol/session.py) records the nonce and the account.
"""

from __future__ import annotations

import asyncio
import secrets

import nacl.exceptions
import nacl.pwhash
import nacl.utils

from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import AuthFailed, CryptoError, InvalidFrame
from storage.records import AccountRecord

from ..casebook import case_info
from ..context import Caller, Challenged, Guest, SignedIn
from ..credentials import invite_code_hash, token_hash
from ..hub import Hub
from ..logs import log_event

__all__ = ["auth", "hello", "login", "logout", "ping", "prelogin", "register"]

#: Bytes of the challenge nonce (docs/PROTOCOL.md 8.1).
NONCE_BYTES = 32


async def hello(hub: Hub, guest: Guest, frame: f.Hello) -> Challenged:
    return Challenged(
        f.Challenge(
            id=frame.id,
            nonce=nacl.utils.random(NONCE_BYTES),
            server_key=hub.server_key.sign_pk,
            min_opslimit=hub.config.min_opslimit,
            min_memlimit=hub.config.min_memlimit,
        )
    )


async def ping(hub: Hub, who: Guest | Caller, frame: f.Ping) -> f.Pong:
    return f.Pong(id=frame.id)


async def register(hub: Hub, guest: Guest, frame: f.Register) -> f.Registered:
    if frame.opslimit < hub.config.min_opslimit or frame.memlimit < hub.config.min_memlimit:
        raise InvalidFrame("key derivation parameters are below the server minimum")
    auth_hash = await asyncio.to_thread(
        nacl.pwhash.argon2id.str,
        frame.auth_key,
        opslimit=hub.config.hash_opslimit,
        memlimit=hub.config.hash_memlimit,
    )
    account = AccountRecord(
        id="acc_" + secrets.token_hex(10),
        handle=frame.handle,
        role="client",
        salt=frame.salt,
        opslimit=frame.opslimit,
        memlimit=frame.memlimit,
        auth_hash=auth_hash.decode(),
        sign_pk=frame.sign_pk,
        box_pk=frame.box_pk,
        wrapped_keys=frame.wrapped_keys,
        languages=(),
        specialties=(),
        display_name=None,
        created_at=now_ms(),
    )
    invite = invite_code_hash(frame.invite) if frame.invite is not None else None
    created = await hub.db.accounts.create(account, invite)
    log_event("account.registered", account=created.id, role=created.role)
    return f.Registered(id=frame.id, account_id=created.id, role=created.role)


async def prelogin(hub: Hub, guest: Guest, frame: f.Prelogin) -> f.PreloginResult:
    account = await hub.db.accounts.by_handle(frame.handle)
    if account is None:
        # A stable fake answer, so that prelogin does not reveal which handles exist.
        return f.PreloginResult(
            id=frame.id,
            salt=hub.decoys.salt(frame.handle),
            opslimit=hub.config.min_opslimit,
            memlimit=hub.config.min_memlimit,
        )
    return f.PreloginResult(
        id=frame.id, salt=account.salt, opslimit=account.opslimit, memlimit=account.memlimit
    )


def _check_auth_key(auth_hash: bytes, auth_key: bytes) -> bool:
    try:
        return bool(nacl.pwhash.verify(auth_hash, auth_key))
    except nacl.exceptions.InvalidkeyError:
        return False


async def login(hub: Hub, guest: Guest, frame: f.Login) -> f.LoginResult:
    account = await hub.db.accounts.by_handle(frame.handle)
    stored = account.auth_hash.encode() if account is not None else hub.decoys.dummy_auth_hash
    # Verify even for unknown handles so both answers take the same time.
    ok = await asyncio.to_thread(_check_auth_key, stored, frame.auth_key)
    if account is None or not ok:
        log_event("auth.login_failed")
        raise AuthFailed("wrong handle or passphrase")
    token = secrets.token_urlsafe(32)
    expires = now_ms() + hub.config.token_ttl_s * 1000
    await hub.db.accounts.add_token(token_hash(token), account.id, expires)
    log_event("auth.login", account=account.id)
    return f.LoginResult(
        id=frame.id,
        account_id=account.id,
        role=account.role,
        sign_pk=account.sign_pk,
        box_pk=account.box_pk,
        wrapped_keys=account.wrapped_keys,
        token=token,
        token_expires=expires,
    )


async def auth(hub: Hub, guest: Guest, frame: f.AuthRequest) -> SignedIn:
    """Check the token and the signed challenge; then attach the connection, send
    ``welcome`` and assign waiting cases to a counselor, in that order (the registry
    must know the session before anything is published to it, and ``welcome`` comes
    before any ``case.assigned`` that matching publishes)."""
    challenge = guest.challenge
    if challenge is None:  # the state machine lets auth through only after hello
        raise InvalidFrame("send hello first to get a challenge")
    account = await hub.db.accounts.by_id(frame.account_id)
    hashed = token_hash(frame.token)
    valid = account is not None and await hub.db.accounts.token_valid(
        hashed, frame.account_id, now_ms()
    )
    if account is None or not valid:
        log_event("auth.failed", reason="token")
        raise AuthFailed("invalid or expired session token")
    try:
        crypto.verify_challenge(account.sign_pk, challenge, account.id, frame.sig)
    except CryptoError:
        log_event("auth.failed", reason="signature", account=account.id)
        raise AuthFailed("challenge signature does not verify") from None
    caller = Caller(
        peer=guest.peer,
        session_id=guest.session_id,
        account_id=account.id,
        role=account.role,
        sign_pk=account.sign_pk,
        token_hash=hashed,
    )
    await hub.registry.attach(guest.peer, account)
    cases = await hub.casebook.for_account(account.id)
    guest.peer.push(
        f.Welcome(
            id=frame.id,
            account_id=account.id,
            handle=account.handle,
            role=account.role,
            session_id=guest.session_id,
            cases=[case_info(c) for c in cases],
        )
    )
    log_event("auth.ok", account=account.id, session=guest.session_id)
    if account.role == "client" and await hub.db.escrow.current() is not None:
        # A legal order on one of this client's cases is told to them at once.
        hub.dispute_watcher.ensure_running()
    if account.role == "counselor":
        await hub.casebook.match_waiting()
    return SignedIn(caller)


async def logout(hub: Hub, caller: Caller, frame: f.Logout) -> f.Ok:
    """Revoke the session token; the state machine then closes the connection (1000)."""
    await hub.db.accounts.revoke_token(caller.token_hash)
    log_event("auth.logout", account=caller.account_id)
    return f.Ok(id=frame.id)
