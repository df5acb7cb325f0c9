"""Escrow use cases: the installed policy, consent to the terms, and capsule deposits.

Without an installed policy the hub runs without escrow: ``policy.get`` says so, no
consent is needed, capsules are neither required nor stored, and epoch keys must be
bound to "none". Once ``chat-server admin escrow-policy install`` has run, every client
must accept the current terms version under the current policy before ``case.open``
(else consent_required), and every epoch key must be bound, in its creator's signed
commitment, to the installed policy, come with its creator's capsule (``case.key``) and
be made after the case's client consented to that policy (else consent_required); the
other participant adds its own capsule with ``case.capsule``, accepted only for a key
bound to the installed policy and made after that consent. So no key made before a
policy, or under another one, is ever escrowed under it: a policy change starts a new
epoch instead. The hub checks a capsule's shape against the policy but cannot open it:
that takes k officers' offline keys.
"""

from __future__ import annotations

import msgspec

from protocol import frames as f
from protocol.clock import now_ms
from protocol.crypto import NO_ESCROW
from protocol.errors import ConsentRequired, CryptoError, Forbidden, InvalidFrame, NotFound
from protocol.escrow import EscrowError, check_capsule_shape, verify_consent
from storage.consents import ConsentRecord
from storage.escrow import CapsuleRecord

from ..context import Caller
from ..disputes import InstalledPolicy, installed_policy
from ..hub import Hub
from ..logs import log_event

__all__ = [
    "capsule_record",
    "case_capsule",
    "consent",
    "deposit_capsule_for_key",
    "policy_get",
    "require_consent",
]

_capsule_encoder = msgspec.json.Encoder()


async def policy_get(hub: Hub, caller: Caller, frame: f.PolicyGet) -> f.PolicyResult:
    installed = await installed_policy(hub.db)
    if installed is None:
        return f.PolicyResult(id=frame.id, policy=None, terms_version=0, consented=True)
    consented = await hub.db.consents.has(
        caller.account_id, installed.record.terms_version, installed.fingerprint
    )
    return f.PolicyResult(
        id=frame.id,
        policy=installed.signed,
        terms_version=installed.record.terms_version,
        consented=consented,
    )


async def consent(hub: Hub, caller: Caller, frame: f.ConsentAccept) -> f.Ok:
    installed = await installed_policy(hub.db)
    if installed is None:
        raise NotFound("no escrow policy is installed; there is nothing to accept")
    if (
        frame.terms_version != installed.record.terms_version
        or frame.policy_fingerprint != installed.fingerprint
    ):
        raise InvalidFrame("the terms or the escrow policy changed; fetch them again")
    try:
        verify_consent(
            caller.sign_pk,
            caller.account_id,
            frame.terms_version,
            frame.policy_fingerprint,
            frame.sig,
        )
    except CryptoError:
        raise InvalidFrame("consent signature does not verify") from None
    stored = await hub.db.consents.record(
        ConsentRecord(
            account_id=caller.account_id,
            terms_version=frame.terms_version,
            policy_fingerprint=frame.policy_fingerprint,
            sig=frame.sig,
            accepted_at=now_ms(),
        )
    )
    if stored:
        log_event("escrow.consent", account=caller.account_id, terms=frame.terms_version)
    return f.Ok(id=frame.id)


async def require_consent(hub: Hub, caller: Caller) -> None:
    """ConsentRequired unless the account accepted the current terms and policy."""
    installed = await installed_policy(hub.db)
    if installed is None:
        return
    if not await hub.db.consents.has(
        caller.account_id, installed.record.terms_version, installed.fingerprint
    ):
        raise ConsentRequired("accept the current terms of service (consent) first")


def capsule_record(
    installed: InstalledPolicy, capsule: f.Capsule, case_id: str, epoch: int, depositor: str
) -> CapsuleRecord:
    """A checked capsule ready to store; InvalidFrame if it is not for the installed
    policy or not shaped like one."""
    try:
        check_capsule_shape(capsule, installed.policy)
    except EscrowError as exc:
        raise InvalidFrame(f"escrow capsule refused: {exc}") from None
    return CapsuleRecord(
        case_id=case_id,
        epoch=epoch,
        depositor_id=depositor,
        policy_fingerprint=capsule.policy_fingerprint,
        capsule=_capsule_encoder.encode(capsule),
        created_at=now_ms(),
    )


async def deposit_capsule_for_key(
    hub: Hub,
    client_id: str,
    depositor_id: str,
    case_id: str,
    epoch: int,
    binding: str,
    capsules: list[f.Capsule] | None,
) -> CapsuleRecord | None:
    """For ``case.key``: the key's escrow binding must be the installed policy (or
    "none" without one), the case's client must have consented to that policy, and the
    creator's capsule comes with it; the capsule to store once the key is stored."""
    installed = await installed_policy(hub.db)
    if installed is None:
        if binding != NO_ESCROW:
            raise InvalidFrame('this hub has no escrow policy: bind the key to "none"')
        return None
    if binding != installed.fingerprint:
        raise InvalidFrame(
            "the key must be bound to the installed escrow policy; fetch the policy again"
        )
    if not await hub.db.consents.has(
        client_id, installed.record.terms_version, installed.fingerprint
    ):
        raise ConsentRequired(
            "the case's client has not accepted the current escrow policy; no key can be "
            "made under it yet"
        )
    if not capsules:
        raise InvalidFrame("this hub escrows case keys: case.key needs an escrow capsule")
    return capsule_record(installed, capsules[0], case_id, epoch, depositor_id)


async def case_capsule(hub: Hub, caller: Caller, frame: f.CaseCapsule) -> f.Ok:
    case = await hub.casebook.fresh(frame.case_id, caller.account_id)
    installed = await installed_policy(hub.db)
    if installed is None:
        raise NotFound("no escrow policy is installed")
    key = await hub.db.cases.epoch_key(case.id, frame.epoch)
    if key is None:
        raise InvalidFrame("the epoch has no key")
    if case.state == "waiting":
        raise Forbidden("case is waiting")
    if key.escrow != installed.fingerprint:
        raise InvalidFrame(
            "the epoch's key is not bound to the installed escrow policy: it is not escrowed"
        )
    consent = await hub.db.consents.get(
        case.client_id, installed.record.terms_version, installed.fingerprint
    )
    if consent is None or consent.accepted_at > key.created_at:
        raise InvalidFrame(
            "the epoch's key was made before the client consented to the escrow policy"
        )
    record = capsule_record(installed, frame.capsule, case.id, frame.epoch, caller.account_id)
    await hub.db.escrow.put_capsule(record)
    log_event("escrow.capsule", case=case.id, epoch=frame.epoch, account=caller.account_id)
    return f.Ok(id=frame.id)
