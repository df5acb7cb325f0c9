// The crypto envelope of docs/PROTOCOL.md §12, in the browser, over libsodium.js (sumo).
//
// Mirrors protocol/crypto.py and protocol/chain.py byte for byte; docs/test-vectors.json
// is the contract (tests/web/test_vectors_browser.py recomputes it in Chromium).
// Everything here is a pure function over Uint8Array values; nothing touches the DOM,
// the network or storage.

import sodium from "libsodium-wrappers-sumo";
import { CryptoError } from "./cryptoerror.js";
import { decodeEnvelope, encodeEnvelope } from "./envelope.js";
import { MAX_MESSAGE_CHARS, PADDING_BUCKETS } from "./generated/protocol.js";

export const KEY_BYTES = 32;
export const SIG_BYTES = 64;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const GENESIS = new Uint8Array(32);

const encoder = new TextEncoder();

export { CryptoError } from "./cryptoerror.js";
export { ENVELOPE_FIELDS, NonCanonical, decodeEnvelope, encodeEnvelope } from "./envelope.js";

let readyPromise = null;

/** Resolve once libsodium's WebAssembly module is instantiated. */
export function ready() {
  readyPromise ??= sodium.ready;
  return readyPromise;
}

// -- bytes -------------------------------------------------------------------------

export const utf8 = (text) => encoder.encode(text);
export const toHex = (bytes) => sodium.to_hex(bytes);
export const fromHex = (hex) => sodium.from_hex(hex);
export const toB64 = (bytes) => sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
export const fromB64 = (text) => sodium.from_base64(text, sodium.base64_variants.ORIGINAL);
export const randomBytes = (n) => sodium.randombytes_buf(n);
export const equalBytes = (a, b) => a.length === b.length && sodium.memcmp(a, b);

/** Overwrite secret bytes in place (best effort: JS may hold copies elsewhere). */
export function wipe(...buffers) {
  for (const buf of buffers) if (buf instanceof Uint8Array) sodium.memzero(buf);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const asBytes = (part) => (typeof part === "string" ? utf8(part) : part);

/** lp(p1..pn): each part as a 4-byte big-endian length, then its bytes (§12.1). */
export function lp(...parts) {
  const chunks = [];
  for (const raw of parts) {
    const p = asBytes(raw);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, p.length, false);
    chunks.push(len, p);
  }
  return concat(...chunks);
}

/** u64(n): 8 bytes big-endian; n is a safe integer (Seq/Epoch are ≤ 2^53). */
export function u64(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), false);
  return out;
}

/**
 * BLAKE2b(data, key, person, n) with a 16-zero-byte salt (§12.1).
 *
 * libsodium.js's wrapper for crypto_generichash_blake2b_salt_personal hashes an empty
 * message only (it is meant for key derivation), so the message-taking C function is
 * called directly on the WebAssembly heap.
 */
export function blake2b(data, { key = null, person, size = 32 }) {
  const lib = sodium.libsodium;
  const personal = asBytes(person);
  if (personal.length !== 16) throw new Error("personalisation must be 16 bytes");
  const msg = asBytes(data);
  const keyLen = key ? key.length : 0;
  const total = size + msg.length + keyLen + 16 + 16;
  const base = lib._malloc(Math.max(total, 1));
  try {
    const heap = lib.HEAPU8;
    const outPtr = base;
    const msgPtr = outPtr + size;
    const keyPtr = msgPtr + msg.length;
    const saltPtr = keyPtr + keyLen;
    const personPtr = saltPtr + 16;
    heap.set(msg, msgPtr);
    if (key) heap.set(key, keyPtr);
    heap.fill(0, saltPtr, saltPtr + 16);
    heap.set(personal, personPtr);
    // inlen is an unsigned long long, passed as two 32-bit halves (low, high).
    const rc = lib._crypto_generichash_blake2b_salt_personal(
      outPtr, size, msgPtr, msg.length, 0, key ? keyPtr : 0, keyLen, saltPtr, personPtr,
    );
    if (rc !== 0) throw new Error("blake2b failed");
    const out = lib.HEAPU8.slice(outPtr, outPtr + size);
    lib.HEAPU8.fill(0, base, base + total);
    return out;
  } finally {
    lib._free(base);
  }
}

