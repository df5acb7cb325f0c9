"""The dispute service: one implementation behind both doors (docs/DISPUTES.md).

The hub's ``dispute.request`` use case (``handlers/disputes.py``) and the officers'
``chat-server disputes`` commands (``disputes_cli.py``, another process next to the
database) only parse, call this and print. Here:

* :func:`installed_policy`: the escrow policy in force, read fresh each time (the CLI
  installs policies from another process while the hub runs);
* :meth:`DisputeService.file`: a client's signed request, checked and stored;
* :meth:`DisputeService.open_legal`: a legal order without a client request;
* :meth:`DisputeService.approve`: an officer's offline-signed approval, verified against
  the policy and recorded (the state moves to ``approved`` at the threshold);
* :meth:`DisputeService.export`: the bundle, built only from k distinct valid approvals,
  its chain head signed with the hub's :class:`~protocol.crypto.ServerKey`;
* :class:`DisputeWatcher`: legal orders, approvals and exports are recorded by that
  other process, so the hub polls the disputes table (every :data:`WATCH_INTERVAL_S`,
  once started: by a request, a list, or a client session on a hub with escrow, until
  the hub stops) and tells the case client's live sessions with ``dispute.updated``,
  for its own requests and for legal orders on its cases alike.

Every request document is a :class:`protocol.escrow.DisputeDocument` made by
:func:`_document`. No code here reads an officer's or the organisation's private key, and
nothing here can open a capsule or a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from typing import Literal

import msgspec
import nacl.encoding
import nacl.hash

from protocol import frames as f
from protocol.bundle_format import (
    Bundle,
    BundleCapsule,
    BundleCase,
    BundleConsent,
    BundleEpoch,
    BundleParticipant,
    ChainHead,
    encode_bundle,
)
from protocol.chain import GENESIS, sign_head
from protocol.clock import now_ms
from protocol.crypto import ServerKey
from protocol.errors import ConsentRequired, InvalidFrame, NotFound, ProtocolError
from protocol.escrow import (
    Approval,
    AuditHead,
    ClientEvidence,
    DisputeDocument,
    EscrowError,
    LegalOrder,
    RequestView,
    policy_fingerprint,
    verify_approval,
    verify_dispute,
    verify_legal_order,
)
from storage.disputes import DisputeRecord
from storage.engine import Database
from storage.escrow import PolicyRecord

from .logs import log_event
from .registry import SessionRegistry

__all__ = [
    "MAX_SKEW_MS",
    "WATCH_INTERVAL_S",
    "Approved",
    "DisputeService",
    "DisputeWatcher",
    "Exported",
    "InstalledPolicy",
    "NotEnoughApprovals",
    "dispute_info",
    "installed_policy",
]

#: How often the hub looks for approvals and exports recorded by the officers' CLI.
WATCH_INTERVAL_S = 0.5
#: A client's request timestamp may differ this much from the hub's clock.
MAX_SKEW_MS = 24 * 3600 * 1000
#: Messages read per query while building a bundle.
_PAGE = 500

_encoder = msgspec.json.Encoder()
_policy_decoder = msgspec.json.Decoder(f.SignedEscrowPolicy)
_document_decoder = msgspec.json.Decoder(DisputeDocument)
_approval_decoder = msgspec.json.Decoder(Approval)
_capsule_decoder = msgspec.json.Decoder(f.Capsule)


@dataclasses.dataclass(frozen=True)
class InstalledPolicy:
    """The escrow policy in force: its stored record and the org-signed policy."""

    record: PolicyRecord
    signed: f.SignedEscrowPolicy

    @property
    def fingerprint(self) -> str:
        return self.record.fingerprint

    @property
    def policy(self) -> f.EscrowPolicy:
        return self.signed.policy


async def installed_policy(db: Database) -> InstalledPolicy | None:
    """The newest installed policy, or None when the hub runs without escrow."""
    record = await db.escrow.current()
    if record is None:
        return None
    return InstalledPolicy(record, _policy_decoder.decode(record.signed_policy))


def dispute_info(record: DisputeRecord) -> f.DisputeInfo:
    """A request as its case's client sees it (a legal order with its reference)."""
    legal = record.kind == "legal"
    return f.DisputeInfo(
        request_id=record.id,
        case_id=record.case_id,
        state=record.state,
        created_at=record.created_at,
        kind="legal" if legal else "client",
        legal_order=_document_decoder.decode(record.document).legal_order if legal else None,
    )


class NotEnoughApprovals(ProtocolError):
    """Fewer than the policy's threshold of distinct valid approvals: no export."""


