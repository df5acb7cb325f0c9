// The counselor's live workspace: a thin facade over the page's rooms, which the view
// (ui.js) and the entry point (app.js) use. Python counterpart: chat_client/sdk.py.
//
// Each room is a module named like its counterpart in the Python client (docs/WEB.md
// has the table): supervisor.js (connection lifecycle, reconnect, session set-up),
// connection.js (one WebSocket), outbox.js (unacknowledged sends), processor.js (cases,
// cursors, decryption, receipts and typing), keys.js (directory and case keys) and
// escrow.js (escrow policy and capsules), pins.js (contact pins in the encrypted prefs
// blob) and order.js (the signed order). This file only builds and wires them, and
// states what happens when a session starts.
//
// Resume (docs/PROTOCOL.md §8.14): after a resumable close the supervisor reconnects
// with exponential backoff and jitter, sends hello and auth with the session token
// (logging in again with auth_key if the token is refused); then the processor syncs
// every case from the last seq it processed, the outbox resends every unacknowledged
// msg.send with the same bytes, and escrow deposits the capsules a lost connection kept
// it from depositing. Records are processed in seq order per case, deduplicated by seq,
// and checked against the hash chain; anything that fails a check is kept as an
// unverifiable message, never shown as text from its sender.
//
// Escrow (docs/DISPUTES.md, docs/WEB.md): with a policy installed on the hub, every epoch
// key this page creates carries the page's capsule of K in `case.key`, and for every key
// the client created the page deposits its own capsule with `case.capsule` once it has
// verified the key against the creator's signed commitment. Capsules are sealed only to
// a policy signed by the pinned organisation key (served by /config.json).

import { Escrow } from "./escrow.js";
import { Keys } from "./keys.js";
import { Outbox } from "./outbox.js";
import { Pins } from "./pins.js";
import { Processor } from "./processor.js";
import { Supervisor } from "./supervisor.js";

export class Workspace {
  /**
   * @param {Credentials} creds the unlocked account
   * @param {object} opts onChange(kind, caseId) for the view; outbox carried over a lock;
   *   orgFingerprint: the organisation key the escrow policy must be signed with
   */
  constructor(
    creds,
    { onChange = () => {}, outbox = [], orgFingerprint = null, onSignedOut = () => {} } = {},
  ) {
    this.creds = creds;
    this.onChange = onChange;
    const session = new Supervisor(creds, {
      onSession: (welcome) => this.#onSession(welcome),
      onEvent: (frame) => this.processor.onEvent(frame),
      onStatus: () => onChange("status"),
      onSignedOut,
    });
    const request = (type, fields) => session.request(type, fields);
    this.session = session;
    this.escrow = new Escrow({ request, session, orgFingerprint, onChange });
    this.pins = new Pins({ request, prefsKey: creds.prefsKey, accountId: creds.accountId });
    this.keys = new Keys({
      creds, request, escrow: this.escrow, pins: this.pins, orgFingerprint, onChange,
    });
    this.processor = new Processor({
      me: creds.accountId,
      identity: creds.identity,
      request,
      keys: this.keys,
      onChange,
      onStored: (cmid) => this.outbox.stored(cmid),
    });
    this.outbox = new Outbox(
      {
        me: creds.accountId,
        identity: creds.identity,
        request,
        isOnline: () => session.online,
        keys: this.keys,
        processor: this.processor,
        onChange,
      },
      outbox,
    );
  }

  get me() {
    return this.creds.accountId;
  }

  /** { state, detail } of the connection, for the banner. */
  get status() {
    return this.session.status;
  }

  /** The escrow policy as shown in the escrow panel (null until fetched). */
  get policy() {
    return this.escrow.shown;
  }

  /** case_id -> CaseState (processor.js). */
  get cases() {
    return this.processor.cases;
  }

  start() {
    this.session.start();
  }

  /** Disconnect and drop every key and plaintext (lock, sign-out). Returns the outbox as
   *  ciphertext only, so messages still in flight can be resent after unlocking. */
  stop() {
    this.session.stop();
    this.processor.wipe();
    return this.outbox.carry();
  }

  async logout() {
    try {
      await this.session.request("logout");
    } catch (err) {
      console.warn("logout failed", err);
    }
    this.stop();
  }

  /** Try to reconnect now (after a non-resumable close or during backoff). */
  reconnectNow() {
    this.session.reconnectNow();
  }

  // -- cases ----------------------------------------------------------------------------

  sortedCases() {
    return this.processor.sortedCases();
  }

  unread(cs) {
    return this.processor.unread(cs);
  }

  /** The counselor is looking at the case: clear unread and tell the client (read receipt). */
  markRead(caseId) {
    this.processor.markRead(caseId);
  }

  async closeCase(caseId) {
    await this.session.request("case.close", { case_id: caseId });
    this.processor.markClosed(caseId);
  }

  typing(caseId, active) {
    this.session.request("typing", { case_id: caseId, active }).catch(() => {});
  }

  isTyping(cs) {
    return this.processor.isTyping(cs);
  }

  fingerprintOf(accountId) {
    return this.keys.fingerprintOf(accountId);
  }

  // -- keys and trust (v2) -----------------------------------------------------------------

  /** Our own fingerprint over both keys (what a contact compares). */
  get myFingerprint() {
    return this.keys.myFingerprint;
  }

  /** { handle, fingerprint, mine, safetyNumber } of a verified contact, or null. */
  verification(accountId) {
    return this.keys.verification(accountId);
  }

  keyChangeVerification(accountId) {
    return this.keys.keyChangeVerification(accountId);
  }

  /** account_id -> { error: KeyChanged, entry }: contacts whose keys changed. */
  get keyProblems() {
    return this.keys.problems;
  }

  /** Why the contact pins could not be read (altered or rolled back), or null. */
  get prefsProblem() {
    return this.keys.prefsProblem;
  }

  /** Pin the keys the hub now presents for `accountId` (after comparing the safety number). */
  trustNewKeys(accountId) {
    return this.keys.trustNewKeys(accountId);
  }

  /** A plain note about the case (no organisation key pinned), or undefined. */
  caseNote(caseId) {
    return this.keys.notes.get(caseId);
  }

  /** The pseudonym (handle) an account chose, if the directory told us already. */
  handleOf(accountId) {
    return this.keys.directory.get(accountId)?.handle ?? null;
  }

  /** The pseudonym of a case's client, asking the directory if needed (null if refused). */
  async clientHandle(cs) {
    const entry = await this.keys.entry(cs.info.client_id).catch(() => null);
    return entry?.handle ?? null;
  }

  // -- sending --------------------------------------------------------------------------

  pendingFor(caseId) {
    return this.outbox.pendingFor(caseId);
  }

  /** Encrypt and send; the entry shows as pending until acked, failed (with retry) on error. */
  send(caseId, body) {
    return this.outbox.send(caseId, body);
  }

  retry(cmid) {
    return this.outbox.retry(cmid);
  }

  // -- a new session ----------------------------------------------------------------------

  async #onSession(welcome) {
    const synced = this.processor.resync(welcome);
    this.outbox.resend();
    await synced;
    this.escrow.resume(this.processor.cases.values());
  }
}