// -- login keys (§12.3) --------------------------------------------------------------

export function argon2idMaster(passphrase, salt, opslimit, memlimit) {
  return sodium.crypto_pwhash(
    KEY_BYTES, utf8(passphrase), salt, opslimit, memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
}

/** Argon2id then the BLAKE2b auth/wrap/prefs split. The passphrase is used exactly as typed. */
export function deriveLoginKeys(passphrase, salt, opslimit, memlimit) {
  const master = argon2idMaster(passphrase, salt, opslimit, memlimit);
  try {
    return {
      authKey: blake2b(new Uint8Array(0), { key: master, person: "chat-auth-key-v1" }),
      wrapKey: blake2b(new Uint8Array(0), { key: master, person: "chat-wrap-key-v1" }),
      prefsKey: blake2b(new Uint8Array(0), { key: master, person: "chat-prefs-key-2" }),
    };
  } finally {
    wipe(master);
  }
}

export const newSalt = () => randomBytes(16);

// -- identity (§12.2, §12.4) -----------------------------------------------------------

/** secret = Ed25519 seed (32) || X25519 secret (32). */
export function identityFromSecret(secret) {
  if (secret.length !== 2 * KEY_BYTES) throw new CryptoError("identity secret must be 64 bytes");
  const seed = secret.slice(0, 32);
  const boxSk = secret.slice(32, 64);
  const pair = sodium.crypto_sign_seed_keypair(seed);
  return {
    seed,
    signSk: pair.privateKey,
    signPk: pair.publicKey,
    boxSk,
    boxPk: sodium.crypto_scalarmult_base(boxSk),
  };
}

export function generateIdentity() {
  const secret = randomBytes(64);
  try {
    return identityFromSecret(secret);
  } finally {
    wipe(secret);
  }
}

export function wipeIdentity(identity) {
  if (identity) wipe(identity.seed, identity.signSk, identity.boxSk);
}

export function wrapIdentity(identity, wrapKey, nonce = randomBytes(NONCE_BYTES)) {
  const secret = concat(identity.seed, identity.boxSk);
  try {
    return concat(nonce, sodium.crypto_secretbox_easy(secret, nonce, wrapKey));
  } finally {
    wipe(secret);
  }
}

export function unwrapIdentity(blob, wrapKey) {
  let secret;
  try {
    secret = sodium.crypto_secretbox_open_easy(blob.slice(24), blob.slice(0, 24), wrapKey);
  } catch {
    throw new CryptoError("wrong passphrase or corrupted key blob");
  }
  try {
    return identityFromSecret(secret);
  } finally {
    wipe(secret);
  }
}

/** SecretBox under wrap_key for small local secrets (the session token in storage). */
export function seal(plain, key) {
  const nonce = randomBytes(NONCE_BYTES);
  return concat(nonce, sodium.crypto_secretbox_easy(plain, nonce, key));
}

export function unseal(blob, key) {
  try {
    return sodium.crypto_secretbox_open_easy(blob.slice(24), blob.slice(0, 24), key);
  } catch {
    throw new CryptoError("stored secret does not open");
  }
}

export const sign = (identity, message) => sodium.crypto_sign_detached(message, identity.signSk);

export function verifySignature(signPk, message, sig) {
  let ok = false;
  try {
    ok = sodium.crypto_sign_verify_detached(sig, message, signPk);
  } catch {
    ok = false;
  }
  if (!ok) throw new CryptoError("signature does not verify");
}

/** 40 hex digits in groups of four (§12.11). */
export function fingerprint(publicKey) {
  const hex = toHex(blake2b(publicKey, { person: "chat-fingerprnt1", size: 20 }));
  return hex.match(/.{4}/g).join(" ");
}

// -- account keys: box key signature, fingerprint, safety number (v2) ----------------

export const boxKeyTranscript = (signPk, boxPk) => lp("chat.boxkey.v2", signPk, boxPk);

/** box_sig: the identity key's signature over its own box key. */
export const signBoxKey = (identity) =>
  sign(identity, boxKeyTranscript(identity.signPk, identity.boxPk));

export function verifyBoxKey(signPk, boxPk, sig) {
  verifySignature(signPk, boxKeyTranscript(signPk, boxPk), sig);
}

const fingerprintV2Raw = (signPk, boxPk) =>
  blake2b(lp(signPk, boxPk), { person: "chat-fingerprnt2", size: 20 });

/** An account's fingerprint over both its keys: 40 hex digits in 8 groups of 5. */
export function fingerprintV2(signPk, boxPk) {
  return toHex(fingerprintV2Raw(signPk, boxPk)).match(/.{5}/g).join(" ");
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** The 60 digits two people compare out of band; a and b are { signPk, boxPk }, in
 *  either order (both sides compute the same number). */
export function safetyNumber(a, b) {
  const fa = fingerprintV2Raw(a.signPk, a.boxPk);
  const fb = fingerprintV2Raw(b.signPk, b.boxPk);
  const [lo, hi] = compareBytes(fa, fb) <= 0 ? [fa, fb] : [fb, fa];
  const d = blake2b(lp(lo, hi), { person: "chat-safetynum-2", size: 64 });
  const groups = [];
  for (let i = 0; i < 12; i += 1) {
    let value = 0;
    for (const byte of d.slice(5 * i, 5 * i + 5)) value = value * 256 + byte; // < 2^40: exact
    groups.push(String(value % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}

// -- counselor certificates (v2) --------------------------------------------------------

export const counselorCertTranscript = (accountId, handle, signPk, boxPk, issuedAt) =>
  lp("chat.counselorcert.v2", accountId, handle, signPk, boxPk, u64(issuedAt));

/**
 * Check a wire CounselorCert (base64 fields): signed by the organisation key whose
 * fingerprint is `orgFingerprint` (the pin), and naming this account and these keys.
 * Throws CryptoError saying what is wrong.
 */
export function verifyCounselorCert(cert, orgFingerprint, { accountId, signPk, boxPk }) {
  const orgPk = fromB64(cert.org_sign_pk);
  const pinned = String(orgFingerprint).replace(/\s+/g, "").toLowerCase();
  if (fingerprint(orgPk).replace(/\s+/g, "") !== pinned) {
    throw new CryptoError("the certificate is signed by another organisation key than the pinned one");
  }
  const certSignPk = fromB64(cert.sign_pk);
  const certBoxPk = fromB64(cert.box_pk);
  try {
    verifySignature(
      orgPk,
      counselorCertTranscript(cert.account_id, cert.handle, certSignPk, certBoxPk, cert.issued_at),
      fromB64(cert.sig),
    );
  } catch {
    throw new CryptoError("the certificate's signature does not verify");
  }
  if (cert.account_id !== accountId) throw new CryptoError("the certificate is for another account");
  if (!equalBytes(certSignPk, signPk) || !equalBytes(certBoxPk, boxPk)) {
    throw new CryptoError("the certificate is for other keys");
  }
}

// -- receipts (v2) ---------------------------------------------------------------------

export const receiptTranscript = (caseId, kind, upToSeq, chainHash) =>
  lp("chat.receipt.v2", caseId, kind, u64(upToSeq), chainHash);

export const signReceipt = (identity, caseId, kind, upToSeq, chainHash) =>
  sign(identity, receiptTranscript(caseId, kind, upToSeq, chainHash));

export function verifyReceipt(signPk, caseId, kind, upToSeq, chainHash, sig) {
  verifySignature(signPk, receiptTranscript(caseId, kind, upToSeq, chainHash), sig);
}

// -- preferences blob (v2): opaque to the hub ------------------------------------------

export const prefsAad = () => lp("chat.prefs.v2");

/** nonce (24) || XChaCha20-Poly1305-IETF(plain) under prefs_key. */
export function sealPrefs(prefsKey, plain, nonce = randomBytes(NONCE_BYTES)) {
  return concat(
    nonce,
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, prefsAad(), null, nonce, prefsKey),
  );
}

export function openPrefs(prefsKey, blob) {
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null, blob.slice(NONCE_BYTES), prefsAad(), blob.slice(0, NONCE_BYTES), prefsKey,
    );
  } catch {
    throw new CryptoError("the stored preferences do not open (altered, or another key)");
  }
}

// -- connection challenge (§12.5) ------------------------------------------------------

export const authTranscript = (nonce, accountId) => lp("chat.auth.v1", nonce, accountId);
export const signChallenge = (identity, nonce, accountId) =>
  sign(identity, authTranscript(nonce, accountId));

// -- case keys (§12.6, §12.7) ------------------------------------------------------------

export const newCaseKey = () => randomBytes(KEY_BYTES);

export const keyCommitment = (caseKey, caseId, epoch) =>
  blake2b(lp(caseId, u64(epoch)), { key: caseKey, person: "chat-key-commit1" });

/** The escrow binding of a key made while the hub has no escrow policy (§12.7). */
export const NO_ESCROW = "none";

// v2: the creator also signs the escrow policy the key is made under ("none" without one).
export const commitmentTranscript = (caseId, epoch, commitment, escrow) =>
  lp("chat.keycommit.v2", caseId, u64(epoch), commitment, escrow);

export const signCommitment = (identity, caseId, epoch, commitment, escrow) =>
  sign(identity, commitmentTranscript(caseId, epoch, commitment, escrow));

export function verifyCommitment(signPk, caseId, epoch, commitment, escrow, sig) {
  verifySignature(signPk, commitmentTranscript(caseId, epoch, commitment, escrow), sig);
}

/**
 * crypto_box_seal(K, recipient). With ``ephemeralSk`` the same construction is spelled
 * out (libsodium's nonce = BLAKE2b(epk || rpk, 24)) so the vectors can be reproduced;
 * without it libsodium picks the ephemeral key itself.
 */
export function sealCaseKey(caseKey, boxPk, ephemeralSk = null) {
  if (ephemeralSk === null) return sodium.crypto_box_seal(caseKey, boxPk);
  const epk = sodium.crypto_scalarmult_base(ephemeralSk);
  const nonce = sodium.crypto_generichash(24, concat(epk, boxPk), null);
  return concat(epk, sodium.crypto_box_easy(caseKey, nonce, boxPk, ephemeralSk));
}

/** Open a sealed case key and check it against the (already verified) commitment. */
export function openCaseKey(sealed, identity, caseId, epoch, commitment) {
  let caseKey;
  try {
    caseKey = sodium.crypto_box_seal_open(sealed, identity.boxPk, identity.boxSk);
  } catch {
    throw new CryptoError("sealed case key does not open");
  }
  if (!equalBytes(keyCommitment(caseKey, caseId, epoch), commitment)) {
    wipe(caseKey);
    throw new CryptoError("case key does not match its commitment");
  }
  return caseKey;
}

// -- messages (§12.8) ----------------------------------------------------------------------

export const messageAad = (caseId, epoch, senderId, clientMsgId) =>
  lp("chat.msg.v1", caseId, u64(epoch), senderId, clientMsgId);

export const envelopeHash = (envelopeBytes) =>
  blake2b(envelopeBytes, { person: "chat-msg-hash-v1" });

export const messageTranscript = (caseId, epoch, clientMsgId, senderId, envelopeBytes) =>
  lp("chat.msgsig.v1", caseId, u64(epoch), clientMsgId, senderId, envelopeHash(envelopeBytes));

/** ISO/IEC 7816-4 padding (sodium.pad) to the smallest bucket that holds data + 0x80. */
export function pad(data) {
  const bucket = PADDING_BUCKETS.find((b) => data.length < b);
  if (bucket === undefined) {
    throw new RangeError(`encoded message exceeds ${PADDING_BUCKETS.at(-1) - 1} bytes`);
  }
  return sodium.pad(data, bucket);
}

export function unpad(padded) {
  if (!PADDING_BUCKETS.includes(padded.length)) {
    throw new CryptoError("message is not padded to a size bucket");
  }
  try {
    return sodium.unpad(padded, padded.length);
  } catch {
    throw new CryptoError("message padding is malformed");
  }
}

/** Sign, pad, encrypt. Returns { nonce, ciphertext }. `envelope` is { body, ts,
 *  clientMsgId, prevSeq, prevHash, n }. */
export function encryptMessage(caseKey, identity, { caseId, epoch, senderId, envelope, nonce }) {
  if ([...envelope.body].length > MAX_MESSAGE_CHARS) {
    throw new RangeError(`message longer than ${MAX_MESSAGE_CHARS} characters`);
  }
  const envelopeBytes = encodeEnvelope(envelope);
  const sig = sign(
    identity, messageTranscript(caseId, epoch, envelope.clientMsgId, senderId, envelopeBytes),
  );
  const n = nonce ?? randomBytes(NONCE_BYTES);
  const aad = messageAad(caseId, epoch, senderId, envelope.clientMsgId);
  const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
    pad(concat(sig, envelopeBytes)), aad, null, n, caseKey,
  );
  return { nonce: n, ciphertext };
}

/** Decrypt, unpad, verify the sender's signature, decode strictly (envelope.js); throws
 *  CryptoError on any failure (NonCanonical for bytes that are not the one encoding). */
export function decryptMessage(
  caseKey, senderSignPk, { caseId, epoch, senderId, clientMsgId, nonce, ciphertext },
) {
  const aad = messageAad(caseId, epoch, senderId, clientMsgId);
  let inner;
  try {
    inner = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, aad, nonce, caseKey);
  } catch {
    throw new CryptoError("message does not decrypt (wrong key or altered)");
  }
  const unpadded = unpad(inner);
  if (unpadded.length < SIG_BYTES) throw new CryptoError("signed envelope is malformed");
  const sig = unpadded.slice(0, SIG_BYTES);
  const envelopeBytes = unpadded.slice(SIG_BYTES);
  verifySignature(
    senderSignPk, messageTranscript(caseId, epoch, clientMsgId, senderId, envelopeBytes), sig,
  );
  const envelope = decodeEnvelope(envelopeBytes);
  if (envelope.clientMsgId !== clientMsgId) {
    throw new CryptoError("envelope belongs to another message");
  }
  return envelope;
}

