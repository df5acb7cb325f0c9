// Evaluated in Chromium by tests/web/test_vectors_browser.py (page.evaluate): imports the
// page's own crypto module (the bundle the page runs) and recomputes docs/test-vectors.json.
// Returns { name: computed-hex } pairs; the Python test compares them with the file.
async ({ vectors: v, moduleUrl }) => {
  const c = await import(moduleUrl);
  await c.ready();
  const h = c.fromHex;
  const out = {};
  const ids = v.identities;

  // Identities and fingerprints.
  for (const who of ["client", "counselor"]) {
    const secret = c.concat(h(ids[who].sign_seed), h(ids[who].box_sk));
    const id = c.identityFromSecret(secret);
    out[`identities.${who}.sign_pk`] = c.toHex(id.signPk);
    out[`identities.${who}.box_pk`] = c.toHex(id.boxPk);
    out[`identities.${who}.fingerprint`] = c.fingerprint(id.signPk);
    out[`identities.${who}.box_key_transcript`] = c.toHex(c.boxKeyTranscript(id.signPk, id.boxPk));
    out[`identities.${who}.box_sig`] = c.toHex(c.signBoxKey(id));
    c.verifyBoxKey(id.signPk, id.boxPk, h(ids[who].box_sig));
    out[`identities.${who}.fingerprint_v2_input`] = c.toHex(c.lp(id.signPk, id.boxPk));
    out[`identities.${who}.fingerprint_v2`] = c.fingerprintV2(id.signPk, id.boxPk);
  }
  out["identities.server.fingerprint"] = c.fingerprint(h(ids.server.sign_pk));
  const client = c.identityFromSecret(c.concat(h(ids.client.sign_seed), h(ids.client.box_sk)));
  const counselor = c.identityFromSecret(
    c.concat(h(ids.counselor.sign_seed), h(ids.counselor.box_sk)),
  );
  const byId = {
    [ids.client.account_id]: client,
    [ids.counselor.account_id]: counselor,
  };

  // Login keys.
  const L = v.login;
  out["login.passphrase_utf8"] = c.toHex(c.utf8(L.passphrase));
  out["login.master_key"] = c.toHex(
    c.argon2idMaster(L.passphrase, h(L.salt), L.opslimit, L.memlimit),
  );
  const keys = c.deriveLoginKeys(L.passphrase, h(L.salt), L.opslimit, L.memlimit);
  out["login.auth_key"] = c.toHex(keys.authKey);
  out["login.wrap_key"] = c.toHex(keys.wrapKey);
  out["login.prefs_key"] = c.toHex(keys.prefsKey);

  // Preferences blob (v2), sealed with the fixed nonce, and opened back.
  const P = v.prefs_blob;
  out["prefs_blob.aad"] = c.toHex(c.prefsAad());
  out["prefs_blob.blob"] = c.toHex(c.sealPrefs(h(P.prefs_key), h(P.plaintext), h(P.nonce)));
  out["prefs_blob.plaintext"] = c.toHex(c.openPrefs(h(P.prefs_key), h(P.blob)));

  // Safety number (v2): the same from both sides.
  const N = v.safety_number;
  const pair = (who) => c.identityFromSecret(c.concat(h(ids[who].sign_seed), h(ids[who].box_sk)));
  out["safety_number.number"] = c.safetyNumber(pair(N.a), pair(N.b));
  out["safety_number.reversed"] = c.safetyNumber(pair(N.b), pair(N.a));

  // Counselor certificate (v2): transcript, the org signature, and its check.
  const C = v.counselor_cert;
  const org = c.identityFromSecret(c.concat(h(C.org_sign_seed), new Uint8Array(32)));
  const certOf = pair(C.of);
  out["counselor_cert.org_fingerprint"] = c.fingerprint(org.signPk);
  const certTranscript = c.counselorCertTranscript(
    C.account_id, C.handle, certOf.signPk, certOf.boxPk, C.issued_at,
  );
  out["counselor_cert.transcript"] = c.toHex(certTranscript);
  out["counselor_cert.signature"] = c.toHex(c.sign(org, certTranscript));
  const wireCert = JSON.parse(C.json);
  const certFor = { accountId: C.account_id, signPk: certOf.signPk, boxPk: certOf.boxPk };
  c.verifyCounselorCert(wireCert, C.org_fingerprint, certFor);
  const certVerdict = (cert, fp, who) => {
    try {
      c.verifyCounselorCert(cert, fp, who);
      return "accepted";
    } catch (e) {
      return e.message;
    }
  };
  out["cert_refusals"] = [
    certVerdict(wireCert, c.fingerprint(pair("client").signPk), certFor),
    certVerdict({ ...wireCert, handle: "mallory" }, C.org_fingerprint, certFor),
    certVerdict(wireCert, C.org_fingerprint, { ...certFor, boxPk: pair("client").boxPk }),
    certVerdict(wireCert, C.org_fingerprint, { ...certFor, accountId: "acct-other" }),
  ];

  // Signed receipt (v2).
  const R = v.receipt;
  const receiptTranscript = c.receiptTranscript(R.case_id, R.kind, R.up_to_seq, h(R.chain_hash));
  out["receipt.transcript"] = c.toHex(receiptTranscript);
  out["receipt.signature"] = c.toHex(
    c.signReceipt(pair(R.signer), R.case_id, R.kind, R.up_to_seq, h(R.chain_hash)),
  );
  c.verifyReceipt(pair(R.signer).signPk, R.case_id, R.kind, R.up_to_seq, h(R.chain_hash), h(R.signature));

  // Padding (v2): ISO/IEC 7816-4 to the size buckets, and back.
  v.padding.examples.forEach((e, i) => {
    out[`padding.examples.${i}.padded`] = c.toHex(c.pad(h(e.input)));
    out[`padding.examples.${i}.input`] = c.toHex(c.unpad(h(e.padded)));
  });

  // Envelopes that are not the canonical encoding: every one refused (v2).
  out["envelope_negative"] = v.envelope_negative.map((e) => {
    try {
      c.decodeEnvelope(c.fromB64(e.bytes_b64));
      return `${e.name}: accepted`;
    } catch (err) {
      return `${e.name}: ${err.name}`;
    }
  });

  // Wrapped identity: wrap with the fixed nonce, and unwrap back.
  const W = v.wrapped_identity;
  out["wrapped_identity.blob"] = c.toHex(c.wrapIdentity(client, h(W.wrap_key), h(W.nonce)));
  const unwrapped = c.unwrapIdentity(h(W.blob), h(W.wrap_key));
  out["wrapped_identity.secret"] = c.toHex(c.concat(unwrapped.seed, unwrapped.boxSk));

  // Connection challenge.
  const A = v.auth;
  out["auth.transcript"] = c.toHex(c.authTranscript(h(A.nonce), A.account_id));
  out["auth.signature"] = c.toHex(c.signChallenge(client, h(A.nonce), A.account_id));

  // Case key commitment and its signature.
  const K = v.case_key;
  const commitment = c.keyCommitment(h(K.key), K.case_id, K.epoch);
  out["case_key.commitment_input"] = c.toHex(c.lp(K.case_id, c.u64(K.epoch)));
  out["case_key.commitment"] = c.toHex(commitment);
  out["case_key.commitment_transcript"] = c.toHex(
    c.commitmentTranscript(K.case_id, K.epoch, commitment, K.escrow),
  );
  out["case_key.commitment_signature"] = c.toHex(
    c.signCommitment(client, K.case_id, K.epoch, commitment, K.escrow),
  );
  c.verifyCommitment(
    client.signPk, K.case_id, K.epoch, commitment, K.escrow, h(K.commitment_signature),
  );

  // Sealed key: reproduce with the fixed ephemeral secret, and open it.
  const S = v.sealed_key;
  out["sealed_key.sealed"] = c.toHex(
    c.sealCaseKey(h(K.key), counselor.boxPk, h(S.ephemeral_sk)),
  );
  out["sealed_key.opened_key"] = c.toHex(
    c.openCaseKey(h(S.sealed), counselor, K.case_id, K.epoch, commitment),
  );

  // Messages: envelope, hash, signature, AAD, ciphertext with the fixed nonce, decrypt
  // back, and the hash chain.
  v.messages.forEach((m, i) => {
    const p = `messages.${i}.`;
    const sender = byId[m.sender_id];
    const env = {
      body: m.body,
      ts: m.ts,
      clientMsgId: m.client_msg_id,
      prevSeq: m.prev_seq,
      prevHash: h(m.prev_hash),
      n: m.n,
    };
    const envBytes = c.encodeEnvelope(env);
    out[p + "envelope_json"] = c.toHex(envBytes);
    out[p + "envelope_hash"] = c.toHex(c.envelopeHash(envBytes));
    out[p + "signature_transcript"] = c.toHex(
      c.messageTranscript(K.case_id, K.epoch, m.client_msg_id, m.sender_id, envBytes),
    );
    out[p + "aad"] = c.toHex(c.messageAad(K.case_id, K.epoch, m.sender_id, m.client_msg_id));
    const sig = c.sign(
      sender, c.messageTranscript(K.case_id, K.epoch, m.client_msg_id, m.sender_id, envBytes),
    );
    out[p + "signature"] = c.toHex(sig);
    out[p + "inner_plaintext"] = c.toHex(c.concat(sig, envBytes));
    out[p + "padded_plaintext"] = c.toHex(c.pad(c.concat(sig, envBytes)));
    const enc = c.encryptMessage(h(K.key), sender, {
      caseId: K.case_id,
      epoch: K.epoch,
      senderId: m.sender_id,
      envelope: env,
      nonce: h(m.nonce),
    });
    out[p + "ciphertext"] = c.toHex(enc.ciphertext);
    const dec = c.decryptMessage(h(K.key), sender.signPk, {
      caseId: K.case_id,
      epoch: K.epoch,
      senderId: m.sender_id,
      clientMsgId: m.client_msg_id,
      nonce: h(m.nonce),
      ciphertext: h(m.ciphertext),
    });
    out[p + "body"] = dec.body;
    out[p + "prev_seq"] = dec.prevSeq;
    out[p + "prev_hash"] = c.toHex(dec.prevHash);
    out[p + "n"] = dec.n;
    const record = {
      caseId: K.case_id,
      seq: m.seq,
      epoch: K.epoch,
      senderId: m.sender_id,
      clientMsgId: m.client_msg_id,
      nonce: h(m.nonce),
      ciphertext: h(m.ciphertext),
    };
    out[p + "chain_input"] = c.toHex(c.chainInput(h(m.chain_prev), record));
    out[p + "chain_hash"] = c.toHex(c.chainHash(h(m.chain_prev), record));
  });

  // A tampered ciphertext must be refused, not decrypted.
  const m0 = v.messages[0];
  const bad = h(m0.ciphertext);
  bad[5] ^= 1;
  try {
    c.decryptMessage(h(K.key), client.signPk, {
      caseId: K.case_id,
      epoch: K.epoch,
      senderId: m0.sender_id,
      clientMsgId: m0.client_msg_id,
      nonce: h(m0.nonce),
      ciphertext: bad,
    });
    out["tampered"] = "accepted";
  } catch (e) {
    out["tampered"] = e.name;
  }

  // Signed chain head, verified with the server key.
  const H = v.chain_head;
  out["chain_head.transcript"] = c.toHex(c.headTranscript(H.case_id, H.seq, h(H.head)));
  c.verifyHead(h(ids.server.sign_pk), H.case_id, H.seq, h(H.head), h(H.signature));
  out["chain_head.verified"] = "yes";
  return out;
};
