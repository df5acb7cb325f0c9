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
    const env = { body: m.body, ts: m.ts, clientMsgId: m.client_msg_id };
    const envBytes = c.encodeEnvelope(env);
    out[p + "envelope_json"] = c.toHex(envBytes);
    out[p + "envelope_hash"] = c.toHex(c.envelopeHash(envBytes));
    out[p + "signature_transcript"] = c.toHex(
      c.messageTranscript(K.case_id, K.epoch, m.client_msg_id, m.sender_id, envBytes),
    );
    out[p + "aad"] = c.toHex(c.messageAad(K.case_id, K.epoch, m.sender_id, m.client_msg_id));
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