// -- hash chain (§12.9, §12.10) ------------------------------------------------------------

export const chainInput = (prev, r) =>
  lp(
    "chat.chain.v1", prev, r.caseId, u64(r.seq), u64(r.epoch), r.senderId, r.clientMsgId,
    r.nonce, r.ciphertext,
  );

/** r: { caseId, seq, epoch, senderId, clientMsgId, nonce, ciphertext } (bytes decoded). */
export const chainHash = (prev, r) => blake2b(chainInput(prev, r), { person: "chat-chain-hash1" });

export const headTranscript = (caseId, seq, head) =>
  lp("chat.chainhead.v1", caseId, u64(seq), head);

export function verifyHead(serverPk, caseId, seq, head, sig) {
  verifySignature(serverPk, headTranscript(caseId, seq, head), sig);
}

// -- escrow policy (protocol/escrow.py) ---------------------------------------------------

/** The canonical bytes the organisation signs; the policy fingerprint is taken over them.
 *  Legal-order signers are appended only when the policy names any (protocol/escrow.py). */
export const policyBytes = (p) =>
  lp(
    "chat.escrow.policy.v1", u64(p.version), u64(p.threshold), u64(p.not_before),
    u64(p.not_after), fromB64(p.org_sign_pk), u64(p.officers.length),
    ...p.officers.map((o) => lp(o.name, fromB64(o.box_pk), fromB64(o.sign_pk))),
    ...(p.legal_signers?.length
      ? [u64(p.legal_signers.length), ...p.legal_signers.map((s) => lp(s.name, fromB64(s.sign_pk)))]
      : []),
  );

