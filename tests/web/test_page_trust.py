"""The page's v2 trust rules in Node, with a scripted hub (request function) in place of
the real one: directory entries need a valid box_sig and match their pins, pins live in
the encrypted prefs blob (compare-and-swap), certificates gate sealing to a counselor,
envelopes carry the signed order, and order.js agrees with protocol/transcript.py.
tests/web/test_hostile_keys.py plays the same attacks against the real hub in Chromium.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from protocol import crypto, transcript
from protocol import frames as f

PRELUDE = """
globalThis.sessionStorage = { getItem: () => null, setItem() {}, removeItem() {} };
const c = await import("./src/crypto.js");
await c.ready();
const { Keys } = await import("./src/keys.js");
const { CaseState } = await import("./src/processor.js");
const { RemoteError } = await import("./src/protocol.js");
const me = "acct_me";
const myId = c.generateIdentity();
const prefsKey = c.randomBytes(32);
const creds = { accountId: me, handle: "dr-me", role: "counselor", identity: myId, cert: null };
// The scripted hub: a directory, a prefs store with versions, and what was asked.
const hub = { directory: new Map(), prefs: { blob: null, version: 0 }, asked: [], conflicts: 0 };
const b64 = (bytes) => c.toB64(bytes);
const request = async (type, fields) => {
  hub.asked.push(type);
  if (type === "directory.get") {
    return { entries: fields.account_ids.filter((id) => hub.directory.has(id))
      .map((id) => hub.directory.get(id)) };
  }
  if (type === "prefs.get") return { ...hub.prefs };
  if (type === "prefs.put") {
    if (hub.conflicts > 0) {
      hub.conflicts -= 1;
      throw new RemoteError("conflict", "stale version");
    }
    if (fields.version !== hub.prefs.version) throw new RemoteError("conflict", "stale");
    hub.prefs = { blob: b64(fields.blob), version: hub.prefs.version + 1 };
    return { ...hub.prefs };
  }
  if (type === "case.key") { hub.deposited = fields; return { type: "ok" }; }
  throw new Error("unexpected " + type);
};
// The escrow room of a hub without an escrow policy: keys are bound to "none" (§12.7).
const escrow = {
  binding: async () => c.NO_ESCROW, capsule: async () => null, forget() {}, depositCapsules() {},
};
const { Pins } = await import("./src/pins.js");
const session = (orgFingerprint = null) => {
  const pins = new Pins({ request, prefsKey });
  return new Keys({ creds, request, escrow, pins, orgFingerprint });
};
const publish = (id, handle, role, identity, sig = c.signBoxKey(identity), cert = null) => {
  hub.directory.set(id, {
    account_id: id, handle, role, sign_pk: b64(identity.signPk), box_pk: b64(identity.boxPk),
    box_sig: sig === null ? null : b64(sig), cert,
  });
};
const verdict = async (fn) => {
  try { const v = await fn(); return v === null ? "null" : "ok"; }
  catch (e) { return e.name + ": " + e.message; }
};
const storedPins = () => JSON.parse(new TextDecoder().decode(
  c.openPrefs(prefsKey, c.fromB64(hub.prefs.blob)))).contacts;
