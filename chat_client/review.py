"""What ``chat-unseal`` writes for the reviewers: ``transcript.json`` and a printable,
self-contained ``transcript.html``, both made from a verified bundle's
:class:`protocol.bundle.Report`.

Both name who may have opened the case and on what authority: the request (kind,
reason, signer and their key fingerprint, when), the consent it rests on, each
approving officer by name and key fingerprint with the time they signed, the policy,
the hub key that signed the chain head, and a verdict for every message. The page
explains what each check means and prints cleanly (a print stylesheet: no colours
needed, no message split across pages), so it can go into a file for a hearing.
Every value is HTML-escaped: message text is data, never markup.

Only called once the authority to open has verified (exit 0 or 10; see unseal.py).
"""

from __future__ import annotations

import datetime
import html
from typing import Any

from protocol import crypto
from protocol.bundle import Bundle, Report

__all__ = ["render_html", "summary", "transcript_json"]

#: What the audit head in a bundle is for.
_AUDIT_NOTE = (
    "the hub's audit log at export; keep this bundle: `chat-server audit verify --anchor "
    "BUNDLE` detects any later removal of rows up to it"
)

_MEANING = [
    (
        "verified",
        "the message decrypted with the case key the officers' capsules opened, its "
        "sender's signature over it verified under the key listed for that participant, "
        "and it sits at its place in the hub's hash chain",
    ),
    (
        "NOT VERIFIED",
        "something failed (named with the message): its text is withheld, because it "
        "cannot be attributed to its sender as stored",
    ),
    (
        "MISSING",
        "the hub's signed chain head counts this message, but the bundle does not hold it",
    ),
    (
        "request",
        "signed by the key that also signed the client's consent to this policy and a "
        "case key: the client's own key, whose fingerprint is shown for comparison",
    ),
    (
        "approvals",
        "each is an officer's signature, made offline with their own key, over exactly "
        "this request; the policy's threshold of distinct officers is required",
    ),
]


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _request(bundle: Bundle, report: Report) -> dict[str, Any]:
    doc = bundle.request
    handles = {p.account_id: p.handle for p in bundle.participants}
    info: dict[str, Any] = {
        "request_id": doc.request_id,
        "kind": doc.kind,
        "filed_at": doc.timestamp,
        "recorded_at": doc.created_at,
        "note": report.request_note,
    }
    if doc.kind == "legal":
        info["legal_order"] = doc.legal_order
        signers = bundle.policy.policy.legal_signers
        if doc.order is not None and doc.order.signer_index < len(signers):
            signer = signers[doc.order.signer_index]
            info["order_signed_by"] = signer.name
            info["order_signer_fingerprint"] = crypto.fingerprint(signer.sign_pk)
            info["order_issued_at"] = doc.order.issued_at
        return info
    info["signer_id"] = doc.requester_id
    info["signer_handle"] = handles.get(doc.requester_id or "", "")
    info["signer_fingerprint"] = (
        crypto.fingerprint(doc.requester_sign_pk) if doc.requester_sign_pk else None
    )
    info["reason"] = report.reason
    if doc.evidence is not None:
        info["consent"] = {
            "terms_version": doc.evidence.terms_version,
            "policy_fingerprint": doc.policy_fingerprint,
            "key_commitment_epoch": (
                doc.evidence.epoch if doc.evidence.commitment is not None else None
            ),
        }
    return info


def _approvals(bundle: Bundle, report: Report) -> list[dict[str, Any]]:
    officers = bundle.policy.policy.officers
    return [
        {
            "officer_index": a.officer_index,
            "name": officers[a.officer_index].name,
            "fingerprint": crypto.fingerprint(a.officer_sign_pk),
            "approved_at": a.approved_at,
            "audit_head_seen": {"seq": a.audit_head.seq, "hash": a.audit_head.hash.hex()},
        }
        for a in bundle.approvals
        if a.officer_index in report.approvals_valid
    ]


