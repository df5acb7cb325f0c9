// The processor: turns what the hub sends into the page's cases and verified messages.
// Python counterpart: chat_client/processor.py.
//
// Contract:
// - Cases: `cases` maps case_id to a CaseState, created or updated from `welcome`,
//   events and case.list; what is known is never lowered (epoch, last_seq, closed).
// - Exactly once, in order: each case has a queue (CaseState.enqueue) that serialises
//   record processing, key fetching and encryption. A record at or below the case's
//   lastSeen is dropped, the next one is processed, one further ahead first syncs from
//   lastSeen (docs/PROTOCOL.md §8.14), so messages are kept in seq order, once each.
// - Verified or flagged: each record is decrypted with the verified epoch key (keys.js),
//   its sender's signature and its hash-chain link to the previous record are checked;
//   anything that fails is kept as an unverifiable message, never shown as text.
// - Plaintext lives only in CaseState.messages; wipe() drops it with the keys (lock).
// - Receipts: "delivered" is sent shortly after the other side's messages arrive, "read"
//   when the counselor looks at the case (markRead), each signed over (case, kind, seq,
//   chain hash at seq) (v2 §4); per-case read cursors (seq numbers only) survive a reload
//   in session storage. A receipt from the hub (event or sync: each participant's
//   latest) counts only if its signer's signature verifies and its chain hash is our
//   record's at its seq: the other side's move the Delivered/Read marks, our own "read"
//   restores the read cursor in a fresh session. A receipt for a seq not processed yet
//   is held (CaseState.heldReceipts, the latest per account and kind) and checked when
//   the record at its seq has been processed; nothing moves before.
// - Signed order (v2 §4): after each record, order.js checkOrder runs over the case's
//   history; a record presented again at a seq with another chain hash than before, or a
//   receipt whose chain hash differs from our record at its seq (or whose seq we passed
//   without a record there), is a contradiction too.
//   Every problem goes to CaseState.problems (the pane shows them, naming the seq).
// - Keys not shared yet (issue 14): a record under an epoch key the client has not shared
//   with us (keys.awaitingKey) is not processed; the case holds there (keyPending, the
//   pane says "waiting for the client's key") and syncs again when case.key.new says the
//   key arrived, so the messages still come once each, in order, verified.

import * as c from "./crypto.js";
import { loadCursors, saveCursors } from "./account.js";
import { checkOrder } from "./order.js";
import { ConnectionLost, MAX_SYNC_BATCH, recordFromWire } from "./protocol.js";

const TYPING_STALE_MS = 10000;
const DELIVERED_DELAY_MS = 300;

/** What the page knows about one case. Plaintext lives only in `messages`. */
export class CaseState {
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
    this.keyEscrow = new Map(); // epoch -> the escrow binding its creator signed (§12.7)
    this.depositing = false;
    this.keyErrors = new Map(); // epoch -> why its key was refused
    this.lastN = 0; // our own highest message counter n seen in this case
    this.hashes = new Map(); // seq -> chain hash, as first presented
    this.history = []; // { seq, senderId, clientMsgId, chainHash } in processed order
    this.opened = new Map(); // seq -> verified envelope (prevSeq, prevHash, n)
    this.orderProblems = []; // checkOrder over history
    this.contradictions = []; // changed chain hashes, receipts that do not match
    this.heldReceipts = new Map(); // "account kind" -> signed receipt ahead of lastSeen
    this.offered = null; // epochs the last case.keys offered us a seal of (keys.js)
    this.keyPending = 0; // the epoch whose key the client has not shared with us yet
  }

  /** Every order problem and contradiction found in this case, by seq. */
  get problems() {
    return [...this.contradictions, ...this.orderProblems].sort((a, b) => a.seq - b.seq);
  }

  participants() {
    return [this.info.client_id, this.info.counselor_id].filter(Boolean);
  }

  /** Run fn after the case's earlier work; the returned promise rejects if fn fails. */
  enqueue(fn) {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /** enqueue for work nobody waits on: failures are logged (a lost connection is not a
   *  failure: the resume step redoes the work). */
  spawn(fn) {
    this.enqueue(fn).catch((err) => {
      if (!(err instanceof ConnectionLost)) console.warn("case work failed:", err.message);
    });
  }
}

