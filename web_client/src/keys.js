// Case keys and directory entries, fetched through the session and verified here.
// Python counterpart: chat_client/keymanager.py.
//
// Contract:
// - Directory: public keys are fetched once and pinned for the page's lifetime; a key
//   that changes mid-session is refused, not trusted. Our own entry is our own keys.
// - Reading keys: an epoch key is accepted only if its creator is a participant, the
//   creator's signature over the key commitment verifies, and the key opened from our
//   seal matches the commitment (docs/PROTOCOL.md §8.6). A key that fails is logged and
//   skipped: its messages then show as unverifiable. Keys live in CaseState.keys.
// - Escrow: every verified key the other side made is owed our own capsule
//   (CaseState.capsuleDue; escrow.js deposits it off the case queue).
// - Writing keys: sendEpoch() is the epoch and key to send with; it creates epoch 1 if
//   nobody has, with our escrow capsule of it (escrow.js). If the other participant won
//   the race (`conflict`), their key is fetched and verified instead; if the hub refuses
//   the capsule (`invalid`: the policy changed), the policy is fetched again, once.
// - Callers run fetchKeys / sendEpoch on the case's queue (CaseState.enqueue).

import * as c from "./crypto.js";
import { ConnectionLost, ErrorCode, RemoteError } from "./protocol.js";

export class Keys {
  /**
   * @param {object} deps creds (the unlocked account), request(type, fields), escrow
   *   (escrow.js: capsule(), forget(), depositCapsules()).
   */
  constructor({ creds, request, escrow }) {
    this.creds = creds;
    this.request = request;
    this.escrow = escrow;
    this.directory = new Map();
  }

  get me() {
    return this.creds.accountId;
  }

  // -- directory ----------------------------------------------------------------------

  /** { signPk, boxPk } of an account, or null if the directory refuses or lacks it. */
  async entry(accountId) {
    if (accountId === this.me) {
      return { signPk: this.creds.identity.signPk, boxPk: this.creds.identity.boxPk };
    }
    if (!this.directory.has(accountId)) {
      try {
        const result = await this.request("directory.get", { account_ids: [accountId] });
        for (const e of result.entries) {
          const entry = { signPk: c.fromB64(e.sign_pk), boxPk: c.fromB64(e.box_pk), role: e.role };
          const pinned = this.directory.get(e.account_id);
          // Pin keys on first use: a changed key mid-session is refused, not trusted.
          if (pinned && !c.equalBytes(pinned.signPk, entry.signPk)) continue;
          this.directory.set(e.account_id, entry);
        }
      } catch (err) {
        if (err instanceof ConnectionLost) throw err;
        return null;
      }
    }
    return this.directory.get(accountId) ?? null;
  }

  fingerprintOf(accountId) {
    const entry = this.directory.get(accountId);
    return entry ? c.fingerprint(entry.signPk) : null;
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
        console.warn(`rejected key for epoch ${k.epoch}:`, err.message);
      }
    }
    const latest = Math.max(0, ...cs.keys.keys());
    if (latest > cs.info.epoch) cs.info = { ...cs.info, epoch: latest };
    if (cs.capsuleDue.size > 0) this.escrow.depositCapsules(cs); // not awaited: off the queue
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
