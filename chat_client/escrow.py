"""Escrow, consent and disputes (docs/DISPUTES.md), as the client sees them.

Web counterpart: web_client/src/escrow.js.

Contract:

* :meth:`Escrow.policy` is the hub's escrow policy, verified against the pinned
  organisation key (``--org-fingerprint`` / $CHAT_ORG_FINGERPRINT) at every use, with
  its terms version and whether this account accepted them; None when the hub runs
  without escrow. It raises ``escrow.PolicyError`` when the policy does not verify or
  nothing is pinned: the client then never escrows, so it cannot create epoch keys on a
  hub that requires capsules.
* Capsules use the policy fetched once per session (connection generation), not per
  capsule. A policy installed while a session is open is seen at the next session, at
  the next explicit read (:meth:`policy` with ``fresh=True``, which :meth:`terms`,
  :meth:`consent` and :meth:`file_dispute` use: what a person reads, accepts or signs
  is always the hub's current policy), or at once when the hub refuses a capsule made
  under the old one (:meth:`forget_policy`; the key manager and :meth:`deposit` then
  retry once).
* Capsules: :meth:`binding` is what a new epoch key is bound to (the verified policy's
  fingerprint, or "none"); :meth:`capsule` seals a new epoch key of ours for the key
  manager's ``case.key``; :meth:`on_foreign_key` deposits our own capsule
  (``case.capsule``) of a key the other participant made, once the key manager has
  verified it, and only under the policy that key is bound to: a key bound to "none"
  or to a policy no longer in force is never escrowed.
* :meth:`terms` returns what to show (:class:`Terms`) and :meth:`consent` signs
  exactly that policy and terms version, with no second fetch (if the hub changed
  them meanwhile it refuses, and the person must read the new ones).
  Without any pin, :meth:`terms` shows the policy's own organisation key as
  unpinned (``Terms.tofu``) and accepting pins it in the home (trust on first use).
* Every verified policy goes through :class:`~chat_client.escrowpins.EscrowPins`:
  a lower version than one already seen from the same organisation is refused.
* :meth:`file_dispute` signs a written dispute request whose reason is sealed to each
  officer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from protocol import crypto
from protocol import errors as pe
from protocol import frames as f
from protocol.clock import now_ms
from protocol.crypto import NO_ESCROW
from protocol.escrow import (
    PolicyError,
    make_capsule,
    policy_fingerprint,
    seal_reasons,
    sign_consent,
    sign_dispute,
    verify_policy,
)
from protocol.terms import render_terms

from .connection import LinkClosed, expect
from .errors import RequestInterrupted
from .escrowpins import EscrowPins
from .supervisor import Supervisor

__all__ = ["Escrow", "PolicyView", "Terms"]

log = logging.getLogger("chat_client")

#: (signed policy, terms version, whether this account accepted both)
PolicyView = tuple[f.SignedEscrowPolicy, int, bool]


class Terms(NamedTuple):
    """The terms to show before consenting, and exactly what accepting them signs."""

    version: int
    text: str
    policy_fingerprint: str
    signed: f.SignedEscrowPolicy
    #: The organisation key that signed the policy.
    org_fingerprint: str
    #: True when no organisation key was pinned: accepting pins ``org_fingerprint``.
    tofu: bool


class Escrow:
    """See the module docstring."""

    def __init__(
        self,
        session: Supervisor,
        identity: crypto.Identity,
        account_id: str,
        org_fingerprint: str | None,
        pins: EscrowPins | None = None,
    ) -> None:
        self._session = session
        self._identity = identity
        self._account_id = account_id
        self._org_fingerprint = org_fingerprint
        self._pins = pins if pins is not None else EscrowPins(None)
        self._cached: tuple[int, f.PolicyResult] | None = None  # (generation, answer)
        self._bound: tuple[f.PolicyResult, str] | None = None  # (answer, its binding)
        self._lock = asyncio.Lock()

    # -- the policy --------------------------------------------------------------------

    async def policy(self, *, fresh: bool = False) -> PolicyView | None:
        """The verified policy of this session, or the hub's current one if ``fresh``
        (see the module docstring)."""
        if fresh:
            self.forget_policy()
        result = await self._policy_result()
        if result.policy is None:
            return None
        pin = self._pins.resolve(self._org_fingerprint)
        if pin is None:
            raise PolicyError(
                "the hub escrows case keys but no organisation fingerprint is pinned "
                "(--org-fingerprint / CHAT_ORG_FINGERPRINT, or accept the terms once "
                "with `chat-client consent` to pin it)"
            )
        self._verify(result.policy, pin)
        return result.policy, result.terms_version, result.consented

    def _verify(self, signed: f.SignedEscrowPolicy, pin: str | None) -> str:
        """verify_policy (in force now), then the rollback check; the org fingerprint."""
        verify_policy(signed, pin, now_ms())
        org = crypto.fingerprint(signed.policy.org_sign_pk)
        self._pins.check_version(org, signed.policy.version)
        return org

    def forget_policy(self) -> None:
        """Fetch the policy again at next use (the hub refused a capsule, or it changed)."""
        self._cached = None

    async def _policy_result(self) -> f.PolicyResult:
        async with self._lock:
            # The generation before the request: an answer that arrives on a newer link
            # is kept for the older one, so the newer session fetches its own.
            generation = self._session.generation
            if self._cached is not None and self._cached[0] == generation:
                return self._cached[1]
            result = expect(await self._session.request(f.PolicyGet), f.PolicyResult)
            self._cached = (generation, result)
            return result

    # -- consent and disputes ------------------------------------------------------------

    async def terms(self) -> Terms | None:
        """The hub's current terms and policy, to show before consenting (None: the hub
        has no escrow). Verified against the pin; with no pin at all, against the
        policy's own organisation key, marked ``tofu`` (see the module docstring)."""
        self.forget_policy()
        result = await self._policy_result()
        if result.policy is None:
            return None
        signed = result.policy
        pin = self._pins.resolve(self._org_fingerprint)
        org = self._verify(signed, pin)
        version = result.terms_version
        return Terms(
            version=version,
            text=render_terms(version, signed.policy),
            policy_fingerprint=policy_fingerprint(signed.policy),
            signed=signed,
            org_fingerprint=org,
            tofu=pin is None,
        )

    async def consent(self, shown: Terms | None = None) -> bool:
        """Sign and send acceptance of ``shown`` (the terms the person read; default: the
        hub's current ones, which then need a pinned organisation). Accepting terms
        shown unpinned pins their organisation key in the home. False if the hub has no
        escrow (nothing to accept)."""
        if shown is None:
            got = await self.policy(fresh=True)
            if got is None:
                return False
            signed, version, _ = got
        else:
            signed, version = shown.signed, shown.version
            if shown.tofu:
                self._pins.pin_org(shown.org_fingerprint)
        fp = policy_fingerprint(signed.policy)
        sig = sign_consent(self._identity, self._account_id, version, fp)
        try:
            expect(
                await self._session.request(
                    f.ConsentAccept, terms_version=version, policy_fingerprint=fp, sig=sig
                ),
                f.Ok,
            )
        finally:
            self.forget_policy()  # "consented" changed
        return True

    async def file_dispute(self, case_id: str, reason: str) -> f.DisputeInfo:
        """Ask the escrow officers to review the whole case; the reason is sealed to each
        officer and the request signed with our key."""
        got = await self.policy(fresh=True)
        if got is None:
            raise pe.NotFound("this hub has no escrow policy; disputes are not available")
        policy = got[0].policy
        fp = policy_fingerprint(policy)
        reason_ct = seal_reasons(policy, reason)
        ts = now_ms()
        sig = sign_dispute(self._identity, case_id, "all", ts, fp, reason_ct)
        created = expect(
            await self._session.request(
                f.DisputeRequest,
                retry=False,
                case_id=case_id,
                timestamp=ts,
                policy_fingerprint=fp,
                reason_ct=reason_ct,
                sig=sig,
            ),
            f.DisputeCreated,
        )
        return created.dispute

    async def disputes(self) -> list[f.DisputeInfo]:
        """Our dispute requests and their states."""
        result = expect(await self._session.request(f.DisputeList), f.DisputeListResult)
        return list(result.disputes)

    # -- capsules ------------------------------------------------------------------------

    async def binding(self) -> str:
        """The escrow binding of a key made now (PolicyError if the policy does not
        verify). Asked before every send, so it is verified once per fetched answer."""
        result = await self._policy_result()
        if self._bound is not None and self._bound[0] is result:
            return self._bound[1]
        got = await self.policy()
        binding = NO_ESCROW if got is None else policy_fingerprint(got[0].policy)
        self._bound = (result, binding)
        return binding

    async def capsule(self, case: f.CaseInfo, epoch: int, key: bytes) -> f.Capsule | None:
        """Our capsule of ``key`` under this session's policy (None: no escrow)."""
        got = await self.policy()
        if got is None:
            return None
        return make_capsule(got[0].policy, case.case_id, epoch, key)

    def on_foreign_key(self, case: f.CaseInfo, epoch: int, key: bytes, escrow: str) -> None:
        """Each participant vouches for K on its own: deposit our capsule of a key the
        other side made (after open_epoch_key checked it against the commitment), under
        the policy its creator bound it to."""
        if escrow == NO_ESCROW:
            return  # made without escrow: it stays that way
        self._session.spawn(self.deposit(case, epoch, key, escrow))

    async def deposit(self, case: f.CaseInfo, epoch: int, key: bytes, escrow: str) -> None:
        """``case.capsule`` for ``key`` if the policy in force is the one it is bound to;
        a refusal or a mismatch under a cached policy is retried once with the policy
        fetched again."""
        for attempt in (1, 2):
            try:
                capsule = await self.capsule(case, epoch, key)
                if capsule is None:
                    return
                if capsule.policy_fingerprint != escrow:
                    if attempt == 1:
                        self.forget_policy()
                        continue
                    log.info("epoch %d key is bound to another escrow policy: not escrowed", epoch)
                    return
                expect(
                    await self._session.request(
                        f.CaseCapsule, case_id=case.case_id, epoch=epoch, capsule=capsule
                    ),
                    f.Ok,
                )
                return
            except pe.Conflict:
                return  # deposited before (an earlier session)
            except pe.InvalidFrame as exc:
                if attempt == 1:
                    self.forget_policy()
                    continue
                log.warning("escrow capsule not deposited: %s", exc)
            except (pe.ProtocolError, LinkClosed, RequestInterrupted) as exc:
                log.warning("escrow capsule not deposited: %s", exc)
                return
