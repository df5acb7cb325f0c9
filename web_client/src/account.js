// Registration, login and unlock (docs/PROTOCOL.md §8.2, §8.3), and what this tab keeps
// between reloads.
//
// Storage rule: sessionStorage holds only what is useless without the passphrase: the
// wrapped identity blob (SecretBox under wrap_key), the session token sealed under the
// same wrap_key, the Argon2id salt and parameters, and public values (handle, ids,
// public keys, per-case read cursors). The passphrase, master key, wrap_key, auth_key
// and the identity secret live only in memory while the page is unlocked.
// localStorage holds, per handle, the Argon2id salt and cost this browser used (kdf.js),
// so a hub cannot lower them or swap the salt at a later login.

import * as c from "./crypto.js";
import { Connection, hubUrl } from "./connection.js";
import { checkFloor, checkPrelogin, rememberKdf } from "./kdf.js";
import { CLIENT_NAME } from "./protocol.js";

const STORE_KEY = "counsel-chat.account.v1";
const CURSOR_KEY = "counsel-chat.cursors.v1";

/** The unlocked account: identity and login keys in memory. Wipe with `forgetSecrets`. */
export class Credentials {
  constructor({ record, identity, authKey, wrapKey, prefsKey, token }) {
    this.accountId = record.account_id;
    this.handle = record.handle;
    this.role = record.role;
    this.identity = identity;
    this.authKey = authKey; // renews an expired token without asking for the passphrase
    this.wrapKey = wrapKey;
    this.prefsKey = prefsKey; // opens the encrypted contact pins stored on the hub (pins.js)
    this.token = token;
    // A version-1 account whose box key the hub holds no signature for: the session
    // sends `account.attest` once authenticated (supervisor.js).
    this.needsAttest = record.attested === false;
    this.cert = record.cert ?? null; // our counselor certificate, if the organisation issued one
  }

  /** A fresh token from `login.result`: keep it, sealed, for the next reload. */
  saveToken(token) {
    this.token = token;
    const record = storedAccount();
    if (record && record.account_id === this.accountId) {
      record.token_box = c.toB64(c.seal(c.utf8(token), this.wrapKey));
      sessionStorage.setItem(STORE_KEY, JSON.stringify(record));
    }
  }

  /** The hub now holds our box key signature (`account.attest` answered). */
  markAttested() {
    this.needsAttest = false;
    const record = storedAccount();
    if (record && record.account_id === this.accountId) {
      record.attested = true;
      sessionStorage.setItem(STORE_KEY, JSON.stringify(record));
    }
  }

  forgetSecrets() {
    c.wipeIdentity(this.identity);
    c.wipe(this.authKey, this.wrapKey, this.prefsKey);
    this.identity = null;
    this.authKey = null;
    this.wrapKey = null;
    this.prefsKey = null;
    this.token = null;
  }
}

export function storedAccount() {
  try {
    const record = JSON.parse(sessionStorage.getItem(STORE_KEY) ?? "null");
    return record && typeof record.handle === "string" ? record : null;
  } catch {
    return null;
  }
}

export function forgetAccount() {
  sessionStorage.removeItem(STORE_KEY);
  sessionStorage.removeItem(CURSOR_KEY);
}

/** Per-case read cursors (seq numbers only): unread counts survive a reload. */
export function loadCursors() {
  try {
    return JSON.parse(sessionStorage.getItem(CURSOR_KEY) ?? "{}") ?? {};
  } catch {
    return {};
  }
}

export function saveCursors(cursors) {
  sessionStorage.setItem(CURSOR_KEY, JSON.stringify(cursors));
}

/** One short-lived unauthenticated connection for register/prelogin/login. */
async function withConnection(fn) {
  const conn = new Connection(hubUrl());
  await conn.open();
  try {
    return await fn(conn);
  } finally {
    conn.close(1000, "done");
  }
}

function keep(result, { handle, salt, opslimit, memlimit, wrapKey }) {
  rememberKdf(handle, { salt: c.toB64(salt), opslimit, memlimit });
  const record = {
    handle,
    account_id: result.account_id,
    role: result.role,
    salt: c.toB64(salt),
    opslimit,
    memlimit,
    wrapped_keys: result.wrapped_keys,
    sign_pk: result.sign_pk,
    box_pk: result.box_pk,
    attested: result.box_sig !== null,
    cert: result.cert,
    token_box: c.toB64(c.seal(c.utf8(result.token), wrapKey)),
  };
  sessionStorage.setItem(STORE_KEY, JSON.stringify(record));
  return record;
}

