"""Signed acceptances of the terms of service under an escrow policy.

One row per (account, terms version, policy fingerprint): a new policy or a new terms
version needs a new row before that account may open a case. Rows are kept (and
exportable with ``chat-server consents export``) as the record of what each account
agreed to; the signature lets anyone check that the account, not the server, agreed.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects import postgresql, sqlite

from .audit import append_in
from .models import Consent, table
from .transactions import Transactions

__all__ = ["ConsentRecord", "ConsentRepository"]

_CONSENTS = table(Consent)


@dataclasses.dataclass(frozen=True, slots=True)
class ConsentRecord:
    account_id: str
    terms_version: int
    policy_fingerprint: str
    sig: bytes
    accepted_at: int


class ConsentRepository:
    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def record(self, consent: ConsentRecord) -> bool:
        """Store an acceptance (the caller verified its signature). Returns False if the
        account had already accepted these terms and policy (the first one is kept)."""
        ins = (
            postgresql.insert(_CONSENTS) if self._tx.is_postgresql else sqlite.insert(_CONSENTS)
        ).values(dataclasses.asdict(consent))
        async with self._tx.write() as conn:
            result = await conn.execute(ins.on_conflict_do_nothing())
            if result.rowcount != 1:
                return False
            await append_in(
                conn,
                "consent",
                consent.account_id,
                {
                    "terms_version": consent.terms_version,
                    "policy": consent.policy_fingerprint,
                },
                consent.accepted_at,
            )
        return True

    async def has(self, account_id: str, terms_version: int, policy_fingerprint: str) -> bool:
        return await self.get(account_id, terms_version, policy_fingerprint) is not None

    async def get(
        self, account_id: str, terms_version: int, policy_fingerprint: str
    ) -> ConsentRecord | None:
        """The account's signed acceptance of these terms and policy, if any."""
        async with self._tx.read() as conn:
            r = (
                await conn.execute(
                    select(_CONSENTS).where(
                        _CONSENTS.c.account_id == account_id,
                        _CONSENTS.c.terms_version == terms_version,
                        _CONSENTS.c.policy_fingerprint == policy_fingerprint,
                    )
                )
            ).first()
        if r is None:
            return None
        return ConsentRecord(
            r.account_id,
            int(r.terms_version),
            r.policy_fingerprint,
            bytes(r.sig),
            int(r.accepted_at),
        )

    async def of_account(self, account_id: str) -> list[ConsentRecord]:
        """One account's acceptances, oldest first."""
        return await self._select(_CONSENTS.c.account_id == account_id)

    async def all(self) -> list[ConsentRecord]:
        return await self._select(None)

    async def _select(self, where: ColumnElement[bool] | None) -> list[ConsentRecord]:
        query = select(_CONSENTS).order_by(_CONSENTS.c.accepted_at, _CONSENTS.c.account_id)
        if where is not None:
            query = query.where(where)
        async with self._tx.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            ConsentRecord(
                r.account_id,
                int(r.terms_version),
                r.policy_fingerprint,
                bytes(r.sig),
                int(r.accepted_at),
            )
            for r in rows
        ]
