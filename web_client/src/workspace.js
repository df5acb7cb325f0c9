// The counselor's live workspace: cases, verified case keys, decrypted history, the
// outbox, receipts and typing, kept in step with the hub over a self-healing connection.
//
// Resume (docs/PROTOCOL.md §8.14): after a resumable close the workspace reconnects with
// exponential backoff and jitter, sends hello and auth with the session token (logging
// in again with auth_key if the token is refused), syncs every case from the last seq it
// processed, and resends every unacknowledged msg.send with the same bytes. Records are
// processed in seq order per case, deduplicated by seq, and checked against the hash
// chain; anything that fails a check is kept as an unverifiable message, never shown as
// text from its sender.
//
// Escrow (docs/DISPUTES.md, docs/WEB.md): with a policy installed on the hub, every epoch
// key this page creates carries the page's capsule of K in `case.key`, and for every key
// the client created the page deposits its own capsule with `case.capsule` once it has
// verified the key against the creator's signed commitment. Capsules are sealed only to
// a policy signed by the pinned organisation key (served by /config.json).

import * as c from "./crypto.js";
import { Connection, hubUrl } from "./connection.js";
import { loadCursors, saveCursors } from "./account.js";
import {
  CLIENT_NAME,
  ConnectionLost,
  ErrorCode,
  MAX_SYNC_BATCH,
  RemoteError,
  closeReason,
  isResumable,
  newClientMsgId,
  recordFromWire,
} from "./protocol.js";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30000;
const SEND_TIMEOUT_MS = 15000;
const TYPING_STALE_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** What the page knows about one case. Plaintext lives only in `messages`. */
class CaseState {
  constructor(info) {
    this.info = info;
    this.keys = new Map(); // epoch -> verified K
    this.lastSeen = 0; // highest seq processed
    this.prevHash = c.GENESIS; // chain hash of lastSeen
    this.messages = new Map(); // seq -> { seq, senderId, body, ts, verified, error }
    this.peerDelivered = 0;
    this.peerRead = 0;
    this.typingUntil = 0;
    this.isNew = false;
    this.queue = Promise.resolve(); // serialises record processing and key creation
    this.capsuleDue = new Set(); // epochs of the other side's keys we owe a capsule for
    this.depositing = false;
  }

  participants() {
    return [this.info.client_id, this.info.counselor_id].filter(Boolean);
  }
}

export class Workspace {
  /**
   * @param {Credentials} creds the unlocked account
   * @param {object} opts onChange(kind, caseId) for the view; outbox carried over a lock;
   *   orgFingerprint: the organisation key the escrow policy must be signed with
   */
  constructor(creds, { onChange = () => {}, outbox = [], orgFingerprint = null } = {}) {
    this.orgFingerprint = orgFingerprint;
    this.creds = creds;
    this.onChange = onChange;
    this.cases = new Map();
    this.directory = new Map();
    this.outbox = new Map(outbox.map((entry) => [entry.cmid, entry]));
    this.cursors = loadCursors(); // case_id -> read up to seq (also: "known case")
    this.conn = null;
    this.status = { state: "connecting", detail: "" };
    this.stopped = false;
    this.firstWelcome = true;
    this.wakeUp = null;
    this.receiptTimers = new Map();
    this.policy = null; // escrow policy as shown to the counselor, once fetched
  }

  get me() {
    return this.creds.accountId;
  }

