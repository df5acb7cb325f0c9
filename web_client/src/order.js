// The order participants signed, checked against the history the hub presents (v2 §4).
// Python counterpart: protocol/transcript.py (check_order); the rules and wording match.
//
// For each message at seq s from sender S, with its verified envelope:
//   (a) prev_seq < s, else "reordered";
//   (b) if prev_seq > 0, a record at prev_seq is presented ("dropped" if not) and its
//       chain hash is prev_hash ("rewritten" if not);
//   (c) S's n values in seq order are 1, 2, 3 ...: a missing value is "dropped", a value
//       lower than one already seen "reordered";
//   (d) a repeated (S, client_msg_id) or (S, n) is "replayed".
// Records that could not be opened are not in `opened` and are skipped.
// A problem is { seq, kind, senderId, detail }.

import { equalBytes } from "./crypto.js";

/** records: [{ seq, senderId, clientMsgId, chainHash }] in presented order; opened: Map
 *  seq -> { prevSeq, prevHash, n }. Returns the problems sorted by seq. */
export function checkOrder(records, opened) {
  const problems = [];
  const bySeq = new Map(records.map((r) => [r.seq, r]));
  const counters = new Map(); // sender -> Set of n
  const highest = new Map(); // sender -> [n, seq]
  const ids = new Set();
  const sightings = new Map(); // sender -> [[n, seq]]
  for (const r of records) {
    const env = opened.get(r.seq);
    if (env === undefined) continue;
    const s = r.seq;
    const who = r.senderId;
    const report = (kind, detail) => problems.push({ seq: s, kind, senderId: who, detail });
    if (env.prevSeq >= s) {
      report("reordered", `written after seq ${env.prevSeq}, stored at seq ${s}`);
    } else if (env.prevSeq > 0) {
      const seen = bySeq.get(env.prevSeq);
      if (seen === undefined) {
        report("dropped", `seq ${env.prevSeq}, which its sender saw, is missing`);
      } else if (!equalBytes(seen.chainHash, env.prevHash)) {
        report("rewritten", `history before seq ${s} was rewritten (seq ${env.prevSeq} ` +
          "differs from what its sender saw)");
      }
    }
    const id = JSON.stringify([who, r.clientMsgId]);
    if (ids.has(id)) report("replayed", `message ${r.clientMsgId} appears again`);
    ids.add(id);
    if (!counters.has(who)) counters.set(who, new Set());
    const seenN = counters.get(who);
    const [topN, topSeq] = highest.get(who) ?? [0, 0];
    if (seenN.has(env.n)) {
      report("replayed", `message n=${env.n} of ${who} appears again`);
    } else if (env.n < topN) {
      report("reordered", `message n=${env.n} of ${who} comes after n=${topN} (seq ${topSeq})`);
    }
    seenN.add(env.n);
    if (!sightings.has(who)) sightings.set(who, []);
    sightings.get(who).push([env.n, s]);
    if (env.n > topN) highest.set(who, [env.n, s]);
  }
  for (const [who, values] of counters) {
    const topN = highest.get(who)[0];
    for (let missing = 1; missing <= topN; missing += 1) {
      if (values.has(missing)) continue;
      const at = sightings.get(who).find(([n]) => n > missing)[1];
      problems.push({ seq: at, kind: "dropped", senderId: who,
        detail: `message n=${missing} of ${who} is missing` });
    }
  }
  return problems.sort((a, b) => a.seq - b.seq);
}

/** One line for the view: "seq 4: dropped (acct…): message n=2 of … is missing". */
export const describeProblem = (p) => `seq ${p.seq}: ${p.kind}: ${p.detail}`;
