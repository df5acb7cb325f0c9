// Frames of docs/PROTOCOL.md §2-§10: encoding, request ids, client_msg_ids, error codes
// and close codes. The hub validates every frame strictly, so these helpers only build
// well-formed ones; byte fields are passed in as Uint8Array and sent as standard base64.

import { fromB64, randomBytes, toB64 } from "./crypto.js";

export const PROTOCOL_VERSION = 1;
export const CLIENT_NAME = "counsel-chat-web/1";

/** Closes after which the client reconnects and resumes (§10); 1006 = no close frame. */
export const RESUMABLE_CLOSE_CODES = new Set([1001, 1006, 1011, 1013, 4001, 4008]);

export const CLOSE_REASONS = {
  1000: "signed out",
  1007: "the hub refused malformed data from this page",
  1009: "a frame was too large",
  4009: "this account signed in on too many devices; this page was disconnected",
};

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

/** Parse a server frame; undefined for anything that is not a v1 JSON object. */
export function decodeFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame)) return undefined;
  if (typeof frame.type !== "string" || (frame.v !== undefined && frame.v !== 1)) return undefined;
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

export const HANDLE_RE = /^[a-z0-9][a-z0-9_.-]{2,31}$/;