/** The hub's login answer names other keys than the ones the passphrase unlocked, or a
 *  box key signature that does not verify: the hub is not to be trusted. */
export class AccountKeysRefused extends c.CryptoError {
  constructor() {
    super("The hub returned public keys that do not match this account (or a box key " +
      "signature that does not verify). Do not use this hub; tell your organisation.");
    this.name = "AccountKeysRefused";
  }
}

function checkKeys(identity, result) {
  let ok =
    c.equalBytes(identity.signPk, c.fromB64(result.sign_pk)) &&
    c.equalBytes(identity.boxPk, c.fromB64(result.box_pk));
  if (ok && result.box_sig !== null) {
    try {
      c.verifyBoxKey(identity.signPk, identity.boxPk, c.fromB64(result.box_sig));
    } catch {
      ok = false;
    }
  }
  if (!ok) {
    c.wipeIdentity(identity);
    throw new AccountKeysRefused();
  }
}

/**
 * Create a counselor account with an invite code: keys are made here, wrapped under the
 * passphrase, and only the wrapped blob and public keys are uploaded. Then log in on the
 * same connection (no second Argon2id run).
 */
export async function register({ handle, passphrase, invite }) {
  await c.ready();
  return withConnection(async (conn) => {
    const challenge = await conn.request("hello", { client: CLIENT_NAME });
    // The hub announces the Argon2id cost its accounts use; the page registers with it
    // only if it is at least the page's own floor (kdf.js), never below.
    const opslimit = challenge.min_opslimit;
    const memlimit = challenge.min_memlimit;
    checkFloor(opslimit, memlimit);
    const salt = c.newSalt();
    const { authKey, wrapKey, prefsKey } = c.deriveLoginKeys(passphrase, salt, opslimit, memlimit);
    const identity = c.generateIdentity();
    await conn.request("register", {
      handle,
      salt,
      opslimit,
      memlimit,
      auth_key: authKey,
      sign_pk: identity.signPk,
      box_pk: identity.boxPk,
      box_sig: c.signBoxKey(identity),
      wrapped_keys: c.wrapIdentity(identity, wrapKey),
      invite: invite || null,
    });
    const result = await conn.request("login", { handle, auth_key: authKey });
    checkKeys(identity, result);
    const record = keep(result, { handle, salt, opslimit, memlimit, wrapKey });
    return new Credentials({ record, identity, authKey, wrapKey, prefsKey, token: result.token });
  });
}

/** Log in from any browser: prelogin (salt, KDF cost), derive, login, unwrap. */
export async function login({ handle, passphrase }) {
  await c.ready();
  return withConnection(async (conn) => {
    const pre = await conn.request("prelogin", { handle });
    checkPrelogin(handle, pre); // before the passphrase is used: KdfDowngrade
    const salt = c.fromB64(pre.salt);
    const { authKey, wrapKey, prefsKey } = c.deriveLoginKeys(
      passphrase, salt, pre.opslimit, pre.memlimit,
    );
    const result = await conn.request("login", { handle, auth_key: authKey });
    const identity = c.unwrapIdentity(c.fromB64(result.wrapped_keys), wrapKey);
    checkKeys(identity, result);
    const record = keep(result, {
      handle, salt, opslimit: pre.opslimit, memlimit: pre.memlimit, wrapKey,
    });
    return new Credentials({ record, identity, authKey, wrapKey, prefsKey, token: result.token });
  });
}

/** Unlock the account kept by this tab with its passphrase (no network needed). */
export async function unlock(passphrase) {
  await c.ready();
  const record = storedAccount();
  if (record === null) throw new Error("no account is kept in this tab");
  const { authKey, wrapKey, prefsKey } = c.deriveLoginKeys(
    passphrase, c.fromB64(record.salt), record.opslimit, record.memlimit,
  );
  let identity;
  try {
    identity = c.unwrapIdentity(c.fromB64(record.wrapped_keys), wrapKey);
  } catch (err) {
    c.wipe(authKey, wrapKey, prefsKey);
    throw err;
  }
  let token = null;
  try {
    token = new TextDecoder().decode(c.unseal(c.fromB64(record.token_box), wrapKey));
  } catch {
    token = null; // log in again with auth_key when authenticating
  }
  return new Credentials({ record, identity, authKey, wrapKey, prefsKey, token });
}
