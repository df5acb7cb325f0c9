"""Registration, login and connection authentication (DESIGN.md: the Bitwarden pattern).

The server never sees a passphrase: it stores an Argon2id hash of the client-derived
``auth_key`` and the client's identity keys wrapped under a ``wrap_key`` it never gets.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import nacl.exceptions
import nacl.hash
import nacl.pwhash
import nacl.utils
from nacl.encoding import RawEncoder

from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.errors import AuthFailed, CloseCode, CryptoError, InvalidFrame
from storage.records import AccountRecord

from ..hub import Hub, case_info
from ..logs import log_event
from ..session import Session

__all__ = [
    "auth",
    "hello",
    "invite_code_hash",
    "login",
    "logout",
    "ping",
    "prelogin",
    "register",
    "token_hash",
]


def _hash(data: bytes, person: bytes, key: bytes = b"", size: int = 32) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key, person=person, encoder=RawEncoder)


def token_hash(token: str) -> bytes:
    return _hash(token.encode(), b"chat-token-hash1")


def invite_code_hash(code: str) -> bytes:
    return _hash(code.strip().encode(), b"chat-invite-hsh1")


async def hello(hub: Hub, session: Session, frame: f.Hello) -> f.Challenge:
    nonce = nacl.utils.random(32)
    session.machine.challenge_issued(nonce)
    return f.Challenge(
        id=frame.id,
        nonce=nonce,
        server_key=hub.server_identity.sign_pk,
        min_opslimit=hub.config.min_opslimit,
        min_memlimit=hub.config.min_memlimit,
    )


async def ping(hub: Hub, session: Session, frame: f.Ping) -> f.Pong:
    return f.Pong(id=frame.id)


async def register(hub: Hub, session: Session, frame: f.Register) -> f.Registered:
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


async def prelogin(hub: Hub, session: Session, frame: f.Prelogin) -> f.PreloginResult:
    account = await hub.db.accounts.by_handle(frame.handle)
    if account is None:
        # A stable fake answer, so that prelogin does not reveal which handles exist.
        fake_salt = _hash(frame.handle.encode(), b"chat-fake-salt01", hub.fake_salt_key, 16)
        return f.PreloginResult(
            id=frame.id,
            salt=fake_salt,
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


async def login(hub: Hub, session: Session, frame: f.Login) -> f.LoginResult:
    account = await hub.db.accounts.by_handle(frame.handle)
    stored = account.auth_hash.encode() if account is not None else hub.dummy_auth_hash
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


async def auth(hub: Hub, session: Session, frame: f.AuthRequest) -> None:
    challenge = session.machine.challenge
    assert challenge is not None
    account = await hub.db.accounts.by_id(frame.account_id)
    valid = account is not None and await hub.db.accounts.token_valid(
        token_hash(frame.token), frame.account_id, now_ms()
    )
    if account is None or not valid:
        log_event("auth.failed", reason="token")
        raise AuthFailed("invalid or expired session token")
    try:
        crypto.verify_challenge(account.sign_pk, challenge, account.id, frame.sig)
    except CryptoError:
        log_event("auth.failed", reason="signature", account=account.id)
        raise AuthFailed("challenge signature does not verify") from None
    # A challenge is good for one auth only.
    session.machine.authenticated()
    session.account = account
    session.token_hash = token_hash(frame.token)
    session.authenticated_at = time.monotonic()
    hub.attach(session)
    cases = await hub.db.cases.for_account(account.id)
    for case in cases:
        hub.remember(case)
    session.push(
        f.Welcome(
            id=frame.id,
            account_id=account.id,
            handle=account.handle,
            role=account.role,
            session_id=session.id,
            cases=[case_info(c) for c in cases],
        )
    )
    log_event("auth.ok", account=account.id, session=session.id)
    if account.role == "counselor":
        await hub.match_waiting()


async def logout(hub: Hub, session: Session, frame: f.Logout) -> None:
    if session.token_hash is not None:
        await hub.db.accounts.revoke_token(session.token_hash)
    session.push(f.Ok(id=frame.id))
    session.close(CloseCode.NORMAL, "logged out")
    log_event("auth.logout", account=session.account_id)