export class Processor {
  /**
   * @param {object} deps me (account id), identity (signs receipts), request(type,
   *   fields), keys (keys.js),
   *   onChange(kind, caseId) for the view, onStored(clientMsgId) when one of our own
   *   messages is stored (the outbox forgets it).
   */
  constructor({ me, identity, request, keys, onChange, onStored }) {
    this.me = me;
    this.identity = identity; // signs our receipts
    this.request = request;
    this.keys = keys;
    this.onChange = onChange;
    this.onStored = onStored;
    this.cases = new Map();
    this.cursors = loadCursors(); // case_id -> read up to seq (also: "known case")
    this.firstWelcome = true;
    this.receiptTimers = new Map();
  }

  // -- cases --------------------------------------------------------------------------

  /** A new connection: learn the cases, then sync each case that moved. Resolves when
   *  every sync is done (or failed: the next resume redoes it). */
  resync(welcome) {
    for (const info of welcome.cases) this.upsertCase(info, !this.firstWelcome);
    this.firstWelcome = false;
    this.onChange("cases");
    const syncs = [];
    for (const cs of this.cases.values()) {
      if (cs.info.last_seq > cs.lastSeen) syncs.push(cs.enqueue(() => this.syncNow(cs)));
    }
    return Promise.all(syncs);
  }

  upsertCase(info, alert) {
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

  async refreshCases() {
    const result = await this.request("case.list");
    for (const info of result.cases) this.upsertCase(info, true);
    this.onChange("cases");
  }

  markClosed(caseId) {
    const cs = this.cases.get(caseId);
    if (cs === undefined) return;
    cs.info = { ...cs.info, state: "closed" };
    cs.typingUntil = 0;
    this.onChange("case", caseId);
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
    this.#sendReceipt(cs, "read", upTo);
  }

  /** A receipt signed over the chain hash we hold at `upTo` (v2 §4). */
  #sendReceipt(cs, kind, upTo) {
    const caseId = cs.info.case_id;
    const chainHash = cs.hashes.get(upTo);
    if (upTo === 0 || chainHash === undefined) return;
    this.request("receipt", {
      case_id: caseId, kind, up_to_seq: upTo, chain_hash: chainHash,
      sig: c.signReceipt(this.identity, caseId, kind, upTo, chainHash),
    }).catch(() => {});
  }

  isTyping(cs) {
    return cs.typingUntil > Date.now();
  }

  /** Drop every key and plaintext (lock, sign-out). */
  wipe() {
    for (const cs of this.cases.values()) {
      for (const key of cs.keys.values()) c.wipe(key);
      cs.keys.clear();
      cs.keyEscrow.clear();
      cs.messages.clear();
    }
    this.cases.clear();
    for (const t of this.receiptTimers.values()) clearTimeout(t);
    this.receiptTimers.clear();
  }

  // -- events ---------------------------------------------------------------------------

  onEvent(frame) {
    switch (frame.type) {
      case "msg.new":
        this.#onRecord(frame.message);
        break;
      case "case.assigned": {
        const cs = this.upsertCase(frame.case, true);
        this.onChange("cases");
        this.onChange("case", frame.case.case_id);
        // What the client wrote while the case waited.
        if (cs.info.last_seq > cs.lastSeen) cs.spawn(() => this.syncNow(cs));
        break;
      }
      case "case.key.new": {
        const cs = this.cases.get(frame.case_id);
        if (cs) {
          cs.spawn(async () => {
            await this.keys.fetchKeys(cs);
            if (cs.keyPending !== 0 && !this.keys.awaitingKey(cs, cs.keyPending)) {
              cs.keyPending = 0; // the client shared it: deliver what was held back
              this.onChange("case", cs.info.case_id);
              await this.syncNow(cs);
            }
          });
        }
        break;
      }
      case "receipt.new": {
        const cs = this.cases.get(frame.case_id);
        if (cs) cs.spawn(() => this.#checkReceipt(cs, frame));
        break;
      }
      case "typing.new":
        this.#onTyping(frame);
        break;
      case "case.closed":
        this.markClosed(frame.case_id);
        break;
      default:
        console.debug("ignoring event", frame.type);
    }
  }

  async #onRecord(wire) {
    let cs = this.cases.get(wire.case_id);
    if (cs === undefined) {
      // A case we do not know yet (opened and assigned while we were away): refresh.
      try {
        await this.refreshCases();
      } catch {
        return;
      }
      cs = this.cases.get(wire.case_id);
      if (cs === undefined) return;
    }
    cs.spawn(() => this.#receive(cs, recordFromWire(wire)));
  }

  /** Our own message, from its ack (the outbox built the record from what it sent). */
  ownAck(cs, record) {
    cs.spawn(async () => {
      if (record.seq <= cs.lastSeen) {
        this.onStored(record.clientMsgId); // processed before (a sync got there first)
        this.onChange("case", cs.info.case_id);
        return;
      }
      await this.#receive(cs, record);
    });
  }

  /** The dedupe / gap rule, on the case's queue. */
  async #receive(cs, record) {
    if (cs.keyPending !== 0 && record.senderId !== this.me) {
      cs.info = { ...cs.info, last_seq: Math.max(cs.info.last_seq, record.seq) };
      this.onChange("case", cs.info.case_id);
      return; // synced in order once the key arrives
    }
    if (record.seq <= cs.lastSeen) {
      this.#compareSeen(cs, record); // duplicate (at-least-once delivery)
      return;
    }
    if (record.seq > cs.lastSeen + 1) {
      await this.syncNow(cs); // a gap: fetch what we missed, this record included
      return;
    }
    await this.#process(cs, record);
  }

