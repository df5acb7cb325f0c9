// The signed envelope's one canonical encoding (docs/PROTOCOL.md, "canonical encoding").
// Python counterpart: protocol/crypto.py Envelope (msgspec).
//
// Contract:
// - encodeEnvelope writes msgspec's JSON of the Envelope struct: fields in declared order,
//   no whitespace, strings escaped as msgspec escapes them (`"` `\` and control
//   characters; everything else as UTF-8), bytes as standard base64 with padding.
//   JSON.stringify escapes exactly alike for well-formed strings, which are the only ones
//   allowed.
// - decodeEnvelope is strict: the bytes must be UTF-8 (fatal decoder), one JSON object with
//   exactly the declared fields, of the declared types and ranges, no lone surrogate in
//   any string; then it re-encodes the value and requires the very same bytes. That one
//   comparison refuses whitespace, another field order, duplicate keys, `1.0` or `1e3`
//   for an integer, `-0`, escapes msgspec would not write (`\u0041`, `\/`), and a missing
//   field that has a default (`kind`). Every refusal is a NonCanonical (a CryptoError):
//   the page and chat-unseal reach the same verdict on the same signed bytes.
// - Decoding never applies the sender's length limit (MAX_MESSAGE_CHARS): a signed body
//   either verifies in both implementations or in neither.

import { CryptoError } from "./cryptoerror.js";

const ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const LONE_SURROGATE = /\p{Cs}/u;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The envelope's bytes are not the one canonical encoding (or not an envelope at all). */
export class NonCanonical extends CryptoError {
  constructor(reason) {
    super(`signed envelope is not canonical (${reason})`);
    this.name = "NonCanonical";
    this.reason = reason;
  }
}

// Standard base64 with padding (RFC 4648 §4), as msgspec writes bytes; atob/btoa need no
// WebAssembly, so the reader works before libsodium is ready.
const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
const unb64 = (text) => Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));

// The Envelope struct, in declared order: [wire name, page name, type check].
// Integers up to 2^53 (protocol/frames.py Seq, Millis): past it a JS number is inexact,
// and the re-encoding check refuses any digit string it did not hold exactly.
const MAX_INT = 2 ** 53;
const isInt = (min) => (v) =>
  Number.isInteger(v) && !Object.is(v, -0) && v >= min && v <= MAX_INT;
const isStr = (v) => typeof v === "string" && !LONE_SURROGATE.test(v);
const isKey32 = (v) => {
  if (typeof v !== "string" || v.length !== 44) return false;
  try {
    return unb64(v).length === 32;
  } catch {
    return false;
  }
};

export const ENVELOPE_FIELDS = Object.freeze([
  ["kind", "kind", (v) => v === "text"],
  ["body", "body", isStr],
  ["ts", "ts", isInt(0)],
  ["client_msg_id", "clientMsgId", (v) => typeof v === "string" && ID_RE.test(v)],
  // The sender's view when writing (the last record it had seen, 0 and 32 zero bytes if
  // none) and its running counter in the case: participants sign the order.
  ["prev_seq", "prevSeq", isInt(0)],
  ["prev_hash", "prevHash", isKey32],
  ["n", "n", isInt(1)],
]);

/** Envelope bytes for { body, ts, clientMsgId, prevSeq, prevHash, n } (kind is always
 *  "text"; prevHash as bytes). */
export function encodeEnvelope(envelope) {
  const value = { kind: "text", ...envelope };
  const wire = {};
  for (const [name, key, check] of ENVELOPE_FIELDS) {
    const field = value[key];
    const v = field instanceof Uint8Array ? b64(field) : field;
    if (!check(v)) throw new TypeError(`envelope field ${name} is invalid`);
    wire[name] = v;
  }
  return encoder.encode(JSON.stringify(wire));
}

/** Strict decode (see the header): { kind, body, ts, clientMsgId, prevSeq, prevHash
 *  (bytes), n } or NonCanonical. */
export function decodeEnvelope(bytes) {
  let text;
  let value;
  try {
    text = strictDecoder.decode(bytes);
  } catch {
    throw new NonCanonical("not UTF-8");
  }
  try {
    value = JSON.parse(text);
  } catch {
    throw new NonCanonical("not JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new NonCanonical("not an object");
  }
  const names = Object.keys(value);
  for (const name of names) {
    if (!ENVELOPE_FIELDS.some(([wire]) => wire === name)) {
      throw new NonCanonical(`unknown field ${JSON.stringify(name)}`);
    }
  }
  const out = {};
  for (const [name, key, check] of ENVELOPE_FIELDS) {
    if (!Object.hasOwn(value, name)) throw new NonCanonical(`missing field ${name}`);
    if (!check(value[name])) throw new NonCanonical(`field ${name} has the wrong type or value`);
    out[key] = value[name];
  }
  const again = encoder.encode(JSON.stringify(Object.fromEntries(
    ENVELOPE_FIELDS.map(([name]) => [name, value[name]]),
  )));
  if (again.length !== bytes.length || !again.every((b, i) => b === bytes[i])) {
    throw new NonCanonical("bytes differ from the canonical encoding");
  }
  for (const [name, key, check] of ENVELOPE_FIELDS) {
    if (check === isKey32) out[key] = unb64(value[name]);
  }
  return out;
}
