"""The page restores read positions from the receipts a sync returns (issue 14: the
unread count must not come back in a fresh browser session for messages already read),
run in Node against a request function that answers like the hub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_sync_receipts_restore_read_position_and_peer_marks(
    node: Callable[[str], Any],
) -> None:
    got = node(
        """
        const saved = [];
        globalThis.sessionStorage = {
          getItem: () => null, setItem: (k, v) => saved.push(v), removeItem() {},
        };
        const c = await import("./src/crypto.js");
        await c.ready();
        const { Processor } = await import("./src/processor.js");
        const me = "acct_counselor";
        const info = {
          case_id: "case_page", client_id: "acct_client", counselor_id: me, state: "assigned",
          topic: "anxiety", language: "en", epoch: 1, last_seq: 0, created_at: 1,
        };
        const receipts = [
          { account_id: me, kind: "read", up_to_seq: 7 },
          { account_id: me, kind: "delivered", up_to_seq: 9 },
          { account_id: "acct_client", kind: "delivered", up_to_seq: 6 },
          { account_id: "acct_client", kind: "read", up_to_seq: 5 },
        ];
        const request = async (type) => {
          if (type !== "sync") throw new Error(type);
          return { messages: [], last_seq: 9, has_more: false, receipts };
        };
        const changes = [];
        const processor = new Processor({
          me, request, keys: null, onChange: (kind) => changes.push(kind), onStored() {},
        });
        const cs = processor.upsertCase(info, false);
        await processor.syncNow(cs);
        const first = [processor.cursors[info.case_id], cs.peerDelivered, cs.peerRead];
        receipts[0] = { account_id: me, kind: "read", up_to_seq: 3 };  // never lowered
        await processor.syncNow(cs);
        console.log(JSON.stringify({
          first,
          again: [processor.cursors[info.case_id], cs.peerDelivered, cs.peerRead],
          saved: JSON.parse(saved.at(-1)),
          changed: changes.includes("cases"),
        }));
        """
    )
    assert got["first"] == [7, 6, 5]
    assert got["again"] == [7, 6, 5]
    assert got["saved"] == {"case_page": 7}
    assert got["changed"] is True