  /** A signed receipt (event or sync; run on the case queue): it counts only if its
   *  signer's signature verifies, and its chain hash must match our record at its seq.
   *  One for a seq we have not processed yet is held until we have (#releaseReceipts). */
  async #checkReceipt(cs, receipt) {
    const caseId = cs.info.case_id;
    const seq = receipt.up_to_seq;
    const who = receipt.account_id;
    if (!cs.participants().includes(who) || seq === 0) return;
    const chainHash = c.fromB64(receipt.chain_hash);
    let signer;
    try {
      signer = await this.keys.entry(who);
    } catch (err) {
      if (err instanceof c.CryptoError) return; // its keys are refused: the key alert says why
      throw err;
    }
    if (!signer) return;
    try {
      c.verifyReceipt(signer.signPk, caseId, receipt.kind, seq, chainHash, c.fromB64(receipt.sig));
    } catch {
      this.#contradiction(cs, { seq, kind: "rewritten", senderId: who,
        detail: `${receipt.kind} receipt is not signed by its sender` });
      return;
    }
    const signed = { who, kind: receipt.kind, seq, chainHash };
    if (seq > cs.lastSeen) {
      // Nothing to compare with yet: wait for the record (bounded: the latest per
      // account and kind, as the hub keeps them).
      const slot = `${who} ${receipt.kind}`;
      const held = cs.heldReceipts.get(slot);
      if (held === undefined || held.seq < seq) cs.heldReceipts.set(slot, signed);
      return;
    }
    this.#applyReceipt(cs, signed);
  }

  /** Check the held receipts whose seq we have now processed (after each record). */
  #releaseReceipts(cs) {
    for (const [slot, signed] of cs.heldReceipts) {
      if (signed.seq > cs.lastSeen) continue;
      cs.heldReceipts.delete(slot);
      this.#applyReceipt(cs, signed);
    }
  }

  /** A verified receipt at or below lastSeen: it moves the marks only if it names our
   *  record's chain hash at its seq. */
  #applyReceipt(cs, { who, kind, seq, chainHash }) {
    const caseId = cs.info.case_id;
    const signer = who === this.me ? "you" : "the other side";
    const ours = cs.hashes.get(seq);
    if (ours === undefined) {
      this.#contradiction(cs, { seq, kind: "dropped", senderId: who,
        detail: `seq ${seq}, which ${signer} signed for, is missing` });
      return;
    }
    if (!c.equalBytes(ours, chainHash)) {
      this.#contradiction(cs, { seq, kind: "rewritten", senderId: who,
        detail: `history up to seq ${seq} differs from what ${signer} signed` });
      return;
    }
    if (who === this.me) {
      // Our own "read" (from a sync, or another tab) restores the unread position in a
      // fresh browser session; never lowered.
      if (kind === "read" && seq > (this.cursors[caseId] ?? 0)) {
        this.cursors[caseId] = seq;
        saveCursors(this.cursors);
        this.onChange("cases");
      }
      return;
    }
    if (kind === "read") cs.peerRead = Math.max(cs.peerRead, seq);
    cs.peerDelivered = Math.max(cs.peerDelivered, seq);
    this.onChange("case", caseId);
  }

  /** A record at a seq processed before: the hub must present the same chain hash. */
  #compareSeen(cs, record) {
    const known = cs.hashes.get(record.seq);
    if (known !== undefined && !c.equalBytes(known, record.chainHash)) {
      this.#contradiction(cs, { seq: record.seq, kind: "rewritten", senderId: record.senderId,
        detail: `the hub now presents another record at seq ${record.seq} than before` });
    }
  }

  #contradiction(cs, problem) {
    const key = JSON.stringify([problem.seq, problem.kind, problem.detail]);
    if (cs.contradictions.some((p) => JSON.stringify([p.seq, p.kind, p.detail]) === key)) return;
    cs.contradictions.push(problem);
    this.onChange("case", cs.info.case_id);
  }

  #onTyping(frame) {
    const cs = this.cases.get(frame.case_id);
    if (cs === undefined || frame.account_id === this.me) return;
    cs.typingUntil = frame.active ? Date.now() + TYPING_STALE_MS : 0;
    this.onChange("typing", frame.case_id);
    if (frame.active) setTimeout(() => this.onChange("typing", frame.case_id), TYPING_STALE_MS + 50);
  }

  // -- history --------------------------------------------------------------------------

  /** Fetch and process everything after lastSeen (run it on the case's queue). */
  async syncNow(cs) {
    for (;;) {
      const result = await this.request("sync", {
        case_id: cs.info.case_id, after_seq: cs.lastSeen, limit: MAX_SYNC_BATCH,
      });
      let held = false;
      for (const wire of result.messages) {
        const record = recordFromWire(wire);
        if (record.seq > cs.lastSeen) {
          if (!(await this.#process(cs, record))) {
            held = true;
            break;
          }
        } else this.#compareSeen(cs, record);
      }
      cs.info = { ...cs.info, last_seq: Math.max(cs.info.last_seq, result.last_seq) };
      if (held) {
        this.onChange("case", cs.info.case_id);
        break;
      }
      if (!result.has_more || result.messages.length === 0) {
        for (const receipt of result.receipts ?? []) await this.#checkReceipt(cs, receipt);
        break;
      }
    }
  }

  /** Process one record; false (nothing kept) if its key is still to be shared with us. */
  async #process(cs, r) {
    if (!cs.keys.has(r.epoch)) {
      await this.keys.keyFor(cs, r.epoch);
      if (this.keys.awaitingKey(cs, r.epoch)) {
        cs.keyPending = r.epoch;
        return false;
      }
    }
    // The chain check needs the previous record's hash; after a gap we have none.
    const prev = r.seq === cs.lastSeen + 1 ? cs.prevHash : null;
    const { message, envelope } = await this.#open(cs, r, prev);
    cs.messages.set(r.seq, message);
    cs.lastSeen = Math.max(cs.lastSeen, r.seq);
    cs.prevHash = r.chainHash;
    cs.hashes.set(r.seq, r.chainHash);
    cs.history.push({
      seq: r.seq, senderId: r.senderId, clientMsgId: r.clientMsgId, chainHash: r.chainHash,
    });
    if (envelope !== null) {
      cs.opened.set(r.seq, envelope);
      if (r.senderId === this.me) cs.lastN = Math.max(cs.lastN, envelope.n);
      cs.orderProblems = checkOrder(cs.history, cs.opened);
    }
    this.#releaseReceipts(cs);
    cs.info = { ...cs.info, last_seq: Math.max(cs.info.last_seq, r.seq) };
    if (r.senderId === this.me) {
      this.onStored(r.clientMsgId); // stored: no longer pending
    } else {
      this.#scheduleDelivered(cs);
    }
    this.onChange("case", cs.info.case_id);
    this.onChange("cases");
    return true;
  }

  async #open(cs, r, prev) {
    const base = {
      seq: r.seq, senderId: r.senderId, clientMsgId: r.clientMsgId, ts: r.serverTs, body: null,
    };
    const rejected = (error) => ({ message: { ...base, verified: false, error }, envelope: null });
    if (!cs.participants().includes(r.senderId)) {
      return rejected("sender is not a participant of this case");
    }
    const key = await this.keys.keyFor(cs, r.epoch);
    if (!key) {
      const why = cs.keyErrors.get(r.epoch);
      return rejected(`no verified key for epoch ${r.epoch}${why ? `: ${why}` : ""}`);
    }
    let sender;
    try {
      sender = await this.keys.entry(r.senderId);
    } catch (err) {
      if (!(err instanceof c.CryptoError)) throw err;
      return rejected(err.short ?? err.message); // a key not signed, or changed (keys.js)
    }
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
    return {
      message: { ...base, body: envelope.body, ts: envelope.ts, verified: true, error: null },
      envelope,
    };
  }

  #scheduleDelivered(cs) {
    const caseId = cs.info.case_id;
    if (this.receiptTimers.has(caseId)) return;
    this.receiptTimers.set(
      caseId,
      setTimeout(() => {
        this.receiptTimers.delete(caseId);
        this.#sendReceipt(cs, "delivered", cs.lastSeen);
      }, DELIVERED_DELAY_MS),
    );
  }
}