@dataclasses.dataclass(frozen=True)
class Approved:
    """An approval was recorded: the request as it is now, and whose approval it was."""

    record: DisputeRecord
    officer_name: str
    threshold: int


@dataclasses.dataclass(frozen=True)
class Exported:
    """A written bundle: its bytes, their BLAKE2b (hex, also in the audit log), counts."""

    data: bytes
    digest: str
    messages: int
    epochs: int


def _document(
    kind: Literal["client", "legal"],
    case_id: str,
    policy_fp: str,
    created_at: int,
    *,
    timestamp: int,
    scope: Literal["all"] = "all",
    reason_ct: list[bytes] | None = None,
    requester_id: str | None = None,
    requester_sign_pk: bytes | None = None,
    sig: bytes | None = None,
    legal_order: str | None = None,
    evidence: ClientEvidence | None = None,
    order: LegalOrder | None = None,
) -> DisputeDocument:
    """The one place a dispute request document is made (a fresh random request id)."""
    return DisputeDocument(
        request_id="dsp_" + secrets.token_hex(10),
        kind=kind,
        case_id=case_id,
        scope=scope,
        timestamp=timestamp,
        policy_fingerprint=policy_fp,
        reason_ct=reason_ct or [],
        requester_id=requester_id,
        requester_sign_pk=requester_sign_pk,
        sig=sig,
        legal_order=legal_order,
        created_at=created_at,
        evidence=evidence,
        order=order,
    )