"""


def test_directory_entries_need_box_sig_and_match_their_pins(node: Callable[[str], Any]) -> None:
    got = node(
        PRELUDE
        + """
        const alice = c.generateIdentity();
        const thief = c.generateIdentity();
        const out = {};
        publish("acct_unsigned", "nosig", "client", alice, null);
        publish("acct_badsig", "badsig", "client", { ...alice, boxPk: thief.boxPk },
          c.signBoxKey(alice));
        publish("acct_alice", "alice", "client", alice);
        let keys = session();
        out.unsigned = await verdict(() => keys.entry("acct_unsigned"));
        out.badsig = await verdict(() => keys.entry("acct_badsig"));
        out.first = await verdict(() => keys.entry("acct_alice"));
        out.pinned = Object.keys(storedPins());
        out.pinVersion = hub.prefs.version;
        out.fp = keys.fingerprintOf("acct_alice") === c.fingerprintV2(alice.signPk, alice.boxPk);
        out.safety = keys.verification("acct_alice").safetyNumber ===
          c.safetyNumber(alice, myId);
        out.missing = await verdict(() => keys.entry("acct_nobody"));

        // Next session: the hub now serves the thief's keys, correctly self-signed.
        publish("acct_alice", "alice", "client", thief);
        keys = session();
        out.changed = await verdict(() => keys.entry("acct_alice"));
        out.again = await verdict(() => keys.entry("acct_alice")); // cached refusal
        out.problems = [...keys.problems.keys()];
        out.newSafety = keys.keyChangeVerification("acct_alice").safetyNumber ===
          c.safetyNumber(thief, myId);
        await keys.trustNewKeys("acct_alice");
        out.trusted = await verdict(() => keys.entry("acct_alice"));
        out.repinned = storedPins()["acct_alice"].box_pk === b64(thief.boxPk);
        out.problemsAfter = keys.problems.size;

        // A blob the hub altered is refused, never overwritten.
        const blob = c.fromB64(hub.prefs.blob);
        blob[30] ^= 1;
        hub.prefs.blob = b64(blob);
        publish("acct_bob", "bob", "client", c.generateIdentity());
        keys = session();
        out.altered = await verdict(() => keys.entry("acct_bob"));
        console.log(JSON.stringify(out));
        """
    )
    assert got["unsigned"] == (
        "KeyRefused: the keys of nosig are refused: key not signed "
        "(the account has not attested its box key)"
    )
    assert got["badsig"] == (
        "KeyRefused: the keys of badsig are refused: key not signed "
        "(its box key signature does not verify)"
    )
    assert got["first"] == "ok" and got["pinned"] == ["acct_alice"] and got["pinVersion"] == 1
    assert got["fp"] and got["safety"]
    assert got["missing"] == "null"
    assert got["changed"].startswith("KeyChanged: The keys of alice changed: fingerprint ")
    assert "safety number" in got["changed"]
    assert got["again"] == got["changed"]
    assert got["problems"] == ["acct_alice"] and got["newSafety"]
    assert got["trusted"] == "ok" and got["repinned"] and got["problemsAfter"] == 0
    assert got["altered"].startswith("CryptoError: the stored preferences do not open")


def test_pins_merge_on_a_conflicting_write(node: Callable[[str], Any]) -> None:
    got = node(
        PRELUDE
        + """
        const alice = c.generateIdentity();
        const bob = c.generateIdentity();
        publish("acct_alice", "alice", "client", alice);
        publish("acct_bob", "bob", "client", bob);
        // Another tab pins bob first, after this session read the (empty) blob.
        const keys = session();
        await keys.pins.load();
        const other = session();
        await other.entry("acct_bob");
        hub.conflicts = 0;
        await keys.entry("acct_alice"); // its write is stale: re-read, merge, write again
        console.log(JSON.stringify({
          pinned: Object.keys(storedPins()).sort(), version: hub.prefs.version,
          puts: hub.asked.filter((t) => t === "prefs.put").length,
        }));
        """
    )
    assert got == {"pinned": ["acct_alice", "acct_bob"], "version": 2, "puts": 3}


def test_case_keys_are_sealed_only_to_certified_counselors(node: Callable[[str], Any]) -> None:
    got = node(
        PRELUDE
        + """
        const org = c.generateIdentity();
        const orgFp = c.fingerprint(org.signPk);
        const other = c.generateIdentity();
        const cert = (identity, accountId = "acct_other") => {
          const issued = 1700000000000;
          return {
            account_id: accountId, handle: "dr-other", sign_pk: b64(identity.signPk),
            box_pk: b64(identity.boxPk), issued_at: issued, org_sign_pk: b64(org.signPk),
            sig: b64(c.sign(org, c.counselorCertTranscript(accountId, "dr-other",
              identity.signPk, identity.boxPk, issued))),
          };
        };
        const info = {
          case_id: "case_x", client_id: "acct_other", counselor_id: me, state: "assigned",
          topic: "t", language: "en", epoch: 0, last_seq: 0, created_at: 1,
        };
        const attempt = async (orgFingerprint, certificate) => {
          publish("acct_other", "dr-other", "counselor", other, c.signBoxKey(other), certificate);
          hub.deposited = null;
          const keys = session(orgFingerprint);
          const cs = new CaseState({ ...info });
          const result = await verdict(() => keys.sendEpoch(cs));
          return [result, hub.deposited !== null, keys.notes.get("case_x") ?? null];
        };
        // What a deposited key carries: its escrow binding, signed with the commitment.
        const bound = () => {
          const d = hub.deposited;
          return [d.escrow, verdict(() => c.verifyCommitment(myId.signPk, d.case_id, d.epoch,
            d.commitment, d.escrow, d.commitment_sig))];
        };
        console.log(JSON.stringify({
          noCert: await attempt(orgFp, null),
          otherOrg: await attempt(c.fingerprint(other.signPk), cert(other)),
          otherKeys: await attempt(orgFp, cert(c.generateIdentity())),
          certified: await attempt(orgFp, cert(other)),
          certifiedBinding: await Promise.all(bound()),
          noOrgPinned: await attempt(null, null),
        }));
        """
    )
    refused = "UncertifiedCounselor: dr-other is not a certified counselor of the organisation"
    assert got["noCert"][0].startswith(refused + " (no certificate)")
    assert got["otherOrg"][0].startswith(refused + " (the certificate is signed by another")
    assert got["otherKeys"][0].startswith(refused + " (the certificate is for other keys)")
    assert [g[1] for g in (got["noCert"], got["otherOrg"], got["otherKeys"])] == [False] * 3
    assert got["certified"] == ["ok", True, None]
    assert got["certifiedBinding"] == ["none", "ok"]
    assert got["noOrgPinned"] == [
        "ok",
        True,
        "No organisation key is pinned: the hub alone vouches that dr-other is a counselor.",
    ]


def test_envelopes_carry_the_signed_order(node: Callable[[str], Any]) -> None:
    got = node(
        PRELUDE
        + """
        const { Outbox } = await import("./src/outbox.js");
        const { ConnectionLost } = await import("./src/protocol.js");
        const key = c.newCaseKey();
        const cs = new CaseState({ case_id: "case_o", client_id: "acct_c", counselor_id: me,
          state: "assigned", epoch: 1, last_seq: 0, created_at: 1 });
        cs.keys.set(1, key);
        cs.lastSeen = 4;
        cs.prevHash = c.randomBytes(32);
        cs.lastN = 2; // two of ours already in the history
        const processor = { cases: new Map([["case_o", cs]]), ownAck() {} };
        const offline = async () => { throw new ConnectionLost(); };
        const outbox = new Outbox({ me, identity: myId, request: offline, isOnline: () => false,
          keys: { sendEpoch: async () => ({ epoch: 1, key }) }, processor, onChange() {} });
        await outbox.send("case_o", "third");
        await outbox.send("case_o", "fourth"); // still waiting: the counter moves on
        const opened = outbox.pendingFor("case_o").map((e) => c.decryptMessage(key, myId.signPk, {
          caseId: "case_o", epoch: 1, senderId: me, clientMsgId: e.cmid, nonce: e.nonce,
          ciphertext: e.ciphertext,
        }));
        console.log(JSON.stringify(opened.map((e) => [e.body, e.prevSeq,
          c.equalBytes(e.prevHash, cs.prevHash), e.n])));
        """
    )
    assert got == [["third", 4, True, 3], ["fourth", 4, True, 4]]


def _record(seq: int, sender: str, cmid: str, chain: bytes) -> f.MessageRecord:
    return f.MessageRecord(
        case_id="case-1",
        seq=seq,
        epoch=1,
        sender_id=sender,
        client_msg_id=cmid,
        nonce=bytes(24),
        ciphertext=bytes(40),
        chain_hash=chain,
        server_ts=1,
    )


def _env(n: int, prev_seq: int = 0, prev_hash: bytes = bytes(32), cmid: str = "x") -> Any:
    return crypto.Envelope(
        body="", ts=0, client_msg_id=cmid, prev_seq=prev_seq, prev_hash=prev_hash, n=n
    )


def test_order_checks_agree_with_transcript_py(node: Callable[[str], Any]) -> None:
    """The same presented histories through protocol/transcript.py and order.js."""
    h = [bytes([i]) * 32 for i in range(10)]
    a, b = "acct-a", "acct-b"
    histories: dict[str, list[tuple[f.MessageRecord, Any]]] = {
        "honest": [
            (_record(1, a, "a1", h[1]), _env(1)),
            (_record(2, b, "b1", h[2]), _env(1, 1, h[1])),
            (_record(3, a, "a2", h[3]), _env(2, 2, h[2])),
        ],
        "dropped_counter": [
            (_record(1, a, "a1", h[1]), _env(1)),
            (_record(2, a, "a3", h[2]), _env(3, 1, h[1])),
        ],
        "dropped_prev": [
            (_record(1, a, "a1", h[1]), _env(1)),
            (_record(3, b, "b1", h[3]), _env(1, 2, h[2])),
        ],
        "rewritten": [
            (_record(1, a, "a1", h[1]), _env(1)),
            (_record(2, b, "b1", h[2]), _env(1, 1, h[9])),
        ],
        "reordered": [
            (_record(1, a, "a2", h[1]), _env(2)),
            (_record(2, a, "a1", h[2]), _env(1)),
            (_record(3, b, "b1", h[3]), _env(1, 5, h[5])),
        ],
        "replayed": [
            (_record(1, a, "a1", h[1]), _env(1)),
            (_record(2, a, "a1", h[2]), _env(1)),
        ],
    }
    expected = {
        name: [
            [p.seq, p.kind, p.sender_id, p.detail]
            for p in transcript.check_order([r for r, _ in rows], {r.seq: e for r, e in rows})
        ]
        for name, rows in histories.items()
    }
    wire = {
        name: [
            {
                "seq": r.seq,
                "senderId": r.sender_id,
                "clientMsgId": r.client_msg_id,
                "chainHash": base64.b64encode(r.chain_hash).decode(),
                "env": {
                    "prevSeq": e.prev_seq,
                    "prevHash": base64.b64encode(e.prev_hash).decode(),
                    "n": e.n,
                },
            }
            for r, e in rows
        ]
        for name, rows in histories.items()
    }
    got = node(
        f"""
        const {{ checkOrder }} = await import("./src/order.js");
        const unb64 = (t) => Uint8Array.from(Buffer.from(t, "base64"));
        const out = {{}};
        for (const [name, rows] of Object.entries({json.dumps(wire)})) {{
          const records = rows.map((r) => ({{ ...r, chainHash: unb64(r.chainHash) }}));
          const opened = new Map(rows.map((r) => [r.seq,
            {{ ...r.env, prevHash: unb64(r.env.prevHash) }}]));
          out[name] = checkOrder(records, opened).map((p) => [p.seq, p.kind, p.senderId, p.detail]);
        }}
        console.log(JSON.stringify(out));
        """
    )
    assert expected["honest"] == []
    assert all(expected[name] for name in histories if name != "honest")
    assert got == expected


def test_a_rolled_back_prefs_blob_is_refused(node: Callable[[str], Any]) -> None:
    got = node(
        """
        const store = new Map();
        globalThis.localStorage = {
          getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v),
        };
        """
        + PRELUDE
        + """
        const alice = c.generateIdentity();
        publish("acct_alice", "alice", "client", alice);
        publish("acct_bob", "bob", "client", c.generateIdentity());
        const open = (keys) => { keys.pins.accountId = me; return keys; };
        const out = {};
        out.first = await verdict(() => open(session()).entry("acct_alice"));
        const saved = { ...hub.prefs };
        out.saved = saved.version;
        hub.prefs = { blob: null, version: 0 }; // the hub "forgets" the pins
        const keys = open(session());
        out.withheld = await verdict(() => keys.entry("acct_bob"));
        out.problem = keys.prefsProblem?.message ?? null;
        hub.prefs = saved; // the real blob again
        out.restored = await verdict(() => open(session()).entry("acct_bob"));
        console.log(JSON.stringify(out));
        """
    )
    assert got["first"] == "ok" and got["saved"] == 1
    refused = (
        "CryptoError: the hub served older preferences (version 0; this browser saw version "
        "1): contact pins may have been rolled back"
    )
    assert got["withheld"] == refused
    assert got["problem"] == refused.removeprefix("CryptoError: ")
    assert got["restored"] == "ok"


# A processor for case "case_r" (client acct_c, counselor: us) holding the epoch-1 key,
# and `message(seq, prev, body)`: a record of the client's, really encrypted and signed,
# chained to `prev` (the previous record's wire form, null for seq 1); `wireHash(w)` is
# its chain hash as bytes.
CASE_R = """
const { Processor } = await import("./src/processor.js");
const client = c.generateIdentity();
publish("acct_c", "carla", "client", client);
const keys = session();
const caseKey = c.newCaseKey();
const wireHash = (w) => c.fromB64(w.chain_hash);
const message = (seq, prev, body = `message ${seq}`) => {
  const prevHash = prev === null ? c.GENESIS : wireHash(prev);
  const clientMsgId = c.toB64(c.randomBytes(16)).replace(/[+/=]/g, "x").slice(0, 22);
  const { nonce, ciphertext } = c.encryptMessage(caseKey, client, {
    caseId: "case_r", epoch: 1, senderId: "acct_c",
    envelope: { body, ts: seq, clientMsgId, prevSeq: seq - 1, prevHash, n: seq },
  });
  const r = { caseId: "case_r", seq, epoch: 1, senderId: "acct_c", clientMsgId, nonce,
    ciphertext };
  return { case_id: "case_r", seq, epoch: 1, sender_id: "acct_c", client_msg_id: clientMsgId,
    nonce: b64(nonce), ciphertext: b64(ciphertext), chain_hash: b64(c.chainHash(prevHash, r)),
    server_ts: seq };
};
const history = (upTo) => {
  const out = [];
  for (let seq = 1; seq <= upTo; seq += 1) out.push(message(seq, out.at(-1) ?? null));
  return out;
};
const receipt = (who, signer, kind, seq, hash) => ({
  account_id: who, kind, up_to_seq: seq, chain_hash: b64(hash),
  sig: b64(c.signReceipt(signer, "case_r", kind, seq, hash)),
});
let served = { messages: [], receipts: [] }; // what the next sync answers
const syncing = async (type, fields) => type === "sync"
  ? { messages: served.messages.filter((m) => m.seq > fields.after_seq),
      last_seq: Math.max(0, ...served.messages.map((m) => m.seq)), has_more: false,
      receipts: served.receipts }
  : request(type, fields);
