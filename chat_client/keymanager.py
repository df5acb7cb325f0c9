"""Case keys and directory entries, fetched through the session and verified here.

Web counterpart: web_client/src/keys.js.

:class:`KeyManager` caches, in memory only, verified case keys (casekeys.Keyring) and
directory entries. It creates epoch 1 of a case when the first message needs it (or, on
the client's side, as soon as the case is opened: :meth:`first_epoch_due`; while the
case waits the key is sealed to the client alone, and :meth:`share_keys` adds the seal
of each such key for the counselor once one is assigned and verified), and
resolves the race where both participants create it at once: the server keeps the
first deposit and answers the second with ``conflict``; the loser fetches and verifies
the winner's key. A new key is bound, in its signed commitment, to the escrow policy in
force (``escrow_binding``: a fingerprint, or "none") and goes out with our escrow
capsule of it under that policy (``make_capsule``, escrow.py); if the hub refuses it,
``capsule_refused`` drops the cached policy and a new key is made once more. When the
policy in force is no longer the one the current epoch's key is bound to, sending
starts a new epoch rather than escrowing the old key under the new policy. All network
access goes through the ``request`` callable it is given, so it owns no connection.

Every directory entry passes trust.check_entry (signed box key, pinned keys) before it
is cached, and a client shares or uses a case key with a counselor only after
trust.check_counselor (certificate under the pinned organisation key); those refusals
(errors.SecurityRefusal) always propagate, they are never turned into "unverified".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec

from protocol import crypto
from protocol import errors as pe
from protocol import frames as f

from .casekeys import Keyring, NewEpochKey, make_epoch_key, open_epoch_key, share_seal
from .connection import expect
from .contacts import Contacts
from .errors import CaseNotReady, SecurityRefusal
from .models import WAITING_FOR_KEY
from .trust import check_counselor, check_entry

__all__ = ["KeyManager", "Request"]

log = logging.getLogger("chat_client.keys")

#: ``await request(FrameClass, **fields)`` -> the answer frame (raises typed errors).
Request = Callable[..., Awaitable[f.ServerFrame]]
#: ``await case_info(case_id)`` -> the freshest CaseInfo known (None if not ours).
CaseLookup = Callable[[str], Awaitable[f.CaseInfo | None]]
#: Escrow hooks (docs/DISPUTES.md): the capsule to deposit with a new epoch key (None:
#: the hub has no escrow policy), and a callback for a verified key someone else made.
CapsuleMaker = Callable[[f.CaseInfo, int, bytes], Awaitable[f.Capsule | None]]
#: The escrow binding for a key made now: the verified policy's fingerprint, or "none".
EscrowBinding = Callable[[], Awaitable[str]]
#: (case, epoch, key, the key's signed escrow binding)
ForeignKeyHook = Callable[[f.CaseInfo, int, bytes, str], None]
#: Called when the hub refuses a deposit that carried a capsule (``invalid``): the
#: escrow policy the capsule was made under may have been replaced.
CapsuleRefusedHook = Callable[[], None]
#: Shows a plain warning to the user (the SDK emits a WarningEvent and logs it).
Warn = Callable[[str, str], None]

_DIRECTORY_BATCH = 50  # DirectoryGet accepts at most 50 ids


class KeyManager:
    """See the module docstring. ``cases`` is the client's shared case map; the manager
    raises a case's ``epoch`` there when it learns of a newer key."""

    def __init__(
        self,
        identity: crypto.Identity,
        account_id: str,
        request: Request,
        cases: dict[str, f.CaseInfo],
        case_info: CaseLookup,
        *,
        contacts: Contacts | None = None,
        org_fingerprint: str | None = None,
        warn: Warn | None = None,
    ) -> None:
        self._contacts = contacts if contacts is not None else Contacts(None)
        self._org_fingerprint = org_fingerprint
        self._warn = warn
        self._counselor_ok: set[str] = set()  # cases whose counselor passed (or was warned)
        self._identity = identity
        self._account_id = account_id
        self._request = request
        self._cases = cases
        self._case_info = case_info
        self.keyring = Keyring()
        self._directory: dict[str, f.DirectoryEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: case id -> the epochs the hub offered us a seal of at the last fetch.
        self._offered: dict[str, set[int]] = {}
        #: case ids whose keys were shared with their current counselor (this process).
        self._shared: set[str] = set()
        self.make_capsule: CapsuleMaker | None = None
        self.escrow_binding: EscrowBinding | None = None
        self.on_foreign_key: ForeignKeyHook | None = None
        self.capsule_refused: CapsuleRefusedHook | None = None

    # -- directory ----------------------------------------------------------------------

    async def entries(self, account_ids: list[str]) -> dict[str, f.DirectoryEntry]:
        """Directory entries for ``account_ids`` (fetched once, then cached).

        Our own entry must carry our own keys: a server that substitutes them would
        otherwise get case keys sealed to a key it holds. Any other entry must have a
        valid box_sig and match its pin (KeyNotSigned / KeyChanged otherwise)."""
        missing = [a for a in dict.fromkeys(account_ids) if a not in self._directory]
        if missing:
            for entry in await self._fetch(missing):
                if entry.account_id == self._account_id and (
                    entry.sign_pk != self._identity.sign_pk or entry.box_pk != self._identity.box_pk
                ):
                    raise pe.CryptoError("the directory lists other keys for our own account")
                if entry.account_id != self._account_id:
                    check_entry(entry, self._contacts)
                self._directory[entry.account_id] = entry
        absent = [a for a in account_ids if a not in self._directory]
        if absent:
            raise pe.NotFound(f"directory has no entry for {len(absent)} account(s)")
        return {a: self._directory[a] for a in account_ids}

    async def _fetch(self, account_ids: list[str]) -> list[f.DirectoryEntry]:
        """Unchecked ``directory.get`` in batches (callers check what they use)."""
        found: list[f.DirectoryEntry] = []
        for start in range(0, len(account_ids), _DIRECTORY_BATCH):
            result = expect(
                await self._request(
                    f.DirectoryGet, account_ids=account_ids[start : start + _DIRECTORY_BATCH]
                ),
                f.DirectoryResult,
            )
            found.extend(result.entries)
        return found

    async def lookup_handle(self, account_ids: list[str], handle: str) -> f.DirectoryEntry | None:
        """The entry, among ``account_ids``, whose handle is ``handle``, with its box key
        signature checked but not its pin (to show what changed); None if absent."""
        for entry in await self._fetch(account_ids):
            if entry.handle == handle:
                check_entry(entry, Contacts(None))  # box_sig only: a throwaway pin set
                return entry
        return None

    def forget_entries(self) -> None:
        """Drop the cached entries (after a pin was reset): the next use refetches."""
        self._directory.clear()
        self._counselor_ok.clear()

    async def entry(self, account_id: str) -> f.DirectoryEntry | None:
        """One entry, or None if the directory refuses or lacks it (a SecurityRefusal,
        such as KeyChanged, still raises)."""
        with contextlib.suppress(pe.RemoteError, pe.CryptoError):
            return (await self.entries([account_id]))[account_id]
        return None

    # -- reading keys ---------------------------------------------------------------------

    async def fetch(self, case: f.CaseInfo) -> None:
        """Fetch, verify and cache every epoch key of the case not held yet. A key that
        does not verify is logged and skipped (its messages will not verify)."""
        result = expect(await self._request(f.CaseKeys, case_id=case.case_id), f.CaseKeysResult)
        self._offered[case.case_id] = {k.epoch for k in result.keys}
        for epoch_key in result.keys:
            if self.keyring.get(case.case_id, epoch_key.epoch) is not None:
                continue
            creator = await self.entry(epoch_key.creator_id)
            try:
                key = open_epoch_key(self._identity, case, epoch_key, creator)
            except pe.CryptoError as exc:
                log.warning("rejected key for epoch %d: %s", epoch_key.epoch, exc)
                continue
            self.keyring.put(case.case_id, epoch_key.epoch, key, epoch_key.escrow)
            if epoch_key.creator_id != self._account_id and self.on_foreign_key is not None:
                self.on_foreign_key(case, epoch_key.epoch, key, epoch_key.escrow)
        self._note_epoch(case, self.keyring.latest(case.case_id))

    async def key_for(self, case: f.CaseInfo, epoch: int) -> bytes | None:
        """The verified key of ``epoch``, fetching keys once if it is not cached."""
        key = self.keyring.get(case.case_id, epoch)
        if key is None:
            try:
                await self.fetch(case)
            except pe.RemoteError as exc:
                log.warning("cannot fetch case keys: %s", exc.code.value)
            key = self.keyring.get(case.case_id, epoch)
        return key

    def awaiting_key(self, case_id: str, epoch: int) -> bool:
        """True if the last ``case.keys`` offered us no seal of ``epoch``: a key the
        client made while the case waited and has not shared with us yet (as opposed to
        a key offered but refused by the checks, which never becomes readable)."""
        offered = self._offered.get(case_id)
        return (
            offered is not None
            and epoch not in offered
            and self.keyring.get(case_id, epoch) is None
        )

    # -- writing keys -------------------------------------------------------------------

    def first_epoch_due(self, case: f.CaseInfo) -> bool:
        """True if we should create epoch 1 of ``case`` now: we are its client, it is
        open and nobody has made a key yet. Then the client can write at once, before a
        counselor is there (the key is shared with them on assignment)."""
        return (
            case.state != "closed"
            and case.epoch == 0
            and case.client_id == self._account_id
            and self.keyring.latest(case.case_id) == 0
        )

    async def send_epoch(self, case_id: str) -> tuple[int, bytes]:
        """The epoch and key to send with, creating epoch 1 if the case has none yet.

        Raises CaseNotReady (unknown case; the counselor's side of a case whose client
        has not shared its key yet), Forbidden (closed), or CryptoError if the case's
        current key cannot be verified."""
        lock = self._locks.setdefault(case_id, asyncio.Lock())
        async with lock:
            case = await self._case_info(case_id)
            if case is None:
                raise CaseNotReady(f"unknown case {case_id}")
            if case.state == "closed":
                raise pe.Forbidden("case is closed")
            await self.check_counselor(case)
            epoch = max(case.epoch, self.keyring.latest(case_id))
            if epoch == 0:
                return await self._create(case, 1)
            key = self.keyring.get(case_id, epoch)
            if key is None:
                await self.fetch(case)
                epoch = max(epoch, self.keyring.latest(case_id))
                key = self.keyring.get(case_id, epoch)
            if key is None and self.awaiting_key(case_id, epoch):
                raise CaseNotReady(f"case {case_id}: {WAITING_FOR_KEY}")
            if key is None:
                raise pe.CryptoError(f"no verified key for epoch {epoch} of case {case_id}")
            if await self._policy_changed(case_id, epoch):
                return await self._create(case, epoch + 1)
            return epoch, key

    async def check_counselor(self, case: f.CaseInfo) -> None:
        """As the case's client: its counselor must be certified by the pinned
        organisation key before we share or use a case key with them (UncertifiedCounselor
        otherwise); with no organisation pinned, warn once per case instead."""
        if (
            case.case_id in self._counselor_ok
            or case.counselor_id is None
            or case.client_id != self._account_id
        ):
            return
        entry = (await self.entries([case.counselor_id]))[case.counselor_id]
        warning = check_counselor(entry, self._org_fingerprint)
        if warning is not None:
            log.warning("case %s: %s", case.case_id, warning)
            if self._warn is not None:
                self._warn(case.case_id, warning)
        self._counselor_ok.add(case.case_id)

    def share_due(self, case: f.CaseInfo) -> bool:
        """Should :meth:`share_keys` look at ``case``: we are its client, a counselor
        is assigned, and we have not shared with them yet in this process."""
        return (
            case.client_id == self._account_id
            and case.counselor_id is not None
            and case.case_id not in self._shared
            and not (case.state == "closed" and case.epoch == 0)  # closed keyless: nothing
        )

    async def share_keys(self, case_id: str) -> int:
        """As the case's client: add the counselor's seal to every epoch key we made that
        lacks one (keys made while the case waited), after the counselor passed
        check_counselor (certificate under the pinned organisation key, signed box key,
        pin). Returns how many keys were shared; a SecurityRefusal propagates and nothing
        is shared. Runs under the case's lock, so after a key creation in flight."""
        lock = self._locks.setdefault(case_id, asyncio.Lock())
        async with lock:
            case = await self._case_info(case_id)
            if case is None or not self.share_due(case):
                return 0
            counselor_id = case.counselor_id
            assert counselor_id is not None  # share_due
            try:
                await self.check_counselor(case)
            except SecurityRefusal:
                self._shared.add(case_id)  # said once; nothing is shared with them
                raise
            counselor = (await self.entries([counselor_id]))[counselor_id]
            result = expect(await self._request(f.CaseKeys, case_id=case_id), f.CaseKeysResult)
            shared = 0
            for epoch_key in result.keys:
                if epoch_key.creator_id != self._account_id or counselor_id in epoch_key.sealed_for:
                    continue
                key = self.keyring.get(case_id, epoch_key.epoch)
                if key is None:
                    try:
                        key = open_epoch_key(
                            self._identity, case, epoch_key, await self.entry(self._account_id)
                        )
                    except pe.CryptoError as exc:
                        log.warning("not sharing epoch %d: %s", epoch_key.epoch, exc)
                        continue
                    self.keyring.put(case_id, epoch_key.epoch, key, epoch_key.escrow)
                try:
                    expect(
                        await self._request(
                            f.CaseKeyShare,
                            case_id=case_id,
                            epoch=epoch_key.epoch,
                            seal=share_seal(key, counselor),
                        ),
                        f.Ok,
                    )
                except pe.Conflict:
                    continue  # another device of ours shared it first
                shared += 1
            self._shared.add(case_id)
            return shared

    async def _binding(self) -> str:
        if self.escrow_binding is None:
            return crypto.NO_ESCROW
        return await self.escrow_binding()

    async def _policy_changed(self, case_id: str, epoch: int) -> bool:
        """Is the escrow policy in force not the one ``epoch``'s key is bound to? A
        policy that does not verify, or a hub that does not answer the question, decides
        nothing here (the key stays in use)."""
        if self.escrow_binding is None:
            return False
        try:
            current = await self.escrow_binding()
        except (pe.CryptoError, pe.RemoteError):
            return False
        return self.keyring.escrow(case_id, epoch) != current

    async def _create(self, case: f.CaseInfo, epoch: int) -> tuple[int, bytes]:
        entries = await self.entries([a for a in (case.client_id, case.counselor_id) if a])
        new = make_epoch_key(self._identity, case, epoch, entries, await self._binding())
        try:
            try:
                await self._deposit(case, new)
            except pe.InvalidFrame:
                if self.capsule_refused is None or self.make_capsule is None:
                    raise
                self.capsule_refused()  # made under a policy the hub replaced: once more
                new = make_epoch_key(self._identity, case, epoch, entries, await self._binding())
                await self._deposit(case, new)
        except pe.Conflict:
            # The other participant (or our own retried deposit) won: use the stored key.
            await self.fetch(case)
            key = self.keyring.get(case.case_id, epoch)
            if key is None:
                raise pe.CryptoError(f"epoch {epoch} key of the case does not verify") from None
            return epoch, key
        self.keyring.put(case.case_id, epoch, new.key, new.escrow)
        self._note_epoch(case, epoch)
        return epoch, new.key

    async def _deposit(self, case: f.CaseInfo, new: NewEpochKey) -> None:
        """``case.key`` for ``new``, with our escrow capsule of it when there is escrow."""
        extra: dict[str, object] = {}
        if self.make_capsule is not None and new.escrow != crypto.NO_ESCROW:
            capsule = await self.make_capsule(case, new.epoch, new.key)
            if capsule is None or capsule.policy_fingerprint != new.escrow:
                # The policy changed between binding and sealing: the hub will refuse
                # this key (invalid) and it is made again under the new one.
                raise pe.InvalidFrame("the escrow policy changed while the key was made")
            extra["capsules"] = [capsule]
        expect(
            await self._request(
                f.CaseKeyDeposit,
                case_id=case.case_id,
                epoch=new.epoch,
                commitment=new.commitment,
                commitment_sig=new.commitment_sig,
                escrow=new.escrow,
                seals=new.seals,
                **extra,
            ),
            f.Ok,
        )

    def _note_epoch(self, case: f.CaseInfo, epoch: int) -> None:
        current = self._cases.get(case.case_id, case)
        if epoch > current.epoch:
            self._cases[case.case_id] = msgspec.structs.replace(current, epoch=epoch)