/** Fingerprint of a signed policy from `policy.result`; throws if the org signature fails. */
export function verifiedPolicyFingerprint(signed) {
  const bytes = policyBytes(signed.policy);
  verifySignature(fromB64(signed.policy.org_sign_pk), bytes, fromB64(signed.sig));
  return fingerprint(bytes);
}

const MAX_ESCROW_OFFICERS = 8; // protocol/limits.py
const MAX_CAPSULE_SUBSETS = 70;

/** An escrow policy this page must not seal case keys under (escrow.PolicyError). */
export class PolicyError extends CryptoError {
  constructor(message) {
    super(message);
    this.name = "PolicyError";
  }
}

const normalFingerprint = (text) => String(text).replace(/\s+/g, "").toLowerCase();

function binomial(n, k) {
  let r = 1;
  for (let i = 1; i <= k; i += 1) r = (r * (n - k + i)) / i;
  return Math.round(r);
}

/** escrow.check_policy: the structural rules the wire schema cannot express. */
function checkPolicy(p) {
  const n = p.officers.length;
  if (!(Number.isSafeInteger(p.threshold) && p.threshold >= 1 && p.threshold <= n)) {
    throw new PolicyError(`threshold ${p.threshold} is not between 1 and ${n}`);
  }
  if (n > MAX_ESCROW_OFFICERS || binomial(n, p.threshold) > MAX_CAPSULE_SUBSETS) {
    throw new PolicyError("too many officer subsets for one capsule");
  }
  const legal = (p.legal_signers ?? []).map((s) => s.sign_pk);
  const keys = [...p.officers.map((o) => o.box_pk), ...p.officers.map((o) => o.sign_pk), ...legal];
  if (new Set(keys).size !== keys.length) {
    throw new PolicyError("officer and legal signer keys must all be distinct");
  }
  if (new Set(p.officers.map((o) => o.name)).size !== n) {
    throw new PolicyError("officer names must be distinct");
  }
  if (new Set((p.legal_signers ?? []).map((s) => s.name)).size !== legal.length) {
    throw new PolicyError("legal signer names must be distinct");
  }
  if (p.not_after <= p.not_before) throw new PolicyError("policy validity window is empty");
  for (const o of p.officers) {
    if (fromB64(o.box_pk).length !== KEY_BYTES) throw new PolicyError("officer key is malformed");
  }
}