class DisputeService:
    """Dispute requests from filing to export, over one database."""

    __slots__ = ("_db",)

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- requests ----------------------------------------------------------------------

    async def file(
        self, client_id: str, client_sign_pk: bytes, frame: f.DisputeRequest
    ) -> DisputeRecord:
        """Store a client's signed request. The caller has checked that ``client_id`` is
        the case's client; InvalidFrame/NotFound say what is wrong with the request."""
        installed = await installed_policy(self._db)
        if installed is None:
            raise NotFound("this hub has no escrow policy; disputes are not available")
        if frame.policy_fingerprint != installed.fingerprint:
            raise InvalidFrame("the request names another escrow policy; fetch it again")
        if len(frame.reason_ct) != len(installed.policy.officers):
            raise InvalidFrame("the reason must be sealed to every officer of the policy")
        now = now_ms()
        if abs(now - frame.timestamp) > MAX_SKEW_MS:
            raise InvalidFrame("request timestamp is too far from the hub's clock")
        doc = _document(
            "client",
            frame.case_id,
            frame.policy_fingerprint,
            now,
            timestamp=frame.timestamp,
            scope=frame.scope,
            reason_ct=list(frame.reason_ct),
            requester_id=client_id,
            requester_sign_pk=client_sign_pk,
            sig=frame.sig,
            evidence=await self._evidence(client_id, frame.case_id, installed),
        )
        try:
            verify_dispute(doc)
        except EscrowError:
            raise InvalidFrame("dispute request signature does not verify") from None
        record = await self._store(doc, installed.fingerprint, now)
        log_event("dispute.request", request=record.id, case=doc.case_id, account=client_id)
        return record

    async def _evidence(
        self, client_id: str, case_id: str, installed: InstalledPolicy
    ) -> ClientEvidence:
        """The client's own signatures that tie its key to the case (ClientEvidence):
        its consent to the policy, and the newest epoch key commitment it made under
        that policy."""
        terms = installed.record.terms_version
        consent = await self._db.consents.get(client_id, terms, installed.fingerprint)
        if consent is None:
            raise ConsentRequired("accept the current terms before filing a dispute request")
        case = await self._db.cases.get(case_id)
        for epoch in range(case.epoch if case is not None else 0, 0, -1):
            key = await self._db.cases.epoch_key(case_id, epoch)
            if (
                key is not None
                and key.creator_id == client_id
                and key.escrow == installed.fingerprint
            ):
                return ClientEvidence(
                    terms_version=terms,
                    consent_sig=consent.sig,
                    epoch=epoch,
                    commitment=key.commitment,
                    commitment_sig=key.commitment_sig,
                )
        return ClientEvidence(terms_version=terms, consent_sig=consent.sig)

    async def open_legal(self, order: LegalOrder) -> DisputeDocument:
        """Record a legal order signed offline by a legal signer the installed policy
        names (no client signature; the same k approvals). EscrowError if the order
        does not verify; NotFound without such a case or policy."""
        if await self._db.cases.get(order.case_id) is None:
            raise NotFound("no such case")
        installed = await installed_policy(self._db)
        if installed is None:
            raise NotFound("no escrow policy is installed")
        verify_legal_order(order, installed.policy)
        now = now_ms()
        doc = _document(
            "legal",
            order.case_id,
            installed.fingerprint,
            now,
            timestamp=order.issued_at,
            legal_order=order.order_ref,
            order=order,
        )
        verify_dispute(doc, policy=installed.policy)
        await self._store(doc, installed.fingerprint, now)
        log_event("dispute.legal", request=doc.request_id, case=doc.case_id)
        return doc

    async def _store(self, doc: DisputeDocument, policy_fp: str, now: int) -> DisputeRecord:
        return await self._db.disputes.create(
            dispute_id=doc.request_id,
            case_id=doc.case_id,
            kind=doc.kind,
            requester_id=doc.requester_id,
            document=_encoder.encode(doc),
            policy_fingerprint=policy_fp,
            legal_order=doc.legal_order,
            now_ms=now,
        )

    async def of_client(self, account_id: str) -> list[DisputeRecord]:
        """Every request on the account's cases: its own, and legal orders."""
        return await self._db.disputes.find(client_id=account_id)

    async def all(self) -> list[DisputeRecord]:
        return await self._db.disputes.find()

    async def get(self, request_id: str) -> DisputeRecord:
        """NotFound if there is no such request."""
        return await self._db.disputes.get(request_id)

    async def view(self, record: DisputeRecord) -> RequestView:
        """The request, its policy, state and approvals: what officers review and sign."""
        doc = _document_decoder.decode(record.document)
        policy = await self._db.escrow.by_fingerprint(doc.policy_fingerprint)
        if policy is None:
            raise NotFound("the request's escrow policy is not installed here")
        box_pk, box_sig = await self._requester_box_key(doc)
        return RequestView(
            request=doc,
            policy=_policy_decoder.decode(policy.signed_policy),
            state=record.state,
            approvals=[_approval_decoder.decode(a) for a in record.approvals],
            audit_head=await self.audit_head(),
            requester_box_pk=box_pk,
            requester_box_sig=box_sig,
        )

    async def _requester_box_key(self, doc: DisputeDocument) -> tuple[bytes | None, bytes | None]:
        """A client request's requester box key and box_sig, when the account still has
        the key that signed the request (officers check the signature themselves)."""
        if doc.requester_id is None or doc.requester_sign_pk is None:
            return None, None
        found = await self._db.accounts.by_ids([doc.requester_id])
        if not found or found[0].sign_pk != doc.requester_sign_pk or found[0].box_sig is None:
            return None, None
        return found[0].box_pk, found[0].box_sig

    async def audit_head(self) -> AuditHead:
        seq, digest = await self._db.audit.head()
        return AuditHead(seq=seq, hash=digest)

    # -- approvals and export ----------------------------------------------------------

    async def approve(self, request_id: str, approval: Approval) -> Approved:
        """Verify ``approval`` against the request and its policy and record it.

        EscrowError if it does not verify; Conflict if this officer already approved.
        """
        record = await self._db.disputes.get(request_id)
        view = await self.view(record)
        policy = view.policy.policy
        verify_approval(approval, view.request, policy)
        # The head the officer signed must be in this log as they saw it.
        problem = await self._db.audit.check_anchor(
            approval.audit_head.seq, approval.audit_head.hash
        )
        if problem is not None:
            raise EscrowError(f"the approval's audit head does not match this log: {problem}")
        updated = await self._db.disputes.add_approval(
            record.id, approval.officer_index, _encoder.encode(approval), policy.threshold, now_ms()
        )
        return Approved(updated, policy.officers[approval.officer_index].name, policy.threshold)

    async def export(self, request_id: str, server_key: ServerKey) -> Exported:
        """The bundle of an approved request (NotEnoughApprovals below the threshold of
        distinct valid approvals); records the export and its digest in the audit log."""
        record = await self._db.disputes.get(request_id)
        view = await self.view(record)
        policy = view.policy.policy
        valid: dict[int, Approval] = {}
        for approval in view.approvals:
            try:
                verify_approval(approval, view.request, policy)
            except EscrowError:
                continue
            valid[approval.officer_index] = approval
        if len(valid) < policy.threshold:
            raise NotEnoughApprovals(
                f"{len(valid)} valid approvals; the policy requires {policy.threshold}"
            )
        bundle = await self.build_bundle(view, list(valid.values()), server_key)
        data = encode_bundle(bundle)
        digest = nacl.hash.blake2b(data, digest_size=32, encoder=nacl.encoding.HexEncoder).decode()
        await self._db.disputes.mark_exported(record.id, digest, len(bundle.messages), now_ms())
        return Exported(data, digest, len(bundle.messages), len(bundle.epochs))

    async def build_bundle(
        self, view: RequestView, approvals: list[Approval], server_key: ServerKey
    ) -> Bundle:
        """Everything an offline ``chat-unseal`` needs to check the case's history: the
        records in stored (seq) order, which chat-unseal checks against the order the
        participants signed (protocol/transcript.py), and their signed receipts."""
        db = self._db
        case = await db.cases.get(view.request.case_id)
        if case is None:
            raise NotFound("the request's case is gone")
        ids = case.participants
        accounts = {a.id: a for a in await db.accounts.by_ids(ids)}
        messages: list[f.MessageRecord] = []
        after = 0
        while True:
            page = await db.messages.range(case.id, after, _PAGE)
            messages.extend(page)
            if len(page) < _PAGE:
                break
            after = page[-1].seq
        fingerprint = policy_fingerprint(view.policy.policy)
        capsules: dict[int, list[BundleCapsule]] = {}
        for c in await db.escrow.capsules_for(case.id):
            if c.policy_fingerprint == fingerprint:
                capsules.setdefault(c.epoch, []).append(
                    BundleCapsule(
                        depositor_id=c.depositor_id, capsule=_capsule_decoder.decode(c.capsule)
                    )
                )
        epochs = []
        for epoch in range(1, case.epoch + 1):
            key = await db.cases.epoch_key(case.id, epoch)
            if key is not None:
                epochs.append(
                    BundleEpoch(
                        epoch=epoch,
                        creator_id=key.creator_id,
                        commitment=key.commitment,
                        commitment_sig=key.commitment_sig,
                        escrow=key.escrow,
                        created_at=key.created_at,
                        capsules=capsules.get(epoch, []),
                    )
                )
        last_seq = messages[-1].seq if messages else 0
        head = messages[-1].chain_hash if messages else GENESIS
        return Bundle(
            exported_at=now_ms(),
            case=BundleCase(
                case_id=case.id,
                client_id=case.client_id,
                counselor_id=case.counselor_id,
                state=case.state,
                language=case.language,
                created_at=case.created_at,
            ),
            participants=[
                BundleParticipant(
                    account_id=a.id,
                    role=a.role,
                    handle=a.handle,
                    sign_pk=a.sign_pk,
                    box_pk=a.box_pk,
                    box_sig=a.box_sig,
                )
                for a in (accounts[i] for i in ids if i in accounts)
            ],
            policy=view.policy,
            epochs=epochs,
            messages=messages,
            receipts=await db.receipts.signed_for_case(case.id),
            chain_head=ChainHead(
                seq=last_seq, hash=head, sig=sign_head(server_key, case.id, last_seq, head)
            ),
            server_sign_pk=server_key.sign_pk,
            request=view.request,
            approvals=sorted(approvals, key=lambda a: a.officer_index),
            audit_head=await self.audit_head(),
            client_consent=await self._client_consent(case.client_id, fingerprint),
        )

    async def _client_consent(self, client_id: str, policy_fp: str) -> BundleConsent | None:
        """The client's earliest signed consent to ``policy_fp`` (any terms version)."""
        found = [
            c
            for c in await self._db.consents.of_account(client_id)
            if c.policy_fingerprint == policy_fp
        ]
        if not found:
            return None
        first = found[0]
        return BundleConsent(
            terms_version=first.terms_version, sig=first.sig, accepted_at=first.accepted_at
        )


