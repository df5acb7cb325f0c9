// Escrow (docs/DISPUTES.md, docs/WEB.md): the hub's escrow policy and the page's
// capsules. Python counterpart: chat_client/escrow.py (which also signs consent and
// dispute requests; counselors do neither, so the page has no such screens).
//
// Contract:
// - policy() is the installed escrow policy to seal case keys under, verified against
//   the pinned organisation key (served by /config.json) at every use: null if the hub
//   runs without escrow; PolicyError if it does not verify, and then the page never
//   escrows (nor creates epoch keys, which the hub would refuse).
// - The policy is fetched once per session (the supervisor's connection generation),
//   not per capsule. A policy installed while the page is open is used from the next
//   session on, or at once when the hub refuses a capsule made under the old one
//   (forget(); keys.js and depositCapsules() then try once more).
// - `shown` is the policy as the escrow panel displays it (who could unseal a case);
//   onChange("policy") tells the view when it changes.
// - binding() is what a new epoch key is bound to (the policy's fingerprint or "none",
//   signed with its commitment); capsule() seals a new epoch key of ours for keys.js;
//   depositCapsules(cs) sends our own capsule (`case.capsule`) of each verified key the
//   other side made (CaseState.capsuleDue), only under the policy that key is bound to,
//   outside the case queue so history is not held up by escrow round trips. A capsule
//   deposited before is answered `conflict`: done.

import * as c from "./crypto.js";
import { ConnectionLost, ErrorCode, RemoteError } from "./protocol.js";

export class Escrow {
  /**
   * @param {object} deps request(type, fields); session (its `generation` keys the
   *   cache); orgFingerprint, the pin; onChange(kind) for the view.
   */
  constructor({ request, session, orgFingerprint, onChange }) {
    this.request = request;
    this.session = session;
    this.orgFingerprint = orgFingerprint;
    this.onChange = onChange;
    this.shown = null; // the policy as shown to the counselor, once fetched
    this.cached = null; // { generation, answer: Promise<policy.result> }
    this.bound = null; // { answer, binding }: the binding verified for that answer
  }

  /** The verified policy ({ policy, fingerprint }) of this session, or null. */
  async policy() {
    const generation = this.session.generation;
    if (this.cached === null || this.cached.generation !== generation) {
      const answer = this.request("policy.get");
      this.cached = { generation, answer };
      answer.catch(() => {
        if (this.cached?.answer === answer) this.cached = null; // ask again next time
      });
    }
    return this.#verified(await this.cached.answer);
  }

  /** Fetch the policy again at next use (the hub refused a capsule made under it). */
  forget() {
    this.cached = null;
  }

  /** A new session, once its cases are synced: fetch the policy for the escrow panel,
   *  and deposit the capsules a lost connection kept us from depositing (the hub
   *  answers conflict to a repeat, so sending one twice is harmless). Not awaited. */
  resume(cases) {
    this.#load();
    for (const cs of cases) {
      if (cs.capsuleDue.size > 0) this.depositCapsules(cs);
    }
  }

  /** A hub without the escrow feature answers policy.get with an error: nothing is
   *  shown then; a refused policy is shown with its problem. */
  async #load() {
    try {
      await this.policy();
    } catch (err) {
      if (!(err instanceof c.PolicyError)) return;
    }
  }

  #verified(result) {
    if (result.policy === null) {
      this.#show({ installed: false });
      return null;
    }
    const p = result.policy.policy;
    const shown = {
      installed: true,
      fingerprint: null,
      problem: null,
      threshold: p.threshold,
      officers: p.officers.map((o) => o.name),
      notAfter: p.not_after,
    };
    try {
      shown.fingerprint = c.verifyPolicy(result.policy, this.orgFingerprint, Date.now());
    } catch (err) {
      shown.problem = err instanceof c.PolicyError ? err.message : "the policy is malformed";
      this.#show(shown);
      throw err instanceof c.PolicyError ? err : new c.PolicyError(shown.problem);
    }
    this.#show(shown);
    return { policy: p, fingerprint: shown.fingerprint };
  }

  #show(shown) {
    const before = JSON.stringify(this.shown);
    this.shown = shown;
    if (JSON.stringify(shown) !== before) this.onChange("policy");
  }

  // -- capsules ----------------------------------------------------------------------

  /** The escrow binding of a key made now: the verified policy's fingerprint, or "none"
   *  (PolicyError if the policy does not verify). */
  async binding() {
    // Asked before every send: verified once per fetched answer.
    const current = this.cached?.generation === this.session.generation;
    if (current && this.bound?.answer === this.cached.answer) return this.bound.binding;
    const escrow = await this.policy();
    const binding = escrow === null ? c.NO_ESCROW : escrow.fingerprint;
    this.bound = { answer: this.cached?.answer, binding };
    return binding;
  }

  /** Our capsule of a new epoch key under this session's policy; null without escrow. */
  async capsule(caseId, epoch, key) {
    const escrow = await this.policy();
    if (escrow === null) return null;
    return c.makeCapsule(escrow.policy, escrow.fingerprint, caseId, epoch, key);
  }

  /** Deposit our capsule (`case.capsule`) of each verified key the other side made. */
  async depositCapsules(cs) {
    if (cs.depositing) return;
    cs.depositing = true;
    let retried = false;
    try {
      while (cs.capsuleDue.size > 0) {
        const caseId = cs.info.case_id;
        const epoch = Math.min(...cs.capsuleDue);
        const key = cs.keys.get(epoch);
        if (!key) {
          cs.capsuleDue.delete(epoch); // wiped (locked) meanwhile
          continue;
        }
        const capsule = await this.capsule(caseId, epoch, key);
        if (capsule === null) {
          cs.capsuleDue.clear(); // the hub runs without escrow: nothing to deposit
          return;
        }
        if (capsule.policy_fingerprint !== cs.keyEscrow.get(epoch)) {
          if (!retried) {
            retried = true; // our cached policy may be the old one: look again
            this.forget();
            continue;
          }
          cs.capsuleDue.delete(epoch); // bound to another policy: never escrowed under this one
          continue;
        }
        try {
          await this.request("case.capsule", { case_id: caseId, epoch, capsule });
        } catch (err) {
          if (err instanceof RemoteError && err.code === ErrorCode.INVALID && !retried) {
            retried = true; // made under a policy the hub replaced: once more
            this.forget();
            continue;
          }
          // conflict: deposited before (an earlier session of this account): done.
          if (!(err instanceof RemoteError && err.code === ErrorCode.CONFLICT)) throw err;
        }
        cs.capsuleDue.delete(epoch);
      }
    } catch (err) {
      // ConnectionLost: the resume step retries; a refused policy is shown in the panel.
      if (!(err instanceof ConnectionLost)) console.warn("escrow capsule not deposited:", err.message);
    } finally {
      cs.depositing = false;
    }
  }
}