def transcript_json(bundle: Bundle, report: Report) -> dict[str, Any]:
    policy = bundle.policy.policy
    return {
        "case_id": report.case_id,
        "exit_code": report.exit_code,
        "verified": report.exit_code == 0,
        "policy_fingerprint": report.policy_fingerprint,
        "policy": {
            "version": policy.version,
            "threshold": policy.threshold,
            "officers": [
                {"name": o.name, "fingerprint": crypto.fingerprint(o.sign_pk)}
                for o in policy.officers
            ],
            "org_fingerprint": crypto.fingerprint(policy.org_sign_pk),
        },
        "server_fingerprint": report.server_fingerprint,
        "chain_head": {"seq": bundle.chain_head.seq, "hash": bundle.chain_head.hash.hex()},
        "audit_head": {"seq": bundle.audit_head.seq, "hash": bundle.audit_head.hash.hex()},
        "exported_at": bundle.exported_at,
        "request": _request(bundle, report),
        "approvals": _approvals(bundle, report),
        "approvals_valid": report.approvals_valid,
        "officer_keys_used": report.keys_used,
        "participants": [
            {
                "account_id": p.account_id,
                "role": p.role,
                "handle": p.handle,
                "fingerprint": crypto.fingerprint(p.sign_pk),
            }
            for p in bundle.participants
        ],
        "missing_seqs": report.missing_seqs,
        "order_problems": [
            {"seq": p.seq, "kind": p.kind, "sender_id": p.sender_id, "detail": p.detail}
            for p in report.order_problems
        ],
        "problems": {"foreign": report.foreign, "keys": report.keys, "tampered": report.tampered},
        "messages": [
            {
                "seq": m.seq,
                "epoch": m.epoch,
                "sender_id": m.sender_id,
                "sender_role": m.sender_role,
                "client_msg_id": m.client_msg_id,
                "ts": m.ts,
                "server_ts": m.server_ts,
                "verified": m.ok,
                "body": m.body if m.ok else None,
                "problems": m.problems,
            }
            for m in report.messages
        ],
    }


_CSS = """
body { font: 11pt/1.45 Georgia, serif; max-width: 50em; margin: 2em auto; color: #111; }
h1 { font-size: 1.4em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table.meta { border-collapse: collapse; }
table.meta td { padding: .1em 1em .1em 0; vertical-align: top; }
table.meta td:first-child { font-weight: bold; white-space: nowrap; }
.fp { font: 9pt monospace; }
.msg { border-left: 4px solid #2a7; padding: .3em .8em; margin: .8em 0; break-inside: avoid; }
.msg.bad { border-color: #c22; background: #fff3f3; }
.msg .head { font: 9pt monospace; color: #555; }
.msg .body { white-space: pre-wrap; }
.verdict { font: bold 9pt sans-serif; } .ok { color: #161; } .fail { color: #a00; }
.problems li { color: #a00; }
dl.legend dt { font-weight: bold; } dl.legend dd { margin: 0 0 .4em 1.5em; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  .msg { background: none; border-left-width: 2px; }
  .msg.bad { border-left-style: double; border-left-width: 6px; }
  h2 { break-after: avoid; } table.meta, dl.legend { break-inside: avoid; }
  @page { margin: 18mm 15mm; }
}
"""


def _rows(pairs: list[tuple[str, str]]) -> list[str]:
    e = html.escape
    return [f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in pairs]