class DisputeWatcher:
    """Tells a case client's live sessions when a request on their case appears or
    changes state (see the module docstring). Started on demand; runs until stopped."""

    __slots__ = ("_db", "_registry", "_stopped", "_task")

    def __init__(self, db: Database, registry: SessionRegistry) -> None:
        self._db = db
        self._registry = registry
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def ensure_running(self) -> None:
        if self._stopped:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="dispute-watcher")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        try:
            await self._publish_changes()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Clients still see every state with `dispute.list`; only the live nudge is lost.
            log_event("dispute.watcher_failed", logging.ERROR, exc=True)

    async def _publish_changes(self) -> None:
        seen: dict[str, str] = {}
        since = now_ms() - 60_000
        for record in await self._db.disputes.find():
            seen[record.id] = record.state
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            changed = await self._db.disputes.find(changed_after=since - 1)
            for record in changed:
                since = max(since, record.updated_at)
                if seen.get(record.id) == record.state:
                    continue
                seen[record.id] = record.state
                # The case's client hears of its own requests and of legal orders alike.
                case = await self._db.cases.get(record.case_id)
                if case is not None:
                    self._registry.publish(
                        [case.client_id], f.DisputeUpdated(dispute=dispute_info(record))
                    )
            # No early end: a legal order may be recorded at any time, and its client is
            # told at once (the terms promise it).
