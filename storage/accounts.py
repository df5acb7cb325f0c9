"""Accounts, counselor invites and session tokens.

The server never learns a passphrase or a private key: an account row holds the
login salt and KDF limits, an Argon2id hash of the client's ``auth_key`` (computed by
the server, stored here as a string), the public keys and the identity blob wrapped
by the client. The salt and the wrapped blob are sealed at rest under the data key
(they are what an offline passphrase guess from a stolen database would start from).
The public keys, the box key signature and the counselor certificate are public and
stored as they are. Invite codes and session tokens are bearer secrets, so only their
hashes are stored (the caller hashes; this module never sees the secret).

A counselor's display name is personal data the hub must show to clients; it is
stored encrypted at rest (:mod:`storage.atrest`), bound to the invite or account row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import msgspec
from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from protocol import clock
from protocol.errors import AuthFailed, Conflict, NotFound
from protocol.frames import CounselorCert

from .atrest import context
from .models import Account, Invite, Token, table
from .records import AccountRecord, InviteRecord, Role, as_role, join_list, split_list
from .transactions import AnyRow, Transactions

__all__ = ["AccountRepository"]

_ACCOUNTS = table(Account)
_INVITES = table(Invite)
_TOKENS = table(Token)

#: Columns read for an AccountRecord, in the order ``_account`` expects.
_ACCOUNT_COLUMNS = (
    _ACCOUNTS.c.id,
    _ACCOUNTS.c.handle,
    _ACCOUNTS.c.role,
    _ACCOUNTS.c.salt_enc,
    _ACCOUNTS.c.opslimit,
    _ACCOUNTS.c.memlimit,
    _ACCOUNTS.c.auth_hash,
    _ACCOUNTS.c.sign_pk,
    _ACCOUNTS.c.box_pk,
    _ACCOUNTS.c.wrapped_keys_enc,
    _ACCOUNTS.c.languages,
    _ACCOUNTS.c.specialties,
    _ACCOUNTS.c.name_enc,
    _ACCOUNTS.c.created_at,
    _ACCOUNTS.c.box_sig,
    _ACCOUNTS.c.cert,
)

_cert_decoder = msgspec.json.Decoder(CounselorCert)


def _name_ctx(account_id: str) -> bytes:
    return context("accounts.name", account_id)


def _salt_ctx(account_id: str) -> bytes:
    return context("accounts.salt", account_id)


def _wrapped_ctx(account_id: str) -> bytes:
    return context("accounts.wrapped_keys", account_id)


def _invite_name_ctx(code_hash: bytes) -> bytes:
    return context("invites.name", code_hash)


class AccountRepository:
    """Accounts, invites and tokens. Every method is one transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    # -- accounts -------------------------------------------------------------

    async def create(
        self, account: AccountRecord, invite_code_hash: bytes | None = None
    ) -> AccountRecord:
        """Store a new account and return it as stored.

        Without an invite the account is stored as given (the server decides the role:
        "client" for open registration). With ``invite_code_hash`` the invite must
        exist and be unused; in the same transaction it is marked used by this account,
        and the account takes the invite's role, display name, languages and
        specialties (whatever ``account`` said about those is ignored).

        Raises :class:`~protocol.errors.AuthFailed` ("invalid or used invite") if the
        invite is unknown or already used, :class:`~protocol.errors.Conflict` ("handle is
        taken") if another account has the handle. Either way nothing is stored.
        """
        cipher = self._tx.cipher
        try:
            async with self._tx.write() as conn:
                role: Role = account.role
                name = account.display_name
                languages, specialties = account.languages, account.specialties
                if invite_code_hash is not None:
                    inv = (
                        await conn.execute(
                            select(
                                _INVITES.c.role,
                                _INVITES.c.name_enc,
                                _INVITES.c.languages,
                                _INVITES.c.specialties,
                            ).where(
                                _INVITES.c.code_hash == invite_code_hash,
                                _INVITES.c.used_by.is_(None),
                            )
                        )
                    ).one_or_none()
                    if inv is None:
                        raise AuthFailed("invalid or used invite")
                    role = as_role(inv.role)
                    name = cipher.open_optional(inv.name_enc, _invite_name_ctx(invite_code_hash))
                    languages = split_list(inv.languages)
                    specialties = split_list(inv.specialties)
                # Checked up front for a clear answer; the UNIQUE constraint still
                # decides races between hubs (IntegrityError, mapped below).
                taken = await conn.scalar(
                    select(exists().where(_ACCOUNTS.c.handle == account.handle))
                )
                if taken:
                    raise Conflict("handle is taken")
                await conn.execute(
                    insert(_ACCOUNTS).values(
                        id=account.id,
                        handle=account.handle,
                        role=role,
                        salt_enc=cipher.seal_bytes(account.salt, _salt_ctx(account.id)),
                        opslimit=account.opslimit,
                        memlimit=account.memlimit,
                        auth_hash=account.auth_hash,
                        sign_pk=account.sign_pk,
                        box_pk=account.box_pk,
                        wrapped_keys_enc=cipher.seal_bytes(
                            account.wrapped_keys, _wrapped_ctx(account.id)
                        ),
                        box_sig=account.box_sig,
                        cert=None if account.cert is None else msgspec.json.encode(account.cert),
                        languages=join_list(languages),
                        specialties=join_list(specialties),
                        name_enc=cipher.seal_optional(name, _name_ctx(account.id)),
                        created_at=account.created_at,
                    )
                )
                if invite_code_hash is not None:
                    # Conditional on "still unused": of two registrations racing for one
                    # invite, exactly one sees rowcount 1; the other rolls back entirely.
                    res = await conn.execute(
                        update(_INVITES)
                        .where(
                            _INVITES.c.code_hash == invite_code_hash,
                            _INVITES.c.used_by.is_(None),
                        )
                        .values(used_by=account.id, used_at=clock.now_ms())
                    )
                    if res.rowcount != 1:
                        raise AuthFailed("invalid or used invite")
        except IntegrityError as exc:
            raise Conflict("handle is taken") from exc
        return dataclasses.replace(
            account,
            role=role,
            languages=languages,
            specialties=specialties,
            display_name=name,
        )

    async def by_handle(self, handle: str) -> AccountRecord | None:
        """The account with this handle, or None."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(*_ACCOUNT_COLUMNS).where(_ACCOUNTS.c.handle == handle))
            ).one_or_none()
        return None if row is None else self._account(row)

    async def by_id(self, account_id: str) -> AccountRecord | None:
        """The account with this id, or None."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(*_ACCOUNT_COLUMNS).where(_ACCOUNTS.c.id == account_id))
            ).one_or_none()
        return None if row is None else self._account(row)

    async def by_ids(self, account_ids: Iterable[str]) -> list[AccountRecord]:
        """The accounts among ``account_ids`` that exist, ordered by id (unknown ids are
        simply absent; duplicates in the input are collapsed)."""
        ids = sorted(set(account_ids))
        if not ids:
            return []
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(*_ACCOUNT_COLUMNS)
                    .where(_ACCOUNTS.c.id.in_(ids))
                    .order_by(_ACCOUNTS.c.id)
                )
            ).all()
        return [self._account(r) for r in rows]

    async def counselors(self) -> list[AccountRecord]:
        """Every counselor account, ordered by id (matching breaks ties by id)."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(*_ACCOUNT_COLUMNS)
                    .where(_ACCOUNTS.c.role == "counselor")
                    .order_by(_ACCOUNTS.c.id)
                )
            ).all()
        return [self._account(r) for r in rows]

    async def set_box_sig(self, account_id: str, box_sig: bytes) -> None:
        """Store the box key signature of an account (the caller verified it against the
        account's keys). NotFound if there is no such account."""
        async with self._tx.write() as conn:
            res = await conn.execute(
                update(_ACCOUNTS).where(_ACCOUNTS.c.id == account_id).values(box_sig=box_sig)
            )
        if res.rowcount != 1:
            raise NotFound("account not found")

    async def set_cert(self, cert: CounselorCert) -> None:
        """Store a counselor certificate for ``cert.account_id`` if the account still has
        the certified keys (checked in the same transaction, so a key change cannot slip
        in between). NotFound if there is no such account; Conflict if its keys or
        handle differ from the certificate's."""
        async with self._tx.write() as conn:
            res = await conn.execute(
                update(_ACCOUNTS)
                .where(
                    _ACCOUNTS.c.id == cert.account_id,
                    _ACCOUNTS.c.handle == cert.handle,
                    _ACCOUNTS.c.sign_pk == cert.sign_pk,
                    _ACCOUNTS.c.box_pk == cert.box_pk,
                    _ACCOUNTS.c.role == "counselor",
                )
                .values(cert=msgspec.json.encode(cert))
            )
            if res.rowcount != 1:
                found = await conn.scalar(select(exists().where(_ACCOUNTS.c.id == cert.account_id)))
                if not found:
                    raise NotFound(f"no account {cert.account_id}")
                raise Conflict(
                    f"the certificate for {cert.account_id} does not match the account's "
                    "handle, role or keys"
                )

    def _account(self, row: AnyRow) -> AccountRecord:
        cipher = self._tx.cipher
        return AccountRecord(
            id=row.id,
            handle=row.handle,
            role=as_role(row.role),
            salt=cipher.open_bytes(bytes(row.salt_enc), _salt_ctx(row.id)),
            opslimit=row.opslimit,
            memlimit=row.memlimit,
            auth_hash=row.auth_hash,
            sign_pk=bytes(row.sign_pk),
            box_pk=bytes(row.box_pk),
            wrapped_keys=cipher.open_bytes(bytes(row.wrapped_keys_enc), _wrapped_ctx(row.id)),
            languages=split_list(row.languages),
            specialties=split_list(row.specialties),
            display_name=cipher.open_optional(row.name_enc, _name_ctx(row.id)),
            created_at=row.created_at,
            box_sig=None if row.box_sig is None else bytes(row.box_sig),
            cert=None if row.cert is None else _cert_decoder.decode(bytes(row.cert)),
        )

    # -- invites --------------------------------------------------------------

    async def create_invite(
        self,
        code_hash: bytes,
        role: Role,
        display_name: str | None,
        languages: Sequence[str],
        specialties: Sequence[str],
        *,
        now_ms: int | None = None,
    ) -> InviteRecord:
        """Store an unused invite (``code_hash``: the caller's hash of the code).

        ``now_ms`` defaults to the wall clock. Raises Conflict if the hash exists.
        """
        created_at = clock.now_ms() if now_ms is None else now_ms
        langs, specs = tuple(languages), tuple(specialties)
        name_enc = self._tx.cipher.seal_optional(display_name, _invite_name_ctx(code_hash))
        try:
            async with self._tx.write() as conn:
                await conn.execute(
                    insert(_INVITES).values(
                        code_hash=code_hash,
                        role=role,
                        name_enc=name_enc,
                        languages=join_list(langs),
                        specialties=join_list(specs),
                        created_at=created_at,
                        used_by=None,
                        used_at=None,
                    )
                )
        except IntegrityError as exc:
            raise Conflict("invite exists") from exc
        return InviteRecord(code_hash, role, display_name, langs, specs, created_at, None)

    async def invite(self, code_hash: bytes) -> InviteRecord | None:
        """The invite with this code hash (used or not), or None."""
        async with self._tx.read() as conn:
            row = (
                await conn.execute(select(_INVITES).where(_INVITES.c.code_hash == code_hash))
            ).one_or_none()
        if row is None:
            return None
        return InviteRecord(
            code_hash=bytes(row.code_hash),
            role=as_role(row.role),
            display_name=self._tx.cipher.open_optional(row.name_enc, _invite_name_ctx(code_hash)),
            languages=split_list(row.languages),
            specialties=split_list(row.specialties),
            created_at=row.created_at,
            used_by=row.used_by,
        )

    async def languages_offered(self) -> frozenset[str]:
        """The languages some counselor speaks, or will once an unused counselor
        invite is redeemed (a case in any other language could wait forever)."""
        async with self._tx.read() as conn:
            rows = (
                await conn.execute(
                    select(_ACCOUNTS.c.languages)
                    .where(_ACCOUNTS.c.role == "counselor")
                    .union_all(
                        select(_INVITES.c.languages).where(
                            _INVITES.c.role == "counselor", _INVITES.c.used_by.is_(None)
                        )
                    )
                )
            ).all()
        return frozenset(lang for row in rows for lang in split_list(row.languages))

    # -- session tokens -------------------------------------------------------

    async def add_token(self, token_hash: bytes, account_id: str, expires_at_ms: int) -> None:
        """Record a session token (by hash) for ``account_id``, valid before ``expires_at_ms``."""
        async with self._tx.write() as conn:
            await conn.execute(
                insert(_TOKENS).values(
                    token_hash=token_hash, account_id=account_id, expires_at=expires_at_ms
                )
            )

    async def token_valid(self, token_hash: bytes, account_id: str, now_ms: int) -> bool:
        """True if the token exists, belongs to ``account_id`` and ``now_ms`` is before its
        expiry. A token presented for another account is simply invalid."""
        return await self.token_expiry(token_hash, account_id, now_ms) is not None

    async def token_expiry(self, token_hash: bytes, account_id: str, now_ms: int) -> int | None:
        """When the token expires (ms), if it exists, belongs to ``account_id`` and has
        not expired at ``now_ms``; else None."""
        async with self._tx.read() as conn:
            expires = await conn.scalar(
                select(_TOKENS.c.expires_at).where(
                    _TOKENS.c.token_hash == token_hash,
                    _TOKENS.c.account_id == account_id,
                    _TOKENS.c.expires_at > now_ms,
                )
            )
        return None if expires is None else int(expires)

    async def revoke_account_tokens(self, account_id: str) -> int:
        """Forget every token of the account (logout everywhere); returns how many."""
        async with self._tx.write() as conn:
            res = await conn.execute(delete(_TOKENS).where(_TOKENS.c.account_id == account_id))
        return int(res.rowcount)

    async def revoke_token(self, token_hash: bytes) -> None:
        """Forget a token (logout). Revoking an unknown token is not an error."""
        async with self._tx.write() as conn:
            await conn.execute(delete(_TOKENS).where(_TOKENS.c.token_hash == token_hash))

    async def purge_expired_tokens(self, now_ms: int) -> int:
        """Delete tokens that expired at or before ``now_ms``; returns how many."""
        async with self._tx.write() as conn:
            res = await conn.execute(delete(_TOKENS).where(_TOKENS.c.expires_at <= now_ms))
        return int(res.rowcount)