/**
 * escrow.verify_policy: shape, the organisation's signature, the pinned organisation
 * fingerprint and (with nowMs) the validity window. Returns the policy fingerprint;
 * throws PolicyError. With no pin nothing verifies: the page never escrows to a policy
 * whose signer it cannot name.
 */
export function verifyPolicy(signed, orgFingerprint, nowMs = null) {
  const p = signed.policy;
  checkPolicy(p);
  const bytes = policyBytes(p);
  try {
    verifySignature(fromB64(p.org_sign_pk), bytes, fromB64(signed.sig));
  } catch {
    throw new PolicyError("policy signature does not verify");
  }
  if (!orgFingerprint) throw new PolicyError("no organisation fingerprint is pinned");
  const signer = normalFingerprint(fingerprint(fromB64(p.org_sign_pk)));
  if (!equalBytes(utf8(signer), utf8(normalFingerprint(orgFingerprint)))) {
    throw new PolicyError("policy is not signed by the pinned organisation key");
  }
  if (nowMs !== null && !(p.not_before <= nowMs && nowMs <= p.not_after)) {
    throw new PolicyError("policy is not in force now");
  }
  return fingerprint(bytes);
}

/** Every k-subset of officer indices 0..n-1, ascending, in lexicographic order
 *  (itertools.combinations, which escrow.subsets uses). */
