"""The page's outbox and processor, run in Node without a hub (the counterparts of
tests/chat_client/test_outbox.py and test_processor.py). The request function given to
them records what would go to the hub and answers nothing (ConnectionLost), so only the
rooms' own rules are exercised; tests/web/test_workspace.py runs them against the hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PRELUDE = """
globalThis.sessionStorage = { getItem: () => null, setItem() {}, removeItem() {} };
const c = await import("./src/crypto.js");
await c.ready();
const { Processor } = await import("./src/processor.js");
const { Outbox } = await import("./src/outbox.js");
const { Keys } = await import("./src/keys.js");
const { ConnectionLost } = await import("./src/protocol.js");
const me = "acct_counselor";
const info = {
  case_id: "case_page", client_id: "acct_client", counselor_id: me, state: "assigned",
  topic: "anxiety", language: "en", epoch: 1, last_seq: 0, created_at: 1,
};
const sent = [];
const request = async (type, fields) => {
  sent.push({ type, ...fields });
  throw new ConnectionLost();
};
const changes = [];
const stored = [];
const identity = c.generateIdentity();
const keys = new Keys({ creds: { accountId: me, identity }, request, escrow: null });
const processor = new Processor({
  me, identity, request, keys,
  onChange: (kind, id) => changes.push(kind), onStored: (id) => stored.push(id),
});
const hex = (bytes) => (bytes ? c.toHex(bytes) : null);
const cs = processor.upsertCase(info, false);
"""


def test_outbox_resends_the_same_bytes_and_carries_no_text_over_a_lock(
    node: Callable[[str], Any],
) -> None:
    got = node(
        PRELUDE
        + """
        const key = c.newCaseKey();
        cs.keys.set(1, key);
        let online = true;
        const outbox = new Outbox({
          me, identity, request, isOnline: () => online, keys, processor,
          onChange: (kind) => changes.push(kind),
        });
        await outbox.send(info.case_id, "hello from the page");
        await cs.queue;
        outbox.resend();
        await new Promise((resolve) => setTimeout(resolve, 0));
        online = false;
        outbox.resend(); // offline: nothing goes out
        const frames = sent.filter((s) => s.type === "msg.send");
        const [entry] = outbox.pendingFor(info.case_id);
        const opened = c.decryptMessage(key, identity.signPk, {
          caseId: info.case_id, epoch: 1, senderId: me, clientMsgId: entry.cmid,
          nonce: entry.nonce, ciphertext: entry.ciphertext,
        });
        const carried = outbox.carry();
        const after = new Outbox({ me, identity, request, isOnline: () => false, keys, processor,
          onChange: () => {} }, carried);
        console.log(JSON.stringify({
          frames: frames.map((s) => [s.client_msg_id, s.epoch, hex(s.nonce), hex(s.ciphertext)]),
          status: entry.status,
          opened: [opened.body, opened.clientMsgId === entry.cmid],
          carried: carried.map((e) => [e.body, e.status, e.cmid === entry.cmid, !!e.ciphertext]),
          afterLock: after.pendingFor(info.case_id).length,
        }));
        """
    )
    first, again = got["frames"]
    assert first == again and first[1] == 1  # same client_msg_id, epoch, nonce, ciphertext
    assert got["status"] == "pending"  # a lost connection keeps it pending, not failed
    assert got["opened"] == ["hello from the page", True]
    assert got["carried"] == [[None, "pending", True, True]]
    assert got["afterLock"] == 1


def test_processor_dedupes_never_lowers_and_settles_own_acks_without_the_hub(
    node: Callable[[str], Any],
) -> None:
    got = node(
        PRELUDE
        + """
        cs.lastSeen = 5;
        processor.onEvent({ type: "msg.new", message: {
          case_id: info.case_id, seq: 4, epoch: 1, sender_id: "acct_client",
          client_msg_id: "old", nonce: c.toB64(new Uint8Array(24)),
          ciphertext: c.toB64(new Uint8Array(40)), chain_hash: c.toB64(new Uint8Array(32)),
          server_ts: 1,
        } });
        processor.ownAck(cs, { caseId: info.case_id, seq: 3, clientMsgId: "mine-3" });
        await cs.queue;
        processor.upsertCase({ ...info, epoch: 0, last_seq: 2, state: "closed" }, false);
        processor.upsertCase({ ...info, state: "assigned" }, false);
        processor.onEvent({ type: "typing.new", case_id: info.case_id, account_id: "acct_client",
          active: true });
        // Receipts count only when the client's signature over the chain hash verifies
        const client = c.generateIdentity();
        keys.directory.set("acct_client", {
          accountId: "acct_client", handle: "alice", role: "client",
          signPk: client.signPk, boxPk: client.boxPk, cert: null,
        });
        const head = c.randomBytes(32);
        // ... and name our record's chain hash at their seq (set here as processed).
        for (const seq of [2, 4]) cs.hashes.set(seq, head);
        const receipt = (signer, kind, seq) => ({
          type: "receipt.new", case_id: info.case_id, account_id: "acct_client", kind,
          up_to_seq: seq, chain_hash: c.toB64(head),
          sig: c.toB64(c.signReceipt(signer, info.case_id, kind, seq, head)),
        });
        processor.onEvent(receipt(client, "read", 4));
        processor.onEvent(receipt(client, "delivered", 2));
        processor.onEvent(receipt(identity, "read", 5)); // not the client's signature
        await cs.queue;
        cs.hashes.set(5, head);
        processor.markRead(info.case_id);
        console.log(JSON.stringify({
          requests: sent.map((s) => s.type),
          stored,
          info: [cs.info.epoch, cs.info.last_seq, cs.info.state],
          typing: processor.isTyping(cs),
          receipts: [cs.peerDelivered, cs.peerRead],
          problems: cs.problems.map((p) => [p.seq, p.kind, p.detail]),
          receiptSent: sent.filter((s) => s.type === "receipt").map((s) =>
            [s.kind, s.up_to_seq, c.equalBytes(s.chain_hash, head),
             (() => { try { c.verifyReceipt(identity.signPk, s.case_id, s.kind, s.up_to_seq,
               s.chain_hash, s.sig); return "signed"; }
               catch { return "bad"; } })()]),
          messages: cs.messages.size,
        }));
        processor.wipe();
        """
    )
    assert got["requests"] == ["receipt"]  # only the read receipt: nothing was synced
    assert got["stored"] == ["mine-3"]  # our message was processed before: settled
    assert got["info"] == [1, 2, "closed"]  # never lowered; closed stays closed
    assert got["typing"] is True and got["receipts"] == [4, 4]
    assert got["problems"] == [[5, "rewritten", "read receipt is not signed by its sender"]]
    assert got["receiptSent"] == [["read", 5, True, "signed"]]
    assert got["messages"] == 0


def test_escrow_policy_is_fetched_once_per_session(node: Callable[[str], Any]) -> None:
    got = node(
        PRELUDE
        + """
        const { Escrow } = await import("./src/escrow.js");
        const session = { generation: 1 };
        let asked = 0;
        const answer = async (type) => {
          asked += 1;
          return { type: "policy.result", policy: null, terms_version: 0, consented: true };
        };
        const escrow = new Escrow({ request: answer, session, orgFingerprint: null,
          onChange: (kind) => changes.push(kind) });
        const counts = [];
        await Promise.all([escrow.policy(), escrow.capsule("case_page", 1, c.newCaseKey())]);
        counts.push(asked); // one question for both uses in session 1
        await escrow.policy();
        counts.push(asked);
        session.generation = 2;
        await escrow.policy();
        counts.push(asked); // a new session asks again
        escrow.forget();
        const none = await escrow.capsule("case_page", 1, c.newCaseKey());
        counts.push(asked); // and so does a refused capsule
        console.log(JSON.stringify({ counts, none, shown: escrow.shown, changes }));
        """
    )
    assert got["counts"] == [1, 1, 2, 3]
    assert got["none"] is None  # no escrow on this hub: no capsule
    assert got["shown"] == {"installed": False} and got["changes"] == ["policy"]


def test_outbox_resends_an_unavailable_send_instead_of_failing_it(
    node: Callable[[str], Any],
) -> None:
    # The hub answers `unavailable` when its database is away (issue 13, item 10): the
    # message was not stored, so the page sends the same bytes again shortly.
    got = node(
        PRELUDE
        + """
        const { RemoteError } = await import("./src/protocol.js");
        const key = c.newCaseKey();
        cs.keys.set(1, key);
        const frames = [];
        const answered = [];
        const sendRequest = async (type, fields) => {
          if (type !== "msg.send") return request(type, fields);
          frames.push([fields.client_msg_id, hex(fields.nonce), hex(fields.ciphertext)]);
          if (frames.length === 1) {
            answered.push("unavailable");
            throw new RemoteError("unavailable", "database unavailable; retry");
          }
          answered.push("ack");
          return { case_id: fields.case_id, client_msg_id: fields.client_msg_id, seq: 1,
                   chain_hash: c.toB64(new Uint8Array(32)), duplicate: false };
        };
        const outbox = new Outbox({
          me, identity, request: sendRequest, isOnline: () => true, keys, processor,
          onChange: (kind) => changes.push(kind),
        });
        await outbox.send(info.case_id, "sent while the database was away");
        await cs.queue;
        const [entry] = outbox.pendingFor(info.case_id);
        const statusAfterRefusal = entry.status;
        const deadline = Date.now() + 5000;
        while (answered.length < 2 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        console.log(JSON.stringify({ frames, answered, statusAfterRefusal, status: entry.status }));
        """
    )
    assert got["answered"] == ["unavailable", "ack"]
    first, again = got["frames"]
    assert first == again  # the same client_msg_id, nonce and ciphertext
    assert got["statusAfterRefusal"] == "pending"
    assert got["status"] == "acked"