  start() {
    this.#run().catch((err) => {
      console.error("connection supervisor failed", err);
      this.#setStatus("offline", "The connection stopped unexpectedly. Reload the page.");
    });
  }

  /** Disconnect and drop every key and plaintext (lock, sign-out). Returns the outbox as
   *  ciphertext only, so messages still in flight can be resent after unlocking. */
  stop() {
    this.stopped = true;
    this.conn?.close(1000, "locked");
    this.wakeUp?.();
    for (const cs of this.cases.values()) {
      for (const key of cs.keys.values()) c.wipe(key);
      cs.keys.clear();
      cs.messages.clear();
    }
    this.cases.clear();
    for (const t of this.receiptTimers.values()) clearTimeout(t);
    return [...this.outbox.values()]
      .filter((e) => e.ciphertext)
      .map(({ caseId, cmid, epoch, nonce, ciphertext, ts }) => ({
        caseId, cmid, epoch, nonce, ciphertext, ts, body: null, status: "pending",
      }));
  }

  async logout() {
    try {
      await this.#request("logout");
    } catch (err) {
      console.warn("logout failed", err);
    }
    this.stop();
  }

  /** Try to reconnect now (after a non-resumable close or during backoff). */
  reconnectNow() {
    this.wakeUp?.();
  }

  // -- connection supervisor -------------------------------------------------------

  async #run() {
    let backoff = BACKOFF_START_MS;
    let attempt = 0;
    while (!this.stopped) {
      this.#setStatus(attempt === 0 ? "connecting" : "reconnecting", "");
      attempt += 1;
      const conn = new Connection(hubUrl(), { onEvent: (f) => this.#onEvent(conn, f) });
      let info;
      try {
        await conn.open();
        const challenge = await conn.request("hello", { client: CLIENT_NAME });
        const welcome = await this.#auth(conn, challenge);
        if (this.stopped) break;
        this.conn = conn;
        this.#setStatus("syncing", "");
        await this.#resume(welcome);
        this.#setStatus("online", "");
        backoff = BACKOFF_START_MS;
        info = await conn.done;
      } catch (err) {
        conn.close(1000, "retry");
        if (err instanceof RemoteError && err.code === ErrorCode.AUTH_FAILED) {
          this.#setStatus("offline", "The hub refused this account. Sign out and sign in again.");
          await this.#waitForWake(null);
          continue;
        }
        console.warn("connection attempt failed:", err.message);
        info = await conn.done;
      }
      this.conn = null;
      if (this.stopped) break;
      // Not resumable (§10): reconnecting would repeat the problem or evict another
      // session, so wait for the counselor to ask. A drop without a close frame, or a
      // connection this page gave up on itself, is retried.
      if (!isResumable(info)) {
        this.#setStatus("offline", `Disconnected: ${closeReason(info.code)}.`);
        await this.#waitForWake(null);
        continue;
      }
      const delay = backoff * (0.5 + Math.random() * 0.5);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      this.#setStatus("reconnecting", `Reconnecting in ${Math.ceil(delay / 1000)} s…`);
      await this.#waitForWake(delay);
    }
  }

  #waitForWake(ms) {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(resolve, ms);
      this.wakeUp = () => {
        if (timer) clearTimeout(timer);
        this.wakeUp = null;
        resolve();
      };
    });
  }

  async #auth(conn, challenge) {
    const nonce = c.fromB64(challenge.nonce);
    const sig = c.signChallenge(this.creds.identity, nonce, this.me);
    if (this.creds.token) {
      try {
        return await conn.request("auth", { account_id: this.me, token: this.creds.token, sig });
      } catch (err) {
        if (!(err instanceof RemoteError && err.code === ErrorCode.AUTH_FAILED)) throw err;
      }
    }
    // Token expired or revoked: log in again with auth_key (kept while unlocked).
    const result = await conn.request("login", {
      handle: this.creds.handle, auth_key: this.creds.authKey,
    });
    this.creds.saveToken(result.token);
    return conn.request("auth", { account_id: this.me, token: result.token, sig });
  }

  async #resume(welcome) {
    for (const info of welcome.cases) this.#upsertCase(info, !this.firstWelcome);
    this.firstWelcome = false;
    this.onChange("cases");
    const syncs = [];
    for (const cs of this.cases.values()) {
      if (cs.info.last_seq > cs.lastSeen) syncs.push(this.#enqueue(cs, () => this.#syncNow(cs)));
    }
    for (const entry of this.outbox.values()) {
      if (entry.status === "pending") this.#transmit(entry);
    }
    await Promise.all(syncs);
    this.#loadPolicy();
    // Capsules a lost connection kept us from depositing (the hub answers conflict to
    // a repeat, so sending one twice is harmless).
    for (const cs of this.cases.values()) {
      if (cs.capsuleDue.size > 0) this.#depositCapsules(cs);
    }
  }

  /** Who could unseal this account's cases in a dispute (DESIGN.md escrow), for display.
   *  A hub without the escrow feature answers with an error: nothing is shown then. */
  async #loadPolicy() {
    try {
      await this.#escrowPolicy();
    } catch (err) {
      if (!(err instanceof c.PolicyError)) return;
    }
  }

  /**
   * The installed escrow policy to seal case keys under, fetched each time (an operator
   * may install a new one while the page is open): null if the hub runs without escrow.
   * Throws PolicyError if it does not verify against the pinned organisation key; the
   * page then never escrows (nor creates epoch keys, which the hub would refuse).
   */
  async #escrowPolicy() {
    const result = await this.#request("policy.get");
    if (result.policy === null) {
      this.#showPolicy({ installed: false });
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
      this.#showPolicy(shown);
      throw err instanceof c.PolicyError ? err : new c.PolicyError(shown.problem);
    }
    this.#showPolicy(shown);
    return { policy: p, fingerprint: shown.fingerprint };
  }

  #showPolicy(shown) {
    const before = JSON.stringify(this.policy);
    this.policy = shown;
    if (JSON.stringify(shown) !== before) this.onChange("policy");
  }

  #setStatus(state, detail) {
    this.status = { state, detail };
    this.onChange("status");
  }

  #request(type, fields) {
    if (this.conn === null || !this.conn.isOpen) return Promise.reject(new ConnectionLost());
    return this.conn.request(type, fields);
  }

  // -- cases --------------------------------------------------------------------------

  #upsertCase(info, alert) {
    let cs = this.cases.get(info.case_id);
    if (cs === undefined) {
      cs = new CaseState(info);
      this.cases.set(info.case_id, cs);
      const known = Object.hasOwn(this.cursors, info.case_id);
      if (!known) {
        this.cursors[info.case_id] = 0;
        saveCursors(this.cursors);
        if (alert || !this.firstWelcome || info.last_seq === 0) {
          cs.isNew = true;
          if (alert) this.onChange("newcase", info.case_id);
        }
      }
      return cs;
    }
    // Never lower what we already know (events may repeat older results).
    const epoch = Math.max(cs.info.epoch, info.epoch);
    const lastSeq = Math.max(cs.info.last_seq, info.last_seq);
    const state = cs.info.state === "closed" ? "closed" : info.state;
    cs.info = { ...info, epoch, last_seq: lastSeq, state };
    return cs;
  }

  async #refreshCases() {
    const result = await this.#request("case.list");
    for (const info of result.cases) this.#upsertCase(info, true);
    this.onChange("cases");
  }

  sortedCases() {
    const rank = { assigned: 0, waiting: 1, closed: 2 };
    return [...this.cases.values()].sort(
      (a, b) =>
        rank[a.info.state] - rank[b.info.state] || b.info.created_at - a.info.created_at,
    );
  }

  unread(cs) {
    const readUpTo = this.cursors[cs.info.case_id] ?? 0;
    let n = 0;
    for (const m of cs.messages.values()) if (m.seq > readUpTo && m.senderId !== this.me) n += 1;
    return n;
  }

  /** The counselor is looking at the case: clear unread and tell the client (read receipt). */
  markRead(caseId) {
    const cs = this.cases.get(caseId);
    if (cs === undefined) return;
    cs.isNew = false;
    const upTo = cs.lastSeen;
    if ((this.cursors[caseId] ?? 0) >= upTo) return;
    this.cursors[caseId] = upTo;
    saveCursors(this.cursors);
    this.onChange("cases");
    this.#request("receipt", { case_id: caseId, kind: "read", up_to_seq: upTo }).catch(() => {});
  }

  async closeCase(caseId) {
    await this.#request("case.close", { case_id: caseId });
    const cs = this.cases.get(caseId);
    if (cs) cs.info = { ...cs.info, state: "closed" };
    this.onChange("case", caseId);
    this.onChange("cases");
  }

  typing(caseId, active) {
    this.#request("typing", { case_id: caseId, active }).catch(() => {});
  }

  isTyping(cs) {
    return cs.typingUntil > Date.now();
  }

  // -- events ---------------------------------------------------------------------------

  #onEvent(conn, frame) {
    if (conn !== this.conn && this.conn !== null) return;
    switch (frame.type) {
      case "msg.new":
        this.#onRecord(frame.message);
        break;
      case "case.assigned":
        this.#upsertCase(frame.case, true);
        this.onChange("cases");
        this.onChange("case", frame.case.case_id);
        break;
      case "case.key.new": {
        const cs = this.cases.get(frame.case_id);
        if (cs) this.#spawn(cs, () => this.#fetchKeys(cs));
        break;
      }
      case "receipt.new":
        this.#onReceipt(frame);
        break;
      case "typing.new":
        this.#onTyping(frame);
        break;
      case "case.closed": {
        const cs = this.cases.get(frame.case_id);
        if (cs) {
          cs.info = { ...cs.info, state: "closed" };
          cs.typingUntil = 0;
          this.onChange("case", frame.case_id);
          this.onChange("cases");
        }
        break;
      }
      default:
        console.debug("ignoring event", frame.type);
    }
  }

  async #onRecord(wire) {
    let cs = this.cases.get(wire.case_id);
    if (cs === undefined) {
      // A case we do not know yet (opened and assigned while we were away): refresh.
      try {
        await this.#refreshCases();
      } catch {
        return;
      }
      cs = this.cases.get(wire.case_id);
      if (cs === undefined) return;
    }
    this.#spawn(cs, async () => {
      if (wire.seq <= cs.lastSeen) return; // duplicate (at-least-once delivery)
      if (wire.seq > cs.lastSeen + 1) {
        await this.#syncNow(cs); // a gap: fetch what we missed, this record included
        return;
      }
      await this.#process(cs, recordFromWire(wire));
    });
  }

  #onReceipt(frame) {
    const cs = this.cases.get(frame.case_id);
    if (cs === undefined || frame.account_id === this.me) return;
    if (frame.kind === "read") cs.peerRead = Math.max(cs.peerRead, frame.up_to_seq);
    cs.peerDelivered = Math.max(cs.peerDelivered, frame.up_to_seq);
    this.onChange("case", frame.case_id);
  }

  #onTyping(frame) {
    const cs = this.cases.get(frame.case_id);
    if (cs === undefined || frame.account_id === this.me) return;
    cs.typingUntil = frame.active ? Date.now() + TYPING_STALE_MS : 0;
    this.onChange("typing", frame.case_id);
    if (frame.active) setTimeout(() => this.onChange("typing", frame.case_id), TYPING_STALE_MS + 50);
  }

  /** Run fn after the case's earlier work; the returned promise rejects if fn fails. */
  #enqueue(cs, fn) {
    const run = cs.queue.then(fn);
    cs.queue = run.catch(() => {});
    return run;
  }

  /** #enqueue for work nobody waits on: failures are logged (a lost connection is not
   *  a failure: the resume step redoes the work). */
  #spawn(cs, fn) {
    this.#enqueue(cs, fn).catch((err) => {
      if (!(err instanceof ConnectionLost)) console.warn("case work failed:", err.message);
    });
  }

  // -- history --------------------------------------------------------------------------

  async #syncNow(cs) {
    for (;;) {
      const result = await this.#request("sync", {
        case_id: cs.info.case_id, after_seq: cs.lastSeen, limit: MAX_SYNC_BATCH,
      });
      for (const wire of result.messages) {
        if (wire.seq > cs.lastSeen) await this.#process(cs, recordFromWire(wire));
      }
      cs.info = { ...cs.info, last_seq: Math.max(cs.info.last_seq, result.last_seq) };
      if (!result.has_more || result.messages.length === 0) break;
    }
  }

  async #process(cs, r) {
    // The chain check needs the previous record's hash; after a gap we have none.
    const prev = r.seq === cs.lastSeen + 1 ? cs.prevHash : null;
    const message = await this.#open(cs, r, prev);
    cs.messages.set(r.seq, message);
    cs.lastSeen = Math.max(cs.lastSeen, r.seq);
    cs.prevHash = r.chainHash;
    cs.info = { ...cs.info, last_seq: Math.max(cs.info.last_seq, r.seq) };
    if (r.senderId === this.me) {
      this.outbox.delete(r.clientMsgId); // stored: no longer pending
    } else {
      this.#scheduleDelivered(cs);
    }
    this.onChange("case", cs.info.case_id);
    this.onChange("cases");
  }

  async #open(cs, r, prev) {
    const base = {
      seq: r.seq, senderId: r.senderId, clientMsgId: r.clientMsgId, ts: r.serverTs, body: null,
    };
    const rejected = (error) => ({ ...base, verified: false, error });
    if (!cs.participants().includes(r.senderId)) {
      return rejected("sender is not a participant of this case");
    }
    const key = await this.#keyFor(cs, r.epoch);
    if (!key) return rejected(`no verified key for epoch ${r.epoch}`);
    const sender = await this.#entry(r.senderId);
    if (!sender) return rejected("sender's public key is unavailable");
    let envelope;
    try {
      envelope = c.decryptMessage(key, sender.signPk, r);
    } catch (err) {
      return rejected(err instanceof c.CryptoError ? err.message : "message does not verify");
    }
    if (prev !== null && !c.equalBytes(c.chainHash(prev, r), r.chainHash)) {
      return rejected("hash chain mismatch (a stored message was dropped or altered)");
    }
    return { ...base, body: envelope.body, ts: envelope.ts, verified: true, error: null };
  }

  #scheduleDelivered(cs) {
    const caseId = cs.info.case_id;
    if (this.receiptTimers.has(caseId)) return;
    this.receiptTimers.set(
      caseId,
      setTimeout(() => {
        this.receiptTimers.delete(caseId);
        this.#request("receipt", {
          case_id: caseId, kind: "delivered", up_to_seq: cs.lastSeen,
        }).catch(() => {});
      }, 300),
    );
  }

  // -- keys and directory ------------------------------------------------------------------

  async #entry(accountId) {
    if (accountId === this.me) {
      return { signPk: this.creds.identity.signPk, boxPk: this.creds.identity.boxPk };
    }
    if (!this.directory.has(accountId)) {
      try {
        const result = await this.#request("directory.get", { account_ids: [accountId] });
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

  async #keyFor(cs, epoch) {
    if (!cs.keys.has(epoch)) await this.#fetchKeys(cs);
    return cs.keys.get(epoch) ?? null;
  }

  async #fetchKeys(cs) {
    const caseId = cs.info.case_id;
    const result = await this.#request("case.keys", { case_id: caseId });
    for (const k of result.keys) {
      if (cs.keys.has(k.epoch)) continue;
      try {
        if (!cs.participants().includes(k.creator_id)) {
          throw new c.CryptoError("key made by a non-participant");
        }
        const creator = await this.#entry(k.creator_id);
        if (!creator) throw new c.CryptoError("key creator unknown");
        const commitment = c.fromB64(k.commitment);
        c.verifyCommitment(creator.signPk, caseId, k.epoch, commitment, c.fromB64(k.commitment_sig));
        const key = c.openCaseKey(c.fromB64(k.sealed), this.creds.identity, caseId, k.epoch, commitment);
        cs.keys.set(k.epoch, key);
        // Each participant vouches for K on its own: escrow the other side's key too.
        if (k.creator_id !== this.me) cs.capsuleDue.add(k.epoch);
      } catch (err) {
        if (err instanceof ConnectionLost) throw err;
        console.warn(`rejected key for epoch ${k.epoch}:`, err.message);
      }
    }
    const latest = Math.max(0, ...cs.keys.keys());
    if (latest > cs.info.epoch) cs.info = { ...cs.info, epoch: latest };
    if (cs.capsuleDue.size > 0) this.#depositCapsules(cs); // not awaited: off the queue
  }

  /** Deposit our capsule (`case.capsule`) of each verified key the other side made.
   *  Runs outside the case queue so history is not held up by escrow round trips. */
  async #depositCapsules(cs) {
    if (cs.depositing) return;
    cs.depositing = true;
    try {
      while (cs.capsuleDue.size > 0) {
        const escrow = await this.#escrowPolicy();
        if (escrow === null) {
          cs.capsuleDue.clear(); // the hub runs without escrow: nothing to deposit
          return;
        }
        const caseId = cs.info.case_id;
        const epoch = Math.min(...cs.capsuleDue);
        const key = cs.keys.get(epoch);
        if (!key) {
          cs.capsuleDue.delete(epoch); // wiped (locked) meanwhile
          continue;
        }
        const capsule = c.makeCapsule(escrow.policy, escrow.fingerprint, caseId, epoch, key);
        try {
          await this.#request("case.capsule", { case_id: caseId, epoch, capsule });
        } catch (err) {
          // conflict: deposited before (an earlier session of this account): done.
          if (!(err instanceof RemoteError && err.code === ErrorCode.CONFLICT)) throw err;
        }
        cs.capsuleDue.delete(epoch);
      }
    } catch (err) {
      // ConnectionLost: #resume retries; a refused policy is shown in the escrow panel.
      if (!(err instanceof ConnectionLost)) console.warn("escrow capsule not deposited:", err.message);
    } finally {
      cs.depositing = false;
    }
  }

  /** The epoch and key to send with; creates epoch 1 if nobody has yet (§8.6). */
  async #sendEpoch(cs) {
    if (cs.info.state === "closed") throw new RemoteError(ErrorCode.FORBIDDEN, "case is closed");
    if (cs.info.state !== "assigned") throw new Error("the case has no counselor yet");
    let epoch = Math.max(cs.info.epoch, ...cs.keys.keys(), 0);
    if (epoch === 0) return this.#createEpoch(cs, 1);
    if (!cs.keys.has(epoch)) {
      await this.#fetchKeys(cs);
      epoch = Math.max(epoch, ...cs.keys.keys());
    }
    const key = cs.keys.get(epoch);
    if (!key) throw new c.CryptoError(`no verified key for epoch ${epoch}`);
    return { epoch, key };
  }

  async #createEpoch(cs, epoch) {
    const caseId = cs.info.case_id;
    const key = c.newCaseKey();
    const commitment = c.keyCommitment(key, caseId, epoch);
    const seals = [];
    for (const accountId of cs.participants()) {
      const entry = await this.#entry(accountId);
      if (!entry) throw new c.CryptoError("participant's public key is unavailable");
      seals.push({ account_id: accountId, sealed: c.toB64(c.sealCaseKey(key, entry.boxPk)) });
    }
    const fields = {
      case_id: caseId,
      epoch,
      commitment,
      commitment_sig: c.signCommitment(this.creds.identity, caseId, epoch, commitment),
      seals,
    };
    try {
      // With escrow, the hub stores the key only together with our capsule of it.
      const escrow = await this.#escrowPolicy();
      if (escrow !== null) {
        fields.capsules = [c.makeCapsule(escrow.policy, escrow.fingerprint, caseId, epoch, key)];
      }
      await this.#request("case.key", fields);
    } catch (err) {
      c.wipe(key);
      if (!(err instanceof RemoteError && err.code === ErrorCode.CONFLICT)) throw err;
      await this.#fetchKeys(cs); // the other participant won the race: use theirs
      const theirs = cs.keys.get(epoch);
      if (!theirs) throw new c.CryptoError(`epoch ${epoch} key does not verify`);
      return { epoch, key: theirs };
    }
    cs.keys.set(epoch, key);
    cs.info = { ...cs.info, epoch: Math.max(cs.info.epoch, epoch) };
    return { epoch, key };
  }

  // -- sending --------------------------------------------------------------------------------

  pendingFor(caseId) {
    return [...this.outbox.values()].filter((e) => e.caseId === caseId);
  }

  /** Encrypt and send; the entry shows as pending until acked, failed (with retry) on error. */
  async send(caseId, body) {
    const cs = this.cases.get(caseId);
    if (cs === undefined) throw new Error("unknown case");
    const entry = {
      caseId, cmid: newClientMsgId(), body, ts: Date.now(), status: "pending",
      epoch: null, nonce: null, ciphertext: null, error: null,
    };
    this.outbox.set(entry.cmid, entry);
    this.onChange("case", caseId);
    await this.#prepareAndTransmit(cs, entry);
  }

  async retry(cmid) {
    const entry = this.outbox.get(cmid);
    if (entry === undefined) return;
    entry.status = "pending";
    entry.error = null;
    this.onChange("case", entry.caseId);
    const cs = this.cases.get(entry.caseId);
    if (cs) await this.#prepareAndTransmit(cs, entry);
  }

  async #prepareAndTransmit(cs, entry) {
    if (entry.ciphertext === null) {
      try {
        await this.#enqueue(cs, async () => {
          const { epoch, key } = await this.#sendEpoch(cs);
          const enc = c.encryptMessage(key, this.creds.identity, {
            caseId: entry.caseId,
            epoch,
            senderId: this.me,
            envelope: { body: entry.body, ts: entry.ts, clientMsgId: entry.cmid },
          });
          Object.assign(entry, { epoch, nonce: enc.nonce, ciphertext: enc.ciphertext });
        });
      } catch (err) {
        // Offline: stays pending; the resume step encrypts and sends it once reconnected.
        if (!(err instanceof ConnectionLost)) this.#fail(entry, err);
        return;
      }
    }
    this.#transmit(entry);
  }

  /** Send (or resend: the same client_msg_id, epoch, nonce and ciphertext) one entry. */
  async #transmit(entry) {
    if (entry.ciphertext === null) {
      const cs = this.cases.get(entry.caseId);
      if (cs) this.#prepareAndTransmit(cs, entry);
      return;
    }
    if (this.conn === null) return; // resent by #resume
    const timer = setTimeout(() => {
      if (this.outbox.get(entry.cmid) === entry && entry.status === "pending") {
        this.#fail(entry, new Error("no answer from the hub"));
      }
    }, SEND_TIMEOUT_MS);
    try {
      const ack = await this.#request("msg.send", {
        case_id: entry.caseId,
        epoch: entry.epoch,
        client_msg_id: entry.cmid,
        nonce: entry.nonce,
        ciphertext: entry.ciphertext,
      });
      const cs = this.cases.get(entry.caseId);
      if (cs === undefined) return;
      entry.status = "acked";
      const record = {
        caseId: entry.caseId, seq: ack.seq, epoch: entry.epoch, senderId: this.me,
        clientMsgId: entry.cmid, nonce: entry.nonce, ciphertext: entry.ciphertext,
        chainHash: c.fromB64(ack.chain_hash), serverTs: Date.now(),
      };
      this.#spawn(cs, async () => {
        if (record.seq <= cs.lastSeen) {
          this.outbox.delete(entry.cmid);
          this.onChange("case", entry.caseId);
        } else if (record.seq > cs.lastSeen + 1) {
          await this.#syncNow(cs);
        } else {
          await this.#process(cs, record);
        }
      });
    } catch (err) {
      if (!(err instanceof ConnectionLost)) this.#fail(entry, err);
      // ConnectionLost: stays pending; #resume resends it with the same bytes.
    } finally {
      clearTimeout(timer);
    }
  }

  #fail(entry, err) {
    entry.status = "failed";
    if (err instanceof RemoteError) entry.error = describeError(err);
    else if (err instanceof c.PolicyError) entry.error = `cannot escrow the case key: ${err.message}`;
    else entry.error = err.message;
    this.onChange("case", entry.caseId);
  }
}

function describeError(err) {
  switch (err.code) {
    case ErrorCode.FORBIDDEN:
      return "the hub refused it (is the case closed?)";
    case ErrorCode.RATE_LIMITED:
      return "sending too fast; try again";
    case ErrorCode.DUPLICATE:
      return "the hub has a different message with this id";
    default:
      return `refused by the hub (${err.code})`;
  }
}