def render_html(bundle: Bundle, report: Report) -> str:
    """The transcript as one self-contained page; every value is HTML-escaped."""
    e = html.escape
    data = transcript_json(bundle, report)
    req = data["request"]
    roles = {p.account_id: f"{p.role} {p.handle}" for p in bundle.participants}
    ok = report.exit_code == 0
    verdict = "ALL VERIFIED" if ok else f"NOT VERIFIED (exit {report.exit_code})"
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Dispute transcript {e(report.case_id)}</title><style>{_CSS}</style></head>",
        f"<body><h1>Dispute transcript: case {e(report.case_id)}</h1>",
        f"<p class='verdict {'ok' if ok else 'fail'}'>{e(verdict)}</p>",
        "<h2>Authority to open</h2><table class='meta'>",
    ]
    pairs = [("Request", f"{e(req['request_id'])} ({e(req['kind'])})")]
    if req["kind"] == "legal":
        pairs.append(("Legal order", e(str(req.get("legal_order")))))
        if "order_signed_by" in req:
            pairs.append(
                (
                    "Order signed by",
                    f"{e(req['order_signed_by'])}, key "
                    f"<span class='fp'>{e(req['order_signer_fingerprint'])}</span>, "
                    f"{e(_time(req['order_issued_at']))} (a legal signer named in the policy)",
                )
            )
    else:
        pairs += [
            (
                "Signed by",
                f"{e(str(req['signer_handle']))} ({e(str(req['signer_id']))}), key "
                f"<span class='fp'>{e(str(req['signer_fingerprint']))}</span>",
            ),
            ("Reason", e(str(req["reason"]))),
        ]
        consent = req.get("consent")
        if consent is not None:
            epoch = consent["key_commitment_epoch"]
            pairs.append(
                (
                    "Consent",
                    f"terms version {consent['terms_version']} under policy "
                    f"<span class='fp'>{e(consent['policy_fingerprint'])}</span>, signed by "
                    "the same key"
                    + (f", as was the case key of epoch {epoch}" if epoch is not None else ""),
                )
            )
    pairs += [
        ("Filed", e(_time(req["filed_at"]))),
        ("Recorded by the hub", e(_time(req["recorded_at"]))),
    ]
    policy = data["policy"]
    approvals = "<br>".join(
        f"{e(a['name'])} <span class='fp'>{e(a['fingerprint'])}</span>, "
        f"{e(_time(a['approved_at']))}, having seen audit seq {a['audit_head_seen']['seq']}"
        for a in data["approvals"]
    )
    pairs += [
        (f"Approvals ({len(data['approvals'])} of {policy['threshold']} needed)", approvals or "-"),
        (
            "Escrow policy",
            f"version {policy['version']}, any {policy['threshold']} of "
            f"{len(policy['officers'])} officers; "
            f"<span class='fp'>{e(report.policy_fingerprint)}</span>; organisation key "
            f"<span class='fp'>{e(policy['org_fingerprint'])}</span>",
        ),
        ("Hub key", f"<span class='fp'>{e(report.server_fingerprint)}</span>"),
        (
            "Chain head",
            f"seq {data['chain_head']['seq']}, "
            f"<span class='fp'>{e(data['chain_head']['hash'])}</span>",
        ),
        (
            "Audit head",
            f"seq {data['audit_head']['seq']}, "
            f"<span class='fp'>{e(data['audit_head']['hash'])}</span>: {e(_AUDIT_NOTE)}",
        ),
        ("Exported", e(_time(bundle.exported_at))),
    ]
    out += _rows(pairs)
    out.append("</table>")
    out.append("<h2>Participants</h2><table class='meta'>")
    out += _rows(
        [
            (
                p["role"],
                f"{e(p['handle'])} ({e(p['account_id'])}), key "
                f"<span class='fp'>{e(p['fingerprint'])}</span>",
            )
            for p in data["participants"]
        ]
    )
    out.append("</table>")
    problems = report.foreign + report.keys + report.tampered
    if problems:
        out.append("<h2>Problems</h2><ul class='problems'>")
        out.extend(f"<li>{e(p)}</li>" for p in problems)
        out.append("</ul>")
    out.append("<h2>Messages</h2>")
    for m in report.messages:
        who = roles.get(m.sender_id, f"unknown {m.sender_id}")
        cls = "msg" if m.ok else "msg bad"
        mark = "verified" if m.ok else "NOT VERIFIED: " + "; ".join(m.problems)
        out.append(
            f"<div class='{cls}'><div class='head'>#{m.seq} · {e(who)} · "
            f"{e(_time(m.ts if m.ok else m.server_ts))} · epoch {m.epoch} · "
            f"<span class='verdict {'ok' if m.ok else 'fail'}'>{e(mark)}</span></div>"
        )
        if m.ok and m.body is not None:
            out.append(f"<div class='body'>{e(m.body)}</div>")
        out.append("</div>")
    for seq in report.missing_seqs:
        out.append(
            f"<div class='msg bad'><div class='head'>#{seq} · "
            "<span class='verdict fail'>MISSING from the bundle</span></div></div>"
        )
    out.append("<h2>What the verdicts mean</h2><dl class='legend'>")
    out.extend(f"<dt>{e(term)}</dt><dd>{e(text)}</dd>" for term, text in _MEANING)
    out.append("</dl></body></html>\n")
    return "\n".join(out)


def summary(bundle: Bundle, report: Report) -> str:
    """The verification summary ``chat-unseal`` prints (no message text in it)."""
    ok = sum(1 for m in report.messages if m.ok)
    officers = bundle.policy.policy.officers
    approved = ", ".join(officers[i].name for i in report.approvals_valid) or "none"
    lines = [
        f"case {report.case_id}: {ok}/{len(report.messages)} messages verified"
        + (f", {len(report.missing_seqs)} missing" if report.missing_seqs else ""),
        f"request {bundle.request.request_id}: {report.request_note}",
        f"escrow policy {report.policy_fingerprint}; approvals by {approved} "
        f"(officers {report.approvals_valid}); keys used {report.keys_used}",
        f"hub key {report.server_fingerprint}",
    ]
    for label, items in (
        ("FOREIGN", report.foreign),
        ("KEYS", report.keys),
        ("TAMPERED", report.tampered),
    ):
        lines.extend(f"{label}: {item}" for item in items)
    lines.append(
        "RESULT: all verified"
        if report.exit_code == 0
        else f"RESULT: NOT verified (exit {report.exit_code})"
    )
    return "\n".join(lines)
