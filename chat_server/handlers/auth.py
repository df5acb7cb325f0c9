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
from protocol.errors import AuthFailed, Conflict, CryptoError, InvalidFrame
from storage.records import AccountRecord

from ..casebook import case_info
from ..context import Caller, Challenged, Guest, SignedIn
from ..credentials import invite_code_hash, token_hash
from ..hub import Hub
from ..logs import log_event

__all__ = [
    "account_attest",
    "auth",
    "hello",
    "login",
    "logout",
    "ping",
    "prelogin",
    "register",
]

#: Bytes of the challenge nonce (docs/PROTOCOL.md 8.1).
NONCE_BYTES = 32


async def hello(hub: Hub, guest: Guest, frame: f.Hello) -> Challenged:
    return Challenged(
        f.Challenge(
            id=frame.id,
            nonce=nacl.utils.random(NONCE_BYTES),
            server_key=hub.server_key.sign_pk,
            min_opslimit=hub.config.kdf_opslimit,
            min_memlimit=hub.config.kdf_memlimit,
        )
    )


async def ping(hub: Hub, who: Guest | Caller, frame: f.Ping) -> f.Pong:
    return f.Pong(id=frame.id)


def _check_box_sig(sign_pk: bytes, box_pk: bytes, box_sig: bytes) -> None:
    try:
        crypto.verify_box_key(sign_pk, box_pk, box_sig)
    except CryptoError:
        raise InvalidFrame(
            "box_sig does not verify: the box key is not signed by sign_pk"
        ) from None


async def register(hub: Hub, guest: Guest, frame: f.Register) -> f.Registered:
    """Cheap checks before any hashing: the schema (by the codec), the box key's
    signature, the KDF cost, the address's registration bucket (before the handle check,
    so ``conflict`` cannot be used to list handles faster than registrations), the invite
    and the handle; then one Argon2id in a bounded slot."""
    config = hub.config
    _check_box_sig(frame.sign_pk, frame.box_pk, frame.box_sig)
    if (frame.opslimit, frame.memlimit) != (config.kdf_opslimit, config.kdf_memlimit):
        # One cost for every account, so prelogin cannot tell real handles from unknown.
        raise InvalidFrame("key derivation parameters must be the ones challenge announced")
    await hub.guard.before_register(guest.ip)
    invite = invite_code_hash(frame.invite) if frame.invite is not None else None
    if invite is not None:
        found = await hub.db.accounts.invite(invite)
        if found is None or found.used_by is not None:
            raise AuthFailed("invalid or used invite")
    if await hub.db.accounts.by_handle(frame.handle) is not None:
        raise Conflict("handle is taken")
    async with hub.guard.argon2.slot(guest.ip):
        auth_hash = await asyncio.to_thread(
            nacl.pwhash.argon2id.str,
            frame.auth_key,
            opslimit=config.hash_opslimit,
            memlimit=config.hash_memlimit,
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
        box_sig=frame.box_sig,
    )
    created = await hub.db.accounts.create(account, invite)
    log_event("account.registered", account=created.id, role=created.role)
    return f.Registered(id=frame.id, account_id=created.id, role=created.role)


async def prelogin(hub: Hub, guest: Guest, frame: f.Prelogin) -> f.PreloginResult:
    account = await hub.db.accounts.by_handle(frame.handle)
    if account is None:
        # A stable fake answer with the hub's one KDF cost, the same as a real account's,
        # so that prelogin does not reveal which handles exist.
        return f.PreloginResult(
            id=frame.id,
            salt=hub.decoys.salt(frame.handle),
            opslimit=hub.config.kdf_opslimit,
            memlimit=hub.config.kdf_memlimit,
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
    """A handle or address with too many failed logins is refused before any hashing;
    then one Argon2id in a bounded slot; a failure fills both buckets."""
    await hub.guard.before_login(frame.handle, guest.ip)
    account = await hub.db.accounts.by_handle(frame.handle)
    stored = account.auth_hash.encode() if account is not None else hub.decoys.dummy_auth_hash
    # Verify even for unknown handles so both answers take the same time.
    async with hub.guard.argon2.slot(guest.ip):
        ok = await asyncio.to_thread(_check_auth_key, stored, frame.auth_key)
    if account is None or not ok:
        log_event("auth.login_failed")
        await hub.guard.login_failed(frame.handle, guest.ip)
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
        box_sig=account.box_sig,
        cert=account.cert,
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
    expires = (
        await hub.db.accounts.token_expiry(hashed, frame.account_id, now_ms())
        if account is not None
        else None
    )
    if account is None or expires is None:
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
        token_expires=expires,
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


async def account_attest(hub: Hub, caller: Caller, frame: f.AccountAttest) -> f.Ok:
    """A version-1 account signs its stored box key (docs/PROTOCOL.md, "Upgrading a
    version-1 account"). Checked against the keys the hub holds for the caller."""
    account = await hub.db.accounts.by_id(caller.account_id)
    if account is None:  # deleted under a live session
        raise AuthFailed("account no longer exists")
    _check_box_sig(account.sign_pk, account.box_pk, frame.box_sig)
    await hub.db.accounts.set_box_sig(account.id, frame.box_sig)
    log_event("account.attested", account=account.id)
    return f.Ok(id=frame.id)


async def logout(hub: Hub, caller: Caller, frame: f.Logout) -> f.Ok:
    """Revoke the session token; the state machine then closes the connection (1000).
    With ``all``: every token of the account, and every other session of it on every
    node closes with 4004."""
    if frame.all:
        await hub.db.accounts.revoke_account_tokens(caller.account_id)
        hub.registry.sign_out(caller.account_id, exclude=caller.peer)
    else:
        await hub.db.accounts.revoke_token(caller.token_hash)
    log_event("auth.logout", account=caller.account_id, everywhere=frame.all)
    return f.Ok(id=frame.id)