const processor = new Processor({ me, identity: myId, request: syncing, keys,
  onChange() {}, onStored() {} });
const cs = processor.upsertCase({ case_id: "case_r", client_id: "acct_c",
  counselor_id: me, state: "assigned", topic: "t", language: "en", epoch: 1,
  last_seq: 0, created_at: 1 }, false);
cs.keys.set(1, caseKey);
const marks = () => [processor.cursors.case_r, cs.peerDelivered, cs.peerRead];
const contradictions = () => cs.contradictions.map((p) => [p.seq, p.kind, p.detail]);
const settle = async () => { await new Promise((r) => setTimeout(r, 0)); await cs.queue; };
"""


def test_sync_receipts_count_only_when_signed(node: Callable[[str], Any]) -> None:
    """A sync's receipts (each participant's latest), checked against the synced records:
    ours restores the read cursor, the client's moves the Delivered/Read marks; a forged
    one moves nothing and is reported."""
    got = node(
        PRELUDE
        + CASE_R
        + """
        const records = history(7);
        const at = (seq) => wireHash(records[seq - 1]);
        served = { messages: records, receipts: [receipt(me, myId, "read", 7, at(7)),
          receipt("acct_c", client, "read", 6, at(6))] };
        await cs.enqueue(() => processor.syncNow(cs));
        const honest = [...marks(), cs.lastSeen, cs.problems.length,
          [...cs.messages.values()].every((m) => m.verified)];
        served = { messages: records, receipts: [receipt(me, client, "read", 7, at(7)),
          receipt("acct_c", myId, "read", 6, at(6))] };
        await cs.enqueue(() => processor.syncNow(cs));
        console.log(JSON.stringify({ honest,
          forged: [...marks(), cs.problems.map((p) => p.detail)] }));
        """
    )
    assert got["honest"] == [7, 6, 6, 7, 0, True]
    assert got["forged"] == [
        7,
        6,
        6,
        ["read receipt is not signed by its sender", "read receipt is not signed by its sender"],
    ]


def test_a_receipt_ahead_of_the_page_waits_for_its_record(node: Callable[[str], Any]) -> None:
    """A receipt for a seq the page has not processed yet (receipt.new before the records)
    moves nothing until the record at its seq has been processed and matches."""
    got = node(
        PRELUDE
        + CASE_R
        + """
        const records = history(4);
        const at = (seq) => wireHash(records[seq - 1]);
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt("acct_c", client, "delivered", 4, at(4)) });
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt("acct_c", client, "read", 2, at(2)) });
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt(me, myId, "read", 3, at(3)) });
        await settle();
        const early = [...marks(), cs.heldReceipts.size];
        const steps = [];
        for (const record of records) {
          processor.onEvent({ type: "msg.new", message: record });
          await settle();
          steps.push([...marks(), cs.heldReceipts.size]);
        }
        console.log(JSON.stringify({ early, steps, problems: cs.problems.length }));
        """
    )
    assert got["early"] == [0, 0, 0, 3]  # held: nothing to compare with yet
    # [read cursor, Delivered, Read, still held] after records 1, 2, 3, 4.
    assert got["steps"] == [[0, 0, 0, 3], [0, 2, 2, 2], [3, 2, 2, 1], [3, 4, 2, 0]]
    assert got["problems"] == 0


def test_hostile_a_receipt_ahead_of_the_page_names_another_history(
    node: Callable[[str], Any],
) -> None:
    """The hub rewrites seq 3 for the counselor after the client (and the counselor's other
    tab) signed receipts over the original, and hands those receipts over first. When the
    rewritten record arrives the page reports the contradiction at seq 3 and neither mark
    moves; a receipt for a seq the hub then skips is reported as dropped."""
    got = node(
        PRELUDE
        + CASE_R
        + """
        const original = history(3);
        const signedHash = wireHash(original[2]);
        const rewritten = [...original.slice(0, 2), message(3, original[1], "not what was said")];
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt("acct_c", client, "read", 3, signedHash) });
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt(me, myId, "read", 3, signedHash) });
        await settle();
        const early = [...marks(), contradictions()];
        served = { messages: rewritten, receipts: [] };
        await cs.enqueue(() => processor.syncNow(cs));
        const after = [...marks(), cs.heldReceipts.size, contradictions()];
        // A signed point at seq 5, then a history without seq 5.
        const honest4 = message(4, rewritten[2]);
        const five = message(5, honest4);
        processor.onEvent({ type: "receipt.new", case_id: "case_r",
          ...receipt("acct_c", client, "delivered", 5, wireHash(five)) });
        await settle();
        served = { messages: [...rewritten, honest4, message(6, five)], receipts: [] };
        await cs.enqueue(() => processor.syncNow(cs));
        console.log(JSON.stringify({ early, after, skipped: [...marks(), cs.lastSeen,
          contradictions().filter(([seq]) => seq === 5)] }));
        """
    )
    assert got["early"] == [0, 0, 0, []]
    assert got["after"] == [
        0,
        0,
        0,
        0,
        [
            [3, "rewritten", "history up to seq 3 differs from what the other side signed"],
            [3, "rewritten", "history up to seq 3 differs from what you signed"],
        ],
    ]
    assert got["skipped"] == [
        0,
        0,
        0,
        6,
        [[5, "dropped", "seq 5, which the other side signed for, is missing"]],
    ]


def test_a_seq_presented_again_with_another_hash_is_a_contradiction(
    node: Callable[[str], Any],
) -> None:
    got = node(
        PRELUDE
        + """
        const { Processor } = await import("./src/processor.js");
        const keys = session();
        const processor = new Processor({ me, identity: myId, request, keys,
          onChange() {}, onStored() {} });
        const cs = processor.upsertCase({ case_id: "case_s", client_id: "acct_c",
          counselor_id: me, state: "assigned", topic: "t", language: "en", epoch: 1,
          last_seq: 0, created_at: 1 }, false);
        const first = c.randomBytes(32);
        cs.lastSeen = 3;
        cs.hashes.set(3, first);
        const wire = (hash) => ({ type: "msg.new", message: {
          case_id: "case_s", seq: 3, epoch: 1, sender_id: "acct_c", client_msg_id: "m3",
          nonce: b64(new Uint8Array(24)), ciphertext: b64(new Uint8Array(40)),
          chain_hash: b64(hash), server_ts: 1 } });
        processor.onEvent(wire(first)); // an honest duplicate: nothing to say
        await new Promise((r) => setTimeout(r, 0));
        await cs.queue;
        const before = cs.problems.length;
        processor.onEvent(wire(c.randomBytes(32)));
        await new Promise((r) => setTimeout(r, 0));
        await cs.queue;
        console.log(JSON.stringify({ before,
          after: cs.problems.map((p) => [p.seq, p.kind, p.detail]) }));
        """
    )
    assert got == {
        "before": 0,
        "after": [[3, "rewritten", "the hub now presents another record at seq 3 than before"]],
    }