export function officerSubsets(n, k) {
  const out = [];
  const pick = (start, chosen) => {
    if (chosen.length === k) {
      out.push([...chosen]);
      return;
    }
    for (let i = start; i <= n - (k - chosen.length); i += 1) {
      chosen.push(i);
      pick(i + 1, chosen);
      chosen.pop();
    }
  };
  pick(0, []);
  return out;
}

/** The innermost capsule plaintext: K bound to its case and epoch. */
export const capsuleBinding = (caseId, epoch, caseKey) =>
  lp("chat.capsule.v1", caseId, u64(epoch), caseKey);

/**
 * escrow.make_capsule: K sealed for every k-subset of the policy's officers, nested one
 * crypto_box_seal per officer (outermost to the subset's first officer, innermost to its
 * last). `policy` is the (verified) policy of `policy.result`, `policyFp` its fingerprint.
 * Returns the wire Capsule (base64 bytes).
 */
export function makeCapsule(policy, policyFp, caseId, epoch, caseKey) {
  checkPolicy(policy);
  const inner = capsuleBinding(caseId, epoch, caseKey);
  const boxKeys = policy.officers.map((o) => fromB64(o.box_pk));
  try {
    const layers = officerSubsets(policy.officers.length, policy.threshold).map((subset) => {
      let sealed = inner;
      for (let i = subset.length - 1; i >= 0; i -= 1) {
        sealed = sodium.crypto_box_seal(sealed, boxKeys[subset[i]]);
      }
      return { officers: subset, sealed: toB64(sealed) };
    });
    return { policy_fingerprint: policyFp, subsets: layers };
  } finally {
    wipe(inner);
  }
}
