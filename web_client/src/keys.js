// Case keys and directory entries, fetched through the session and verified here.
// Python counterpart: chat_client/keymanager.py.
//
// Contract:
// - Directory (v2 §1, §3): an entry is trusted only if its box key is signed by its
//   identity key (`box_sig`; missing or bad: KeyRefused, "key not signed") and both keys
//   equal the account's pin (pins.js; first use pins them, a change is KeyChanged: a
//   hard failure, kept in `problems` for the view's banner until the counselor trusts
//   the new keys after comparing the safety number). Refusals are thrown, so a message
//   from that account shows as unverifiable and nothing is sealed to it. Our own entry
//   is our own keys.
// - Counselors (v2 §2): before a case key is sealed to another counselor, its certificate
//   must verify under the pinned organisation key (UncertifiedCounselor otherwise); with no
//   organisation key pinned the key is sealed, and the page says once per case that only
//   the hub vouches for that counselor.
// - Reading keys: an epoch key is accepted only if its creator is a participant, the
//   creator's signature over the key commitment verifies, and the key opened from our
//   seal matches the commitment (docs/PROTOCOL.md §8.6). A key that fails is logged and
//   skipped: its messages then show as unverifiable. Keys live in CaseState.keys.
// - Escrow: every verified key the other side made is owed our own capsule
//   (CaseState.capsuleDue; escrow.js deposits it off the case queue).
// - Keys not shared yet: a client that wrote while its case waited made epoch 1 sealed to
//   itself; it adds our seal once it verified us (case.key.share). Until then case.keys
//   offers us no seal of that epoch: awaitingKey() says so, and the processor holds the
//   case's messages back ("waiting for the client's key") instead of failing them.
// - Writing keys: sendEpoch() is the epoch and key to send with; it creates epoch 1 if
//   nobody has, with our escrow capsule of it (escrow.js). If the other participant won
//   the race (`conflict`), their key is fetched and verified instead; if the hub refuses
//   the capsule (`invalid`: the policy changed), the policy is fetched again, once.
// - Callers run fetchKeys / sendEpoch on the case's queue (CaseState.enqueue).

import * as c from "./crypto.js";
import { KeyChanged } from "./pins.js";
import { ConnectionLost, ErrorCode, RemoteError } from "./protocol.js";

/** A directory entry the page does not trust (its box key is not signed by its identity). */
export class KeyRefused extends c.CryptoError {
  constructor(handle, why) {
    super(`the keys of ${handle} are refused: ${why}`);
    this.name = "KeyRefused";
  }
}

/** The page will not seal a case key to a counselor the organisation did not certify. */
export class UncertifiedCounselor extends c.CryptoError {
  constructor(handle, why) {
    super(`${handle} is not a certified counselor of the organisation (${why}); ` +
      "the case key is not shared with them");
    this.name = "UncertifiedCounselor";
  }
}

/** What the page says while the client has not shared its key with us yet. */
export const WAITING_FOR_KEY = "waiting for the client's key";

export class Keys {
  /**
   * @param {object} deps creds (the unlocked account), request(type, fields), escrow
   *   (escrow.js: capsule(), forget(), depositCapsules()).
   */
  constructor({ creds, request, escrow, pins, orgFingerprint = null, onChange = () => {} }) {
    this.creds = creds;
    this.request = request;
    this.escrow = escrow;
    this.pins = pins;
    this.orgFingerprint = orgFingerprint;
    this.onChange = onChange;
    this.directory = new Map(); // account_id -> verified entry, or the error refusing it
    this.problems = new Map(); // account_id -> KeyChanged (for the view's banner)
    this.notes = new Map(); // case_id -> a plain note for the case (no org key pinned)
    this.prefsProblem = null; // the pins blob did not open or was rolled back
  }

  get me() {
    return this.creds.accountId;
  }

  // -- directory ----------------------------------------------------------------------

  /** The verified, pinned { accountId, handle, role, signPk, boxPk, cert } of an account;
   *  null if the directory lacks it; throws KeyRefused / KeyChanged (CryptoError). */
  async entry(accountId) {
    if (accountId === this.me) {
      const id = this.creds.identity;
      return {
        accountId, handle: this.creds.handle, role: this.creds.role,
        signPk: id.signPk, boxPk: id.boxPk, cert: this.creds.cert,
      };
    }
    if (!this.directory.has(accountId)) {
      let result;
      try {
        result = await this.request("directory.get", { account_ids: [accountId] });
      } catch (err) {
        if (err instanceof ConnectionLost) throw err;
        return null;
      }
      try {
        await this.pins.load();
      } catch (err) {
        if (err instanceof c.CryptoError && this.prefsProblem === null) {
          this.prefsProblem = err; // altered or rolled back: shown with the key alerts
          this.onChange("keys");
        }
        throw err;
      }
      for (const e of result.entries) {
        if (e.account_id === accountId) this.directory.set(accountId, await this.#verify(e));
      }
    }
    const found = this.directory.get(accountId) ?? null;
    if (found instanceof Error) throw found;
    return found;
  }

  async #verify(e) {
    const entry = {
      accountId: e.account_id, handle: e.handle, role: e.role,
      signPk: c.fromB64(e.sign_pk), boxPk: c.fromB64(e.box_pk), cert: e.cert ?? null,
    };
    if (e.box_sig === null || e.box_sig === undefined) {
      return new KeyRefused(e.handle, "key not signed (the account has not attested its box key)");
    }
    try {
      c.verifyBoxKey(entry.signPk, entry.boxPk, c.fromB64(e.box_sig));
    } catch {
      return new KeyRefused(e.handle, "key not signed (its box key signature does not verify)");
    }
    try {
      if (!this.pins.check(entry)) await this.pins.remember(entry);
    } catch (err) {
      if (err instanceof KeyChanged) {
        this.problems.set(entry.accountId, { error: err, entry });
        this.onChange("keys");
        return err;
      }
      if (err instanceof c.CryptoError) {
        this.prefsProblem ??= err; // the blob read again while saving did not open
        this.onChange("keys");
        return err;
      }
      // The pin could not be saved (offline, conflicts): it holds for this page's life.
      console.warn("contact pin not saved:", err.message);
    }
    return entry;
  }

