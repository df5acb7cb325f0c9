// The page's own rule for the Argon2id cost of a passphrase (docs/PROTOCOL.md §6 of the
// v2 design; Python counterpart: chat_client/accounts.py's floor).
//
// Contract:
// - The floor is libsodium's INTERACTIVE cost (opslimit 2, memlimit 64 MiB). The page
//   never derives a key from a passphrase at a lower cost, whatever the hub announces
//   (`challenge` at registration) or answers (`prelogin` at login): a hub that asks for
//   less is refused with KdfDowngrade before anything derived from the passphrase is sent.
// - The only exception is the test suite: weak costs are allowed when the hub serving the
//   page says in /config.json that it runs the test KDF profile (`test_kdf: true`) AND the
//   page's URL carries `?weakkdf=1`. Both come from whoever serves the page, who could
//   serve other code anyway, so this opens nothing a hostile hub did not already have.
// - Per handle, the (salt, opslimit, memlimit) this browser registered or logged in with are
//   remembered in localStorage (public values only) and a prelogin answer that differs is
//   refused: a hub cannot swap the salt or lower the cost of a handle this browser knows.

export const KDF_FLOOR = Object.freeze({ opslimit: 2, memlimit: 64 * 1024 * 1024 });
const PIN_KEY = "counsel-chat.kdf.v1";

/** The hub asked for a key derivation this page refuses (a weaker or changed cost/salt).
 *  Nothing derived from the passphrase was sent. */
export class KdfDowngrade extends Error {
  constructor(message) {
    super(message);
    this.name = "KdfDowngrade";
  }
}

let weakAllowed = false;

/** Decide once at start (app.js): the hub's /config.json and the page's URL. */
export function configureWeakKdf(config, search) {
  weakAllowed = config?.test_kdf === true && new URLSearchParams(search).get("weakkdf") === "1";
  return weakAllowed;
}

export const weakKdfAllowed = () => weakAllowed;

const describe = (opslimit, memlimit) =>
  `opslimit ${opslimit}, memlimit ${Math.round(memlimit / 1024)} KiB`;

/** Throw KdfDowngrade if (opslimit, memlimit) is below the floor (and weak is not allowed). */
export function checkFloor(opslimit, memlimit, what = "The hub") {
  if (!Number.isSafeInteger(opslimit) || !Number.isSafeInteger(memlimit)) {
    throw new KdfDowngrade(`${what} sent a malformed key-derivation cost`);
  }
  if (weakAllowed) return;
  if (opslimit < KDF_FLOOR.opslimit || memlimit < KDF_FLOOR.memlimit) {
    throw new KdfDowngrade(
      `${what} asked for a weaker passphrase key derivation (${describe(opslimit, memlimit)}) ` +
        `than this page ever uses (${describe(KDF_FLOOR.opslimit, KDF_FLOOR.memlimit)}). ` +
        "Your passphrase was not used and nothing was sent. Report this to your organisation.",
    );
  }
}

function pins() {
  try {
    const value = JSON.parse(localStorage.getItem(PIN_KEY) ?? "{}");
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

/** What this browser remembers for `handle`: { salt (base64), opslimit, memlimit } or null. */
export function pinnedKdf(handle) {
  const pin = pins()[handle];
  return pin && typeof pin.salt === "string" ? pin : null;
}

/** Remember the parameters `handle` registered or logged in with (public values). */
export function rememberKdf(handle, { salt, opslimit, memlimit }) {
  const all = pins();
  all[handle] = { salt, opslimit, memlimit };
  localStorage.setItem(PIN_KEY, JSON.stringify(all));
}

/**
 * Check a prelogin answer ({ salt (base64), opslimit, memlimit }) for `handle`: at or above
 * the floor, and equal to what this browser remembers for the handle, if anything.
 */
export function checkPrelogin(handle, pre) {
  checkFloor(pre.opslimit, pre.memlimit, "The hub");
  const pin = pinnedKdf(handle);
  if (pin === null) return;
  if (pin.salt !== pre.salt || pin.opslimit !== pre.opslimit || pin.memlimit !== pre.memlimit) {
    throw new KdfDowngrade(
      `The hub answered other passphrase key-derivation settings for ${handle} than this ` +
        `browser remembers (${describe(pin.opslimit, pin.memlimit)} with the salt it had; ` +
        `now ${describe(pre.opslimit, pre.memlimit)}${pin.salt === pre.salt ? "" : " and another salt"}). ` +
        "Your passphrase was not used and nothing was sent. Report this to your organisation.",
    );
  }
}
