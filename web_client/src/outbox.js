// The outbox: messages the counselor wrote that the hub has not stored yet.
// Python counterpart: chat_client/outbox.py.
//
// Contract:
// - send() adds an entry (shown as pending at once), then encrypts and signs it on the
//   case's queue (keys.js sendEpoch) and transmits it. The encrypted bytes never change:
//   every resend carries the same client_msg_id, epoch, nonce and ciphertext, so the hub
//   answers a repeat with the original seq.
// - An entry stays until its own record is processed (stored(): the processor calls it
//   for our messages, whether they arrive by ack or by sync). A lost connection keeps
//   it pending; resend() (the resume step) transmits every pending entry again, and
//   encrypts the ones that never got that far.
// - An ack is matched to its entry by client_msg_id; the processor then handles the
//   record in seq order (Processor.ownAck).
// - A refusal (or no answer within SEND_TIMEOUT_MS) marks the entry failed with a
//   reason; retry() tries again. The view lists entries with pendingFor().
// - carry() hands over the entries as ciphertext only (no text) when the page locks, so
//   they can be resent after unlocking without keeping plaintext in memory.
// - Each envelope carries the position the page had processed (prev_seq, prev_hash) and
//   the page's running counter n in the case (v2 §4), fixed at encryption.

import * as c from "./crypto.js";
import { ConnectionLost, ErrorCode, RemoteError, newClientMsgId } from "./protocol.js";

const SEND_TIMEOUT_MS = 15000;
/** An `unavailable` send (the hub's database is away, or the hub is stopping) was not
 * stored: the same bytes go again after about this long (plus up to as much jitter). */
const UNAVAILABLE_RETRY_MS = 500;

export class Outbox {
  /**
   * @param {object} deps me, identity (signs messages), request(type, fields),
   *   isOnline() (a session is up), keys (keys.js), processor (processor.js: cases,
   *   ownAck), onChange(kind, caseId) for the view; carried: entries from carry().
   */
  constructor({ me, identity, request, isOnline, keys, processor, onChange }, carried = []) {
    this.me = me;
    this.identity = identity;
    this.request = request;
    this.isOnline = isOnline;
    this.keys = keys;
    this.processor = processor;
    this.onChange = onChange;
    this.entries = new Map(carried.map((entry) => [entry.cmid, entry]));
  }

  pendingFor(caseId) {
    return [...this.entries.values()].filter((e) => e.caseId === caseId);
  }

  /** Encrypt and send; the entry shows as pending until acked, failed (with retry) on error. */
  async send(caseId, body) {
    const cs = this.processor.cases.get(caseId);
    if (cs === undefined) throw new Error("unknown case");
    const entry = {
      caseId, cmid: newClientMsgId(), body, ts: Date.now(), status: "pending",
      epoch: null, nonce: null, ciphertext: null, error: null, n: null,
    };
    this.entries.set(entry.cmid, entry);
    this.onChange("case", caseId);
    await this.#prepareAndTransmit(cs, entry);
  }

  async retry(cmid) {
    const entry = this.entries.get(cmid);
    if (entry === undefined) return;
    entry.status = "pending";
    entry.error = null;
    this.onChange("case", entry.caseId);
    const cs = this.processor.cases.get(entry.caseId);
    if (cs) await this.#prepareAndTransmit(cs, entry);
  }

  /** A new session: transmit every pending entry again (same bytes). */
  resend() {
    for (const entry of this.entries.values()) {
      if (entry.status === "pending") this.#transmit(entry);
    }
  }

  /** Our message `cmid` is stored and processed: it is no longer pending. */
  stored(cmid) {
    this.entries.delete(cmid);
  }

  /** The entries as ciphertext only, for resending after an unlock (see the header). */
  carry() {
    return [...this.entries.values()]
      .filter((e) => e.ciphertext)
      .map(({ caseId, cmid, epoch, nonce, ciphertext, ts, n }) => ({
        caseId, cmid, epoch, nonce, ciphertext, ts, n, body: null, status: "pending",
      }));
  }

  async #prepareAndTransmit(cs, entry) {
    if (entry.ciphertext === null) {
      try {
        await cs.enqueue(async () => {
          const { epoch, key } = await this.keys.sendEpoch(cs);
          // v2 §4: what we had seen when writing, and our running counter in the case
          // (after our processed messages and every entry still waiting here).
          const n = 1 + Math.max(cs.lastN, ...this.pendingFor(entry.caseId).map((e) => e.n ?? 0));
          const enc = c.encryptMessage(key, this.identity, {
            caseId: entry.caseId,
            epoch,
            senderId: this.me,
            envelope: {
              body: entry.body, ts: entry.ts, clientMsgId: entry.cmid,
              prevSeq: cs.lastSeen, prevHash: cs.prevHash, n,
            },
          });
          Object.assign(entry, { epoch, n, nonce: enc.nonce, ciphertext: enc.ciphertext });
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
      const cs = this.processor.cases.get(entry.caseId);
      if (cs) this.#prepareAndTransmit(cs, entry);
      return;
    }
    if (!this.isOnline()) return; // resent by the resume step
    const timer = setTimeout(() => {
      if (this.entries.get(entry.cmid) === entry && entry.status === "pending") {
        this.#fail(entry, new Error("no answer from the hub"));
      }
    }, SEND_TIMEOUT_MS);
    try {
      const ack = await this.request("msg.send", {
        case_id: entry.caseId,
        epoch: entry.epoch,
        client_msg_id: entry.cmid,
        nonce: entry.nonce,
        ciphertext: entry.ciphertext,
      });
      if (ack.client_msg_id !== entry.cmid || ack.case_id !== entry.caseId) {
        this.#fail(entry, new Error("the hub acknowledged another message"));
        return;
      }
      const cs = this.processor.cases.get(entry.caseId);
      if (cs === undefined) return;
      entry.status = "acked";
      this.processor.ownAck(cs, {
        caseId: entry.caseId, seq: ack.seq, epoch: entry.epoch, senderId: this.me,
        clientMsgId: entry.cmid, nonce: entry.nonce, ciphertext: entry.ciphertext,
        chainHash: c.fromB64(ack.chain_hash), serverTs: Date.now(),
      });
    } catch (err) {
      if (err instanceof RemoteError && err.code === ErrorCode.UNAVAILABLE) {
        // Not stored, and retryable (docs/PROTOCOL.md §9): stays pending, resent shortly
        // with the same bytes (the same client_msg_id, so never stored twice).
        setTimeout(() => {
          if (this.entries.get(entry.cmid) === entry && entry.status === "pending") {
            this.#transmit(entry);
          }
        }, UNAVAILABLE_RETRY_MS * (1 + Math.random()));
        return;
      }
      if (!(err instanceof ConnectionLost)) this.#fail(entry, err);
      // ConnectionLost: stays pending; the resume step resends it with the same bytes.
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
