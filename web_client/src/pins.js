// Contact pins (protocol v2 §3): trust on first use, hard failure on change.
// Python counterpart: the `contacts` store of chat_client's key store.
//
// Contract:
// - The pins live in the account's preferences blob on the hub (`prefs.get` / `prefs.put`),
//   sealed under prefs_key (crypto.sealPrefs; derived from the passphrase, so the hub can
//   neither read nor forge them): {"contacts": {account_id: {handle, sign_pk, box_pk,
//   first_seen}}}, keys as base64. Other top-level fields of the blob are kept as found.
// - check(entry) compares a verified directory entry with its pin: KeyChanged if either
//   key differs (the page then neither encrypts to that account nor trusts its messages);
//   remember(entry) pins an account seen for the first time. Writes are compare-and-swap
//   on the blob's version: on `conflict` (another tab or device wrote first) the blob is
//   read again, merged, and written once more.
// - A blob that does not open is refused (CryptoError) rather than replaced: a hub that
//   alters it gets no new pins written over the old ones. This browser also remembers
//   the highest blob version it has seen per account (localStorage) and refuses an older
//   one, or none, from then on (a rollback that would drop pins). On a browser that
//   never saw the blob, a hub that withholds it makes the page pin afresh (docs/WEB.md).

import * as c from "./crypto.js";
import { ErrorCode, RemoteError } from "./protocol.js";

const SAVE_ATTEMPTS = 3;

/** A contact's keys differ from the ones pinned for it. */
export class KeyChanged extends c.CryptoError {
  constructor({ accountId, handle, oldFp, newFp }) {
    super(
      `The keys of ${handle} changed: fingerprint ${oldFp} was pinned, the hub now presents ` +
        `${newFp}. This page will not encrypt to ${handle} or show their messages as ` +
        "verified. Compare the safety number with them in person or by phone; only if it " +
        "matches, choose \"Trust the new keys\".",
    );
    this.name = "KeyChanged";
    this.short = `the keys of ${handle} changed (see the security warning)`;
    this.accountId = accountId;
    this.handle = handle;
    this.oldFp = oldFp;
    this.newFp = newFp;
  }
}

export class Pins {
  /** @param {object} deps request(type, fields); prefsKey (crypto.deriveLoginKeys). */
  constructor({ request, prefsKey, accountId = null }) {
    this.request = request;
    this.prefsKey = prefsKey;
    this.accountId = accountId; // keys the highest version this browser saw
    this.contacts = new Map(); // account_id -> { handle, sign_pk, box_pk, first_seen }
    this.rest = {}; // the blob's other fields, written back unchanged
    this.version = 0;
    this.loading = null;
  }

  /** Read the blob once (again after a failure). */
  load() {
    this.loading ??= this.#read().catch((err) => {
      this.loading = null;
      throw err;
    });
    return this.loading;
  }

  async #read() {
    const result = await this.request("prefs.get", {});
    this.#adopt(result);
  }

  #adopt(result) {
    const seen = seenVersion(this.accountId);
    if (result.version < seen || (seen > 0 && result.blob === null)) {
      throw new c.CryptoError(
        `the hub served older preferences (version ${result.version}; this browser saw ` +
          `version ${seen}): contact pins may have been rolled back`,
      );
    }
    this.version = result.version;
    rememberVersion(this.accountId, result.version);
    if (result.blob === null) return;
    const plain = c.openPrefs(this.prefsKey, c.fromB64(result.blob));
    let value;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain));
    } catch {
      throw new c.CryptoError("the stored preferences are not readable");
    }
    const { contacts = {}, ...rest } = value ?? {};
    this.rest = rest;
    for (const [accountId, pin] of Object.entries(contacts)) {
      if (typeof pin?.sign_pk === "string" && typeof pin?.box_pk === "string") {
        this.contacts.set(accountId, pin); // the stored pin wins over one made meanwhile
      }
    }
  }

  /** KeyChanged if `entry` ({ accountId, handle, signPk, boxPk }) differs from its pin;
   *  true if it is pinned (and the same), false if it was never seen. */
  check(entry) {
    const pin = this.contacts.get(entry.accountId);
    if (pin === undefined) return false;
    const signPk = c.fromB64(pin.sign_pk);
    const boxPk = c.fromB64(pin.box_pk);
    if (c.equalBytes(signPk, entry.signPk) && c.equalBytes(boxPk, entry.boxPk)) return true;
    throw new KeyChanged({
      accountId: entry.accountId,
      handle: pin.handle,
      oldFp: c.fingerprintV2(signPk, boxPk),
      newFp: c.fingerprintV2(entry.signPk, entry.boxPk),
    });
  }

  /** Pin `entry` (first use, or `replace` after the counselor compared the safety number). */
  async remember(entry, { replace = false } = {}) {
    const pin = {
      handle: entry.handle,
      sign_pk: c.toB64(entry.signPk),
      box_pk: c.toB64(entry.boxPk),
      first_seen: Date.now(),
    };
    for (let attempt = 1; ; attempt += 1) {
      if (replace || !this.contacts.has(entry.accountId)) this.contacts.set(entry.accountId, pin);
      try {
        await this.#write();
        return;
      } catch (err) {
        if (!(err instanceof RemoteError && err.code === ErrorCode.CONFLICT)) throw err;
        if (attempt >= SAVE_ATTEMPTS) throw err;
        const mine = new Map(this.contacts);
        await this.#read(); // someone wrote first: take theirs, add what we pinned
        for (const [id, p] of mine) if (!this.contacts.has(id)) this.contacts.set(id, p);
        if (!replace) this.check(entry); // their pin may differ from the key we saw
      }
    }
  }

  async #write() {
    const value = { ...this.rest, contacts: Object.fromEntries(this.contacts) };
    const blob = c.sealPrefs(this.prefsKey, c.utf8(JSON.stringify(value)));
    const result = await this.request("prefs.put", { blob, version: this.version });
    this.version = result.version;
    rememberVersion(this.accountId, result.version);
  }
}

const VERSION_KEY = "counsel-chat.prefs-version.v1";

function versions() {
  try {
    const value = JSON.parse(globalThis.localStorage?.getItem(VERSION_KEY) ?? "{}");
    return value !== null && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

function seenVersion(accountId) {
  const v = accountId === null ? 0 : versions()[accountId];
  return Number.isSafeInteger(v) ? v : 0;
}

function rememberVersion(accountId, version) {
  if (accountId === null || globalThis.localStorage === undefined) return;
  if (version <= seenVersion(accountId)) return;
  const all = versions();
  all[accountId] = version;
  localStorage.setItem(VERSION_KEY, JSON.stringify(all));
}
