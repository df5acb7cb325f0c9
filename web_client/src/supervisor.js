// The connection supervisor: one authenticated connection to the hub at a time, for as
// long as the page is unlocked. Python counterpart: chat_client/supervisor.py.
//
// Contract:
// - start() runs the supervisor loop: connect, `hello`, `auth` with the session token
//   (a fresh `login` with auth_key if the token is missing or refused), then hand the
//   `welcome` to onSession (resync, resend) before the status says "online" (a version-1
//   account first signs its box key: `account.attest`). When the
//   connection ends it reconnects with exponential backoff and jitter if the close is
//   resumable (protocol.js isResumable: the hub's RESUMABLE_CLOSE_CODES, generated from
//   protocol/errors.py, a drop without a close frame, or a connection this page gave up
//   on); otherwise it shows why and waits for reconnectNow().
// - Every connection gets a new `generation` (1, 2, ...): state tied to one session (a
//   cached escrow policy) records the generation it belongs to.
// - request() sends on the current authenticated connection, or rejects with
//   ConnectionLost; nothing is retried here (the resume step redoes lost work).
// - Events of a connection that is no longer current are dropped.
// - stop() ends the loop for good (lock, sign-out).

import * as c from "./crypto.js";
import { Connection, hubUrl } from "./connection.js";
import {
  CLIENT_NAME,
  ConnectionLost,
  ErrorCode,
  RemoteError,
  closeReason,
  isResumable,
  isSignedOut,
} from "./protocol.js";

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30000;

export class Supervisor {
  /**
   * @param {Credentials} creds the unlocked account (identity, token, auth_key)
   * @param {object} hooks onSession(welcome) brings the page up to date on a new
   *   connection; onEvent(frame) gets the hub's events; onStatus() is told of changes
   *   to `status`; onSignedOut(reason) is called once when the hub ended the session
   *   for good (token expired, or signed out everywhere): the supervisor has stopped.
   */
  constructor(creds, { onSession, onEvent, onStatus, onSignedOut = () => {} }) {
    this.creds = creds;
    this.onSession = onSession;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onSignedOut = onSignedOut;
    this.conn = null; // the current authenticated connection
    this.generation = 0;
    this.status = { state: "connecting", detail: "" };
    this.stopped = false;
    this.wakeUp = null;
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

  stop() {
    this.stopped = true;
    this.conn?.close(1000, "locked");
    this.wakeUp?.();
  }

  /** Try to reconnect now (after a non-resumable close or during backoff). */
  reconnectNow() {
    this.wakeUp?.();
  }

  /** Send a request on the current connection; rejects with ConnectionLost without one. */
  request(type, fields) {
    if (this.conn === null || !this.conn.isOpen) return Promise.reject(new ConnectionLost());
    return this.conn.request(type, fields);
  }

  get online() {
    return this.conn !== null;
  }

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
        if (this.creds.needsAttest) await this.#attest(conn);
        if (this.stopped) break;
        this.generation += 1;
        this.conn = conn;
        this.#setStatus("syncing", "");
        await this.onSession(welcome);
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
      if (isSignedOut(info)) {
        this.stopped = true;
        this.#setStatus("offline", `${closeReason(info.code)}.`);
        this.onSignedOut(closeReason(info.code));
        break;
      }
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

  /** A version-1 account: sign our own box key once, so peers can verify it (v2 §1). */
  async #attest(conn) {
    await conn.request("account.attest", { box_sig: c.signBoxKey(this.creds.identity) });
    this.creds.markAttested();
  }

  #onEvent(conn, frame) {
    if (conn !== this.conn && this.conn !== null) return;
    this.onEvent(frame);
  }

  #setStatus(state, detail) {
    this.status = { state, detail };
    this.onStatus();
  }
}
