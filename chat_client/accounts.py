"""Account flows that happen before a session exists: register, login, unlock.

Each returns :class:`Credentials` (key store, unwrapped identity, login keys, token),
which :class:`chat_client.sdk.ChatClient` turns into a connected session. Register and
login use a short-lived connection of their own; unlock needs no network at all.
Argon2id runs in a worker thread so a slow derivation never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from protocol import crypto, opening
from protocol import errors as pe
from protocol import frames as f

from .connection import Link, LinkClosed, expect
from .cursors import Cursor
from .errors import ConnectFailed, KdfTooWeak, KeyStoreError
from .keystore import AccountRecord, KeyStore, StoredToken
from .policy import check_kdf_floor, check_passphrase, check_remembered, kdf_floor

__all__ = ["CLIENT_NAME", "Credentials", "login", "login_request", "register", "unlock"]

CLIENT_NAME = "chat-client/0.1"


@dataclasses.dataclass(frozen=True, repr=False)
class Credentials:
    """What a session needs; the identity and login keys live in memory only."""

    store: KeyStore
    identity: crypto.Identity
    login_keys: crypto.LoginKeys  # auth_key kept so an expired token can be renewed
    token: StoredToken | None
    #: A version-1 account whose box key the hub holds no signature for: the SDK sends
    #: ``account.attest`` as soon as the session is up.
    needs_attest: bool = False


@contextlib.asynccontextmanager
async def preauth_link(url: str, tls: ssl.SSLContext | None = None) -> AsyncIterator[Link]:
    """A short-lived link for register / prelogin / login (no events expected)."""
    link = await Link.open(url, on_event=lambda frame: None, on_close=lambda info: None, tls=tls)
    reader = asyncio.create_task(link.run())
    try:
        yield link
    except LinkClosed as exc:
        raise ConnectFailed(f"connection lost during login: {exc}") from None
    finally:
        await link.close()
        await reader


_T = TypeVar("_T")

#: How often a ``register`` or ``login`` answered ``busy`` (the hub is hashing too much
#: at once) is tried again, each time after the ``retry_after_ms`` the hub gave.
BUSY_RETRIES = 3


async def when_not_busy(ask: Callable[[], Awaitable[_T]]) -> _T:
    """``await ask()``, again after the hub's ``retry_after_ms`` while it answers
    ``busy`` (at most :data:`BUSY_RETRIES` times, at most 5 s apart)."""
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return await ask()
        except pe.Busy as exc:
            if attempt == BUSY_RETRIES:
                raise
            await asyncio.sleep(min(5.0, (exc.retry_after_ms or 500) / 1000))
    raise AssertionError("unreachable")


async def login_request(link: Link, handle: str, auth_key: bytes) -> f.LoginResult:
    """``login`` on ``link``; a refusal becomes AuthFailed("wrong handle or passphrase")."""
    try:
        answer = await when_not_busy(
            lambda: link.request(f.Login, handle=handle, auth_key=auth_key)
        )
    except pe.AuthFailed:
        raise pe.AuthFailed("wrong handle or passphrase") from None
    return expect(answer, f.LoginResult)


async def register(
    url: str,
    handle: str,
    passphrase: str,
    *,
    home: Path,
    invite: str | None,
    opslimit: int | None = None,
    memlimit: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> Credentials:
    """Make keys locally, register, log in for a token, write the key store.

    The passphrase must pass the rule of :func:`policy.check_passphrase` (WeakPassphrase)
    before anything is sent. The hub registers every account at one KDF cost, announced
    in ``challenge``, which must reach the client's KDF floor (KdfDowngrade);
    ``opslimit``/``memlimit`` None take it, and given ones must equal it (KdfTooWeak).
    All is checked before deriving."""
    if KeyStore.exists(home):
        raise KeyStoreError(f"{home} already holds an account; use another home directory")
    check_passphrase(passphrase, [handle])
    min_ops, min_mem = kdf_floor()
    if (opslimit is not None and opslimit < min_ops) or (
        memlimit is not None and memlimit < min_mem
    ):
        raise KdfTooWeak(
            f"Argon2id limits opslimit={opslimit} memlimit={memlimit} are below this "
            f"client's floor (opslimit>={min_ops}, memlimit>={min_mem})"
        )
    async with preauth_link(url, tls) as link:
        challenge = expect(await link.request(f.Hello, client=CLIENT_NAME), f.Challenge)
        # The page and the SDK never take a cost below the floor from the hub.
        check_kdf_floor(
            challenge.min_opslimit, challenge.min_memlimit, source="the hub's challenge"
        )
        # Checked before the (slow) derivation, against the cost the server announces.
        required = (challenge.min_opslimit, challenge.min_memlimit)
        opslimit = required[0] if opslimit is None else opslimit
        memlimit = required[1] if memlimit is None else memlimit
        if (opslimit, memlimit) != required:
            below = opslimit < required[0] or memlimit < required[1]
            raise KdfTooWeak(
                f"Argon2id limits opslimit={opslimit} memlimit={memlimit} are "
                f"{'below' if below else 'not'} the server's (opslimit={required[0]}, "
                f"memlimit={required[1]}); every account of this server uses those"
            )
        salt = crypto.new_salt()
        keys = await asyncio.to_thread(
            crypto.derive_login_keys, passphrase, salt, opslimit, memlimit
        )
        identity = crypto.Identity.generate()
        wrapped = crypto.wrap_identity(identity, keys.wrap_key)
        registered = expect(
            await when_not_busy(
                lambda: link.request(
                    f.Register,
                    handle=handle,
                    salt=salt,
                    opslimit=opslimit,
                    memlimit=memlimit,
                    auth_key=keys.auth_key,
                    sign_pk=identity.sign_pk,
                    box_pk=identity.box_pk,
                    box_sig=crypto.sign_box_key(identity),
                    wrapped_keys=wrapped,
                    invite=invite,
                )
            ),
            f.Registered,
        )
        result = await login_request(link, handle, keys.auth_key)
    if result.account_id != registered.account_id:
        raise pe.InvalidFrame("login after register returned another account")
    record = AccountRecord(
        server=url,
        handle=handle,
        account_id=registered.account_id,
        role=registered.role,
        salt=salt,
        opslimit=opslimit,
        memlimit=memlimit,
        wrapped_keys=wrapped,
        sign_pk=identity.sign_pk,
        box_pk=identity.box_pk,
    )
    store = KeyStore.create(home, record)
    token = StoredToken(result.token, result.token_expires)
    store.store_token(token.token, token.expires_ms, keys.wrap_key)
    return Credentials(store, identity, keys, token)


async def login(
    url: str, handle: str, passphrase: str, *, home: Path, tls: ssl.SSLContext | None = None
) -> Credentials:
    """prelogin -> derive -> login -> unwrap, then write (or refresh) the key store.
    An existing store in ``home`` must belong to the same account; its cursors are kept.

    Before deriving (so before any auth_key leaves this process) the prelogin answer must
    reach the KDF floor and, if ``home`` already knows ``handle``, repeat the remembered
    salt and limits exactly; otherwise KdfDowngrade."""
    old: AccountRecord | None = None
    if KeyStore.exists(home):
        old = KeyStore.load(home).record
        if old.handle != handle:
            raise KeyStoreError(f"{home} holds another account ({old.handle})")
    async with preauth_link(url, tls) as link:
        pre = expect(await link.request(f.Prelogin, handle=handle), f.PreloginResult)
        check_kdf_floor(pre.opslimit, pre.memlimit, source="the hub's prelogin answer")
        if old is not None:
            check_remembered(
                handle,
                (old.salt, old.opslimit, old.memlimit),
                (pre.salt, pre.opslimit, pre.memlimit),
            )
        keys = await asyncio.to_thread(
            crypto.derive_login_keys, passphrase, pre.salt, pre.opslimit, pre.memlimit
        )
        result = await login_request(link, handle, keys.auth_key)
    identity = opening.unwrap_identity(result.wrapped_keys, keys.wrap_key)
    if identity.sign_pk != result.sign_pk or identity.box_pk != result.box_pk:
        raise pe.CryptoError("the server's public keys do not match the wrapped identity")
    if result.box_sig is not None:
        crypto.verify_box_key(result.sign_pk, result.box_pk, result.box_sig)
    cursors: dict[str, Cursor] = {}
    if old is not None:
        if old.account_id != result.account_id:
            raise KeyStoreError(f"{home} holds another account ({old.handle})")
        cursors = old.cursors
    record = AccountRecord(
        server=url,
        handle=handle,
        account_id=result.account_id,
        role=result.role,
        salt=pre.salt,
        opslimit=pre.opslimit,
        memlimit=pre.memlimit,
        wrapped_keys=result.wrapped_keys,
        sign_pk=result.sign_pk,
        box_pk=result.box_pk,
        cursors=cursors,
    )
    store = KeyStore.create(home, record, overwrite=True)
    token = StoredToken(result.token, result.token_expires)
    store.store_token(token.token, token.expires_ms, keys.wrap_key)
    return Credentials(store, identity, keys, token, needs_attest=result.box_sig is None)


async def unlock(home: Path, passphrase: str) -> Credentials:
    """Open the local key store; CryptoError("wrong passphrase") if it does not unwrap."""
    store = KeyStore.load(home)
    keys = await asyncio.to_thread(store.derive, passphrase)
    identity = store.unlock(keys)
    return Credentials(store, identity, keys, store.read_token(keys.wrap_key))
