// Frames of docs/PROTOCOL.md §2-§10: encoding, request ids, client_msg_ids, error codes
// and close codes. The hub validates every frame strictly, so these helpers only build
// well-formed ones; byte fields are passed in as Uint8Array and sent as standard base64.
//
// The protocol's own constants (close codes and which of them are resumable, error codes,
// limits, handle syntax) are not written here: they are generated from protocol/ into
// ./generated/protocol.js (scripts/make_web_protocol.py) and re-exported, so the page and
// the Python client take them from one place.

import { fromB64, randomBytes, toB64 } from "./crypto.js";
import {
  CloseCode,
  HANDLE_MAX_CHARS,
  HANDLE_MIN_CHARS,
  HANDLE_PATTERN,
  PROTOCOL_VERSION,
  RESUMABLE_CLOSE_CODES,
} from "./generated/protocol.js";

export * from "./generated/protocol.js";

export const CLIENT_NAME = "counsel-chat-web/1";

/** RFC 6455 §7.1.5: the connection dropped without a close frame (a network failure).
 *  Browsers report it; the hub never sends it. */
export const ABNORMAL_CLOSURE = 1006;

const resumable = new Set(RESUMABLE_CLOSE_CODES);

/** How a connection ended: `local` when this page dropped it itself to try again. */
export function isResumable({ code, local = false }) {
  return local || code === ABNORMAL_CLOSURE || resumable.has(code);
}

/** Closes after which the page drops its keys and returns to sign-in (the token is
 *  spent: 4002 at its expiry, 4004 after a logout on every device). */
export function isSignedOut({ code }) {
  return code === CloseCode.SESSION_EXPIRED || code === CloseCode.SIGNED_OUT;
}

/** What the banner says after a close the page does not resume by itself. */
export function closeReason(code) {
  switch (code) {
    case CloseCode.NORMAL:
      return "signed out";
    case CloseCode.INVALID_DATA:
      return "the hub refused malformed data from this page";
    case CloseCode.TOO_BIG:
      return "a frame was too large";
    case CloseCode.AUTH_TIMEOUT:
      return "signing in to the hub took too long";
    case CloseCode.SESSION_EXPIRED:
      return "signed out: session expired";
    case CloseCode.SIGNED_OUT:
      return "signed out on every device";
    case CloseCode.SESSION_LIMIT:
    case CloseCode.REPLACED:
      return "this account signed in on too many devices; this page was disconnected";
    default:
      return `the hub closed the connection (code ${code})`;
  }
}

/** An `error` frame answering one of our requests (branch on `code`, never `message`). */
export class RemoteError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "RemoteError";
    this.code = code;
  }
}

/** The connection went away before the request was answered. */
export class ConnectionLost extends Error {
  constructor() {
    super("connection lost");
    this.name = "ConnectionLost";
  }
}

/** JSON text of a client frame: type first, then the fields, then v (§2). */
export function encodeFrame(type, id, fields) {
  const frame = { type, id };
  for (const [name, value] of Object.entries(fields)) {
    frame[name] = value instanceof Uint8Array ? toB64(value) : value;
  }
  frame.v = PROTOCOL_VERSION;
  return JSON.stringify(frame);
}

/** Parse a server frame; undefined for anything that is not a JSON object of this version. */
export function decodeFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame)) return undefined;
  if (typeof frame.type !== "string" || (frame.v !== undefined && frame.v !== PROTOCOL_VERSION)) {
    return undefined;
  }
  return frame;
}

/** Decode the base64 byte fields of a MessageRecord (§3) for crypto and chain checks. */
export function recordFromWire(m) {
  return {
    caseId: m.case_id,
    seq: m.seq,
    epoch: m.epoch,
    senderId: m.sender_id,
    clientMsgId: m.client_msg_id,
    nonce: fromB64(m.nonce),
    ciphertext: fromB64(m.ciphertext),
    chainHash: fromB64(m.chain_hash),
    serverTs: m.server_ts,
  };
}

/** 16 random bytes as URL-safe base64 without padding: 22 chars of [A-Za-z0-9_-] (§8.7). */
export function newClientMsgId() {
  return toB64(randomBytes(16)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const HANDLE_RE = new RegExp(HANDLE_PATTERN);

/** A handle the hub accepts (protocol/frames.py Handle). */
export function isValidHandle(handle) {
  return handle.length >= HANDLE_MIN_CHARS && handle.length <= HANDLE_MAX_CHARS &&
    HANDLE_RE.test(handle);
}