  /** After the counselor compared the safety number: pin the keys the hub presents now. */
  async trustNewKeys(accountId) {
    const problem = this.problems.get(accountId);
    if (problem === undefined) return;
    await this.pins.remember(problem.entry, { replace: true });
    this.problems.delete(accountId);
    this.directory.set(accountId, problem.entry);
    this.onChange("keys");
  }

  get myFingerprint() {
    const id = this.creds.identity;
    return c.fingerprintV2(id.signPk, id.boxPk);
  }

  /** The fingerprint (both keys) of a verified contact, or null. */
  fingerprintOf(accountId) {
    const entry = this.directory.get(accountId);
    return entry && !(entry instanceof Error) ? c.fingerprintV2(entry.signPk, entry.boxPk) : null;
  }

  /** What the Verify dialog shows for a contact: its handle, fingerprint and the safety
   *  number of this pair; null unless the contact's keys are verified. */
  verification(accountId) {
    const entry = this.directory.get(accountId);
    if (!entry || entry instanceof Error) return null;
    return this.#verificationOf(entry);
  }

  /** The same for the new keys of a contact whose keys changed. */
  keyChangeVerification(accountId) {
    const problem = this.problems.get(accountId);
    return problem ? this.#verificationOf(problem.entry) : null;
  }

  #verificationOf(entry) {
    const id = this.creds.identity;
    return {
      handle: entry.handle,
      fingerprint: c.fingerprintV2(entry.signPk, entry.boxPk),
      mine: c.fingerprintV2(id.signPk, id.boxPk),
      safetyNumber: c.safetyNumber(entry, id),
    };
  }

  /** v2 §2: may a case key be sealed to this entry? Throws UncertifiedCounselor. The
   *  case's counselor seat counts, not only the role the directory claims. */
  #checkCounselor(cs, entry) {
    const caseId = cs.info.case_id;
    const seat = entry.accountId === cs.info.counselor_id;
    if ((entry.role !== "counselor" && !seat) || entry.accountId === this.me) return;
    if (!this.orgFingerprint) {
      if (!this.notes.has(caseId)) {
        this.notes.set(caseId, "No organisation key is pinned: the hub alone vouches that " +
          `${entry.handle} is a counselor.`);
        this.onChange("case", caseId);
      }
      return;
    }
    if (entry.cert === null) throw new UncertifiedCounselor(entry.handle, "no certificate");
    try {
      c.verifyCounselorCert(entry.cert, this.orgFingerprint, entry);
    } catch (err) {
      throw new UncertifiedCounselor(entry.handle, err.message);
    }
  }

  // -- reading keys -------------------------------------------------------------------

  /** The verified key of `epoch`, fetching the case's keys once if it is not held. */
  async keyFor(cs, epoch) {
    if (!cs.keys.has(epoch)) await this.fetchKeys(cs);
    return cs.keys.get(epoch) ?? null;
  }

  /** Fetch, verify and keep every epoch key of the case not held yet. */
  async fetchKeys(cs) {
    const caseId = cs.info.case_id;
    const result = await this.request("case.keys", { case_id: caseId });
    cs.offered = new Set(result.keys.map((k) => k.epoch));
    for (const k of result.keys) {
      if (cs.keys.has(k.epoch)) continue;
      try {
        if (!cs.participants().includes(k.creator_id)) {
          throw new c.CryptoError("key made by a non-participant");
        }
        const creator = await this.entry(k.creator_id);
        if (!creator) throw new c.CryptoError("key creator unknown");
        const commitment = c.fromB64(k.commitment);
        const sig = c.fromB64(k.commitment_sig);
        c.verifyCommitment(creator.signPk, caseId, k.epoch, commitment, k.escrow, sig);
        const key = c.openCaseKey(c.fromB64(k.sealed), this.creds.identity, caseId, k.epoch, commitment);
        cs.keys.set(k.epoch, key);
        cs.keyEscrow.set(k.epoch, k.escrow);
        // Each participant vouches for K on its own: escrow the other side's key too,
        // under the policy its creator bound it to (a key made without escrow stays so).
        if (k.creator_id !== this.me && k.escrow !== c.NO_ESCROW) cs.capsuleDue.add(k.epoch);
      } catch (err) {
        if (err instanceof ConnectionLost) throw err;
        // Shown with the messages it leaves unread.
        cs.keyErrors.set(k.epoch, err.short ?? err.message);
        console.warn(`rejected key for epoch ${k.epoch}:`, err.message);
      }
    }
    const latest = Math.max(0, ...cs.keys.keys());
    if (latest > cs.info.epoch) cs.info = { ...cs.info, epoch: latest };
    if (cs.capsuleDue.size > 0) this.escrow.depositCapsules(cs); // not awaited: off the queue
  }

  /** True if the last case.keys offered us no seal of `epoch`: its creator (the client)
   *  has not shared it with us yet. A key offered but refused is not "awaited". */
  awaitingKey(cs, epoch) {
    return cs.offered !== null && !cs.offered.has(epoch) && !cs.keys.has(epoch);
  }

  // -- writing keys -------------------------------------------------------------------

  /** The epoch and key to send with; creates epoch 1 if nobody has yet (§8.6). */
  async sendEpoch(cs) {
    if (cs.info.state === "closed") throw new RemoteError(ErrorCode.FORBIDDEN, "case is closed");
    if (cs.info.state !== "assigned") throw new Error("the case has no counselor yet");
    let epoch = Math.max(cs.info.epoch, ...cs.keys.keys(), 0);
    if (epoch === 0) return this.#createEpoch(cs, 1);
    if (!cs.keys.has(epoch)) {
      await this.fetchKeys(cs);
      epoch = Math.max(epoch, ...cs.keys.keys());
    }
    const key = cs.keys.get(epoch);
    if (!key && this.awaitingKey(cs, epoch)) throw new Error(WAITING_FOR_KEY);
    if (!key) throw new c.CryptoError(`no verified key for epoch ${epoch}`);
    // A policy change starts a new epoch: the old key is never escrowed under the new one.
    if (await this.#policyChanged(cs, epoch)) return this.#createEpoch(cs, epoch + 1);
    return { epoch, key };
  }

  /** Is the policy in force not the one `epoch`'s key is bound to? A policy that does
   *  not verify decides nothing here (the key stays in use). */
  async #policyChanged(cs, epoch) {
    if (!this.escrow) return false; // no escrow room (tests of the rooms alone)
    let current;
    try {
      current = await this.escrow.binding();
    } catch (err) {
      if (err instanceof ConnectionLost) throw err;
      return false; // a refused policy, or a hub that does not answer: keep the key
    }
    return cs.keyEscrow.get(epoch) !== current;
  }

  async #createEpoch(cs, epoch) {
    const caseId = cs.info.case_id;
    const key = c.newCaseKey();
    const commitment = c.keyCommitment(key, caseId, epoch);
    const seals = [];
    for (const accountId of cs.participants()) {
      const entry = await this.entry(accountId);
      if (!entry) throw new c.CryptoError("participant's public key is unavailable");
      this.#checkCounselor(cs, entry);
      seals.push({ account_id: accountId, sealed: c.toB64(c.sealCaseKey(key, entry.boxPk)) });
    }
    const fields = { case_id: caseId, epoch, commitment, seals };
    const bind = async () => {
      fields.escrow = this.escrow ? await this.escrow.binding() : c.NO_ESCROW;
      fields.commitment_sig = c.signCommitment(
        this.creds.identity, caseId, epoch, commitment, fields.escrow,
      );
    };
    try {
      try {
        await bind();
        await this.#deposit(fields, key);
      } catch (err) {
        if (!(err instanceof RemoteError && err.code === ErrorCode.INVALID)) throw err;
        this.escrow.forget(); // the policy was replaced: bind and seal once more
        await bind();
        await this.#deposit(fields, key);
      }
    } catch (err) {
      c.wipe(key);
      if (!(err instanceof RemoteError && err.code === ErrorCode.CONFLICT)) throw err;
      await this.fetchKeys(cs); // the other participant won the race: use theirs
      const theirs = cs.keys.get(epoch);
      if (!theirs) throw new c.CryptoError(`epoch ${epoch} key does not verify`);
      return { epoch, key: theirs };
    }
    cs.keys.set(epoch, key);
    cs.keyEscrow.set(epoch, fields.escrow);
    cs.info = { ...cs.info, epoch: Math.max(cs.info.epoch, epoch) };
    return { epoch, key };
  }

  /** `case.key`; with escrow, the hub stores the key only together with our capsule,
   *  made under the policy the key is bound to. */
  async #deposit(fields, key) {
    delete fields.capsules;
    if (fields.escrow !== c.NO_ESCROW) {
      const capsule = await this.escrow.capsule(fields.case_id, fields.epoch, key);
      if (capsule === null || capsule.policy_fingerprint !== fields.escrow) {
        throw new RemoteError(ErrorCode.INVALID, "the escrow policy changed while the key was made");
      }
      fields.capsules = [capsule];
    }
    await this.request("case.key", fields);
  }
}
