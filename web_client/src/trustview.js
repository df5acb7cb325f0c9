// What the page shows about trust (protocol v2): the key-change alert with its way out,
// the Verify dialog (fingerprints and safety number), and a case's order warnings.
// Small DOM builders used by ui.js; text only through textContent (CSP, no HTML).

import { describeProblem } from "./order.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** The Verify dialog for a contact: both fingerprints and the safety number to compare
 *  out of band. `info` is Workspace.verification(); `onTrust` (optional) is offered
 *  as "Trust the new keys" when the contact's keys changed. */
export function openVerifyDialog(info, { title = "Verify", onTrust = null } = {}) {
  const dialog = el("dialog", { class: "verify-dialog", "aria-labelledby": "verify-title" });
  const close = el("button", { type: "button", text: "Close" });
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(
    el("h2", { id: "verify-title", text: `${title}: ${info.handle}` }),
    el("p", {
      text: `Read the safety number to ${info.handle} in person or by phone; it is the ` +
        "same on both sides only if nobody swapped a key in between.",
    }),
    el("p", { class: "safety-number", "data-role": "safety-number", text: info.safetyNumber }),
    el("dl", {},
      el("dt", { text: `${info.handle}'s fingerprint` }),
      el("dd", {}, el("code", { "data-role": "their-fingerprint", text: info.fingerprint })),
      el("dt", { text: "My fingerprint" }),
      el("dd", {}, el("code", { "data-role": "my-fingerprint", text: info.mine }))),
  );
  const actions = el("p", { class: "dialog-actions" });
  if (onTrust) {
    const trust = el("button", { type: "button", class: "danger", text: "Trust the new keys" });
    trust.addEventListener("click", async () => {
      trust.disabled = true;
      await onTrust();
      dialog.close();
    });
    actions.append(trust, " ");
  }
  actions.append(close);
  dialog.append(actions);
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** The hard failure when a contact's keys changed: one alert per contact, with why and
 *  what to do, and a way to compare the new safety number and trust the new keys. */
export function renderKeyAlerts(box, workspace) {
  const items = [...workspace.keyProblems.entries()].map(([accountId, { error }]) => {
    const verify = el("button", { type: "button", text: "Compare the new safety number" });
    verify.addEventListener("click", () => {
      const info = workspace.keyChangeVerification(accountId);
      if (info) {
        openVerifyDialog(info, {
          title: "New keys", onTrust: () => workspace.trustNewKeys(accountId),
        });
      }
    });
    return el("div", { class: "key-alert", role: "alert", "data-account-id": accountId },
      el("strong", { text: "Security warning. " }), error.message, " ", verify);
  });
  if (workspace.prefsProblem) {
    items.unshift(el("div", { class: "key-alert", role: "alert", "data-prefs": "refused" },
      el("strong", { text: "Security warning. " }),
      `Your saved contact keys cannot be used: ${workspace.prefsProblem.message}. ` +
        "This page verifies nobody's keys until this is resolved; tell your organisation."));
  }
  box.replaceChildren(...items);
  box.hidden = items.length === 0;
}

/** A case's warnings: history that contradicts the signed order, and the plain note when
 *  no organisation key vouches for a counselor. */
export function renderCaseWarnings(box, problems, note) {
  const items = [];
  if (problems.length > 0) {
    items.push(el("p", {
      class: "order-warning", role: "alert",
      text: "Warning: the history of this case contradicts what its participants signed " +
        "(a message may have been dropped, reordered, replayed or rewritten by the hub).",
    }));
    const list = el("ul", { class: "order-problems" });
    for (const p of problems) {
      list.append(el("li", { "data-seq": p.seq, "data-kind": p.kind, text: describeProblem(p) }));
    }
    items.push(list);
  }
  if (note) items.push(el("p", { class: "case-note", role: "note", text: note }));
  box.replaceChildren(...items);
  box.hidden = items.length === 0;
}

/** Whether clients that pin the organisation key will share case keys with us (v2 §2):
 *  our own certificate (from login.result) checked against the pinned organisation key.
 *  Nothing is shown when no organisation key is pinned. */
export function renderCertStatus(node, creds, orgFingerprint, verify) {
  if (!orgFingerprint) {
    node.hidden = true;
    return;
  }
  let ok = creds.cert !== null;
  if (ok) {
    try {
      verify(creds.cert, orgFingerprint, {
        accountId: creds.accountId, signPk: creds.identity.signPk, boxPk: creds.identity.boxPk,
      });
    } catch {
      ok = false;
    }
  }
  node.hidden = false;
  node.dataset.certified = ok ? "yes" : "no";
  node.textContent = ok
    ? "Certified by your organisation"
    : "Not certified by your organisation yet: clients will not share case keys with you " +
      "until it certifies you (ask your administrator; then sign in again).";
}
