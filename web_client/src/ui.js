// The workspace view: case list, conversation panes, connection banner and alerts.
//
// Built with DOM calls only: message text goes in through textContent, never as HTML,
// and no inline style or handler attributes are written (the CSP forbids them).

import { MAX_MESSAGE_CHARS } from "./protocol.js";
import { openVerifyDialog, renderCaseWarnings, renderKeyAlerts } from "./trustview.js";

const STATUS_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Connection lost. Reconnecting…",
  syncing: "Catching up…",
  online: "Connected",
  offline: "Disconnected",
};

const MESSAGE_STATE_TEXT = {
  pending: "Sending…",
  failed: "Not sent",
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium", timeStyle: "short",
});
const dayTimeFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
});

const shortId = (id) => id.slice(-6);

/** "14:05" today, else "3 Mar, 14:05": when a case was opened, short enough for the list. */
function openedText(date) {
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? timeFormat.format(date)
    : dayTimeFormat.format(date);
}

export class WorkspaceView {
  constructor(workspace, dom) {
    this.ws = workspace;
    this.dom = dom;
    this.panes = new Map(); // case_id -> { root, log, typing, textarea, ... }
    this.dirty = new Set();
    this.scheduled = false;
    this.typingState = new Map(); // case_id -> { active, lastSent, stopTimer }
    this.asked = new Set(); // case ids whose client's pseudonym was asked for
    dom.caseList.addEventListener("keydown", (ev) => this.#caseListKeys(ev));
    document.addEventListener("visibilitychange", this.onVisible = () => this.#markVisibleRead());
  }

  /** Called by the workspace on every change; rendering is batched per frame. */
  update(kind, caseId) {
    if (kind === "newcase") {
      this.#announce(caseId);
      this.dirty.add("cases");
    } else if (kind === "case" || kind === "typing") {
      this.dirty.add(`case:${caseId}`);
    } else {
      this.dirty.add(kind);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.#flush(), 0);
    }
  }

  #flush() {
    this.scheduled = false;
    const dirty = [...this.dirty];
    this.dirty.clear();
    for (const item of dirty) {
      if (item === "status") this.#renderBanner();
      else if (item === "policy") this.#renderPolicy();
      else if (item === "cases") this.#renderCaseList();
      else if (item === "keys") this.#renderKeys();
      else if (item.startsWith("case:")) this.#renderPane(item.slice(5));
    }
    this.#markVisibleRead();
  }

  /** "New case from calm-river: anxiety, en (#abc123)." once the pseudonym is known. */
  async #announce(caseId) {
    const cs = this.ws.cases.get(caseId);
    if (cs === undefined) return;
    const who = (await this.ws.clientHandle(cs)) ?? "a client";
    this.toast(
      `New case from ${who}: ${cs.info.topic}, ${cs.info.language} (#${shortId(caseId)}).`,
    );
    this.update("cases");
  }

  /** The client's pseudonym for display; fetched once in the background if unknown. */
  #clientName(cs) {
    const handle = this.ws.handleOf(cs.info.client_id);
    if (handle !== null) return handle;
    if (!this.asked.has(cs.info.case_id)) {
      this.asked.add(cs.info.case_id);
      this.ws.clientHandle(cs).then((h) => {
        if (h !== null) {
          this.update("cases");
          this.update("case", cs.info.case_id);
        }
      });
    }
    return "Client";
  }

  destroy() {
    document.removeEventListener("visibilitychange", this.onVisible);
    for (const state of this.typingState.values()) clearTimeout(state.stopTimer);
    this.dom.caseList.replaceChildren();
    this.dom.panes.replaceChildren();
    this.dom.toasts.replaceChildren();
    if (this.dom.escrow) this.dom.escrow.hidden = true;
    this.panes.clear();
  }

  toast(text) {
    const item = el("p", { class: "toast", text });
    const dismiss = el("button", { type: "button", class: "link", text: "Dismiss" });
    dismiss.addEventListener("click", () => item.remove());
    item.append(" ", dismiss);
    this.dom.toasts.append(item);
    setTimeout(() => item.remove(), 15000);
  }

  // -- banner --------------------------------------------------------------------------

  #renderBanner() {
    const { state, detail } = this.ws.status;
    const banner = this.dom.banner;
    banner.hidden = false;
    banner.dataset.state = state;
    banner.replaceChildren(el("span", { text: detail || STATUS_TEXT[state] || state }));
    if (state === "offline" || state === "reconnecting") {
      const button = el("button", { type: "button", class: "link", text: "Reconnect now" });
      button.addEventListener("click", () => this.ws.reconnectNow());
      banner.append(" ", button);
    }
  }

  #renderPolicy() {
    const policy = this.ws.policy;
    const box = this.dom.escrow;
    if (!box || policy === null) return;
    box.hidden = false;
    box.querySelector("details")?.remove();
    if (!policy.installed) {
      this.dom.escrowText.textContent =
        "No escrow policy is installed: nobody but you and the client can read a case.";
      return;
    }
    // Plain words first: who could read a case besides its two participants, and when.
    const who = `any ${policy.threshold} of ${policy.officers.length} escrow officers ` +
      `(${policy.officers.join(", ")})`;
    const until = dateTimeFormat.format(policy.notAfter);
    // Unverified: this page escrows nothing and cannot start a conversation (docs/WEB.md).
    this.dom.escrowText.textContent = policy.fingerprint
      ? "Besides you and the client, nobody can read a case, unless the client files a " +
        `written dispute request (or a legal order is recorded) and ${who} each approve ` +
        "it with their own offline key. Not even the hub's operator can." +
        // A threshold below 2 is allowed only with an explicit flag at signing; say so.
        (policy.threshold < 2 ? " Warning: one officer alone, with their own key, can open a case." : "")
      : "This page does not trust what the hub says about who could unseal cases, so it " +
        "keeps no sealed copy of any case key and cannot write first in a case. Ask your " +
        "administrator (see Details).";
    const facts = policy.fingerprint
      ? [
        `The escrow policy ${policy.fingerprint} is signed by the organisation key this ` +
          "hub pins; it names " + `${who}.`,
        `It is valid until ${until}.`,
      ]
      : [
        `Refused: ${policy.problem}.`,
        `The refused policy names ${who}, valid until ${until}.`,
      ];
    box.append(el(
      "details", { class: "escrow-details" },
      el("summary", { text: "Details" }),
      ...facts.map((text) => el("p", { text })),
    ));
    box.dataset.verified = policy.fingerprint ? "yes" : "no";
  }

  #renderKeys() {
    if (this.dom.keyAlerts) renderKeyAlerts(this.dom.keyAlerts, this.ws);
    for (const caseId of this.panes.keys()) this.#renderPane(caseId);
  }

  /** The Verify dialog for a case's client (fingerprints and safety number). */
  #verifyClient(caseId) {
    const cs = this.ws.cases.get(caseId);
    const info = cs?.info.client_id ? this.ws.verification(cs.info.client_id) : null;
    if (info === null) this.toast("The client's keys are not verified yet; try again in a moment.");
    else openVerifyDialog(info);
  }

  // -- case list ----------------------------------------------------------------------

  #renderCaseList() {
    const list = this.dom.caseList;
    const focusedId = document.activeElement?.dataset?.caseId;
    const items = this.ws.sortedCases().map((cs) => {
      const id = cs.info.case_id;
      const unread = this.ws.unread(cs);
      const client = this.#clientName(cs);
      const opened = new Date(cs.info.created_at);
      const label = [
        `Case ${shortId(id)} from ${client}`, cs.info.topic, cs.info.language, cs.info.state,
        `opened ${dateTimeFormat.format(opened)}`,
        unread ? `${unread} unread` : "", cs.isNew ? "new" : "",
      ].filter(Boolean).join(", ");
      const button = el(
        "button",
        {
          type: "button",
          class: "case-item",
          "data-case-id": id,
          "data-state": cs.info.state,
          "aria-label": label,
          "aria-pressed": this.panes.has(id) ? "true" : "false",
        },
        el("span", { class: "case-title", text: client }),
        el("span", { class: "case-sub", text: `${cs.info.topic} · ${cs.info.language} · ${cs.info.state}` }),
        el(
          "span", { class: "case-sub" }, `#${shortId(id)} · opened `,
          el("time", {
            class: "case-opened", datetime: opened.toISOString(), text: openedText(opened),
          }),
        ),
        el(
          "span", { class: "badges" },
          cs.isNew ? el("span", { class: "badge new", text: "new" }) : null,
          unread ? el("span", { class: "badge unread", text: String(unread) }) : null,
        ),
      );
      button.addEventListener("click", () => this.openPane(id));
      return el("li", {}, button);
    });
    list.replaceChildren(...items);
    this.dom.caseEmpty.hidden = items.length > 0;
    if (focusedId) list.querySelector(`[data-case-id="${CSS.escape(focusedId)}"]`)?.focus();
  }

  /** Arrow keys move between cases; Home/End jump (Tab leaves the list). */
  #caseListKeys(ev) {
    const buttons = [...this.dom.caseList.querySelectorAll("button.case-item")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const next = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, next))].focus();
  }

  // -- panes ----------------------------------------------------------------------------

  openPane(caseId) {
    let pane = this.panes.get(caseId);
    if (pane === undefined) {
      pane = this.#buildPane(caseId);
      this.panes.set(caseId, pane);
      this.dom.panes.append(pane.root);
      this.dom.panesEmpty.hidden = true;
      this.#renderPane(caseId);
      this.#renderCaseList();
    }
    pane.textarea.focus();
    this.#markVisibleRead();
  }

  closePane(caseId) {
    const pane = this.panes.get(caseId);
    if (pane === undefined) return;
    this.#stopTyping(caseId);
    pane.root.remove();
    this.panes.delete(caseId);
    this.dom.panesEmpty.hidden = this.panes.size > 0;
    this.#renderCaseList();
    this.dom.caseList.querySelector(`[data-case-id="${CSS.escape(caseId)}"]`)?.focus();
  }

  #buildPane(caseId) {
    const titleId = `pane-title-${caseId}`;
    const inputId = `composer-${caseId}`;
    const title = el("h2", { id: titleId });
    const meta = el("p", { class: "pane-meta" });
    const closeCase = el("button", { type: "button", class: "danger close-case", text: "Close case" });
    const verify = el("button", {
      type: "button", class: "verify", text: "Verify",
      "aria-label": "Verify the client's keys (safety number)",
    });
    const warnings = el("div", { class: "case-warnings", hidden: true });
    const hide = el("button", {
      type: "button", class: "hide-pane", "aria-label": "Hide this conversation", text: "Hide",
    });
    const log = el("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    const empty = el("p", { class: "empty", text: "No messages yet." });
    const keyWait = el("p", { class: "key-wait", role: "status", hidden: true });
    const typing = el("p", { class: "typing", "aria-live": "polite" });
    const textarea = el("textarea", {
      id: inputId, rows: 2, maxlength: MAX_MESSAGE_CHARS, placeholder: "Write a reply (Enter sends, Shift+Enter adds a line)",
    });
    const send = el("button", { type: "submit", class: "primary", text: "Send" });
    const form = el(
      "form", { class: "composer" },
      el("label", { for: inputId, class: "visually-hidden", text: "Reply" }), textarea, send,
    );
    const root = el(
      "section",
      { class: "pane", "aria-labelledby": titleId, "data-case-id": caseId },
      el("header", { class: "pane-head" }, el("div", {}, title, meta), el("div", { class: "pane-actions" }, verify, closeCase, hide)),
      warnings, empty, log, keyWait, typing, form,
    );
    const pane = {
      root, title, meta, log, empty, keyWait, typing, textarea, send, form, closeCase, warnings,
      confirmTimer: null,
    };
    verify.addEventListener("click", () => this.#verifyClient(caseId));

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.#send(caseId);
    });
    textarea.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.#send(caseId);
      } else if (ev.key === "Escape") {
        this.closePane(caseId);
      }
    });
    textarea.addEventListener("input", () => this.#typed(caseId));
    hide.addEventListener("click", () => this.closePane(caseId));
    // Two-step close: the first press arms the button for a few seconds.
    closeCase.addEventListener("click", () => this.#closeCaseClicked(caseId, pane));
    log.addEventListener("click", (ev) => {
      const retry = ev.target.closest("button[data-retry]");
      if (retry) this.ws.retry(retry.dataset.retry);
    });
    return pane;
  }

  async #closeCaseClicked(caseId, pane) {
    if (!pane.closeCase.classList.contains("armed")) {
      pane.closeCase.classList.add("armed");
      pane.closeCase.textContent = "Confirm: close case";
      pane.confirmTimer = setTimeout(() => {
        pane.closeCase.classList.remove("armed");
        pane.closeCase.textContent = "Close case";
      }, 5000);
      return;
    }
    clearTimeout(pane.confirmTimer);
    pane.closeCase.classList.remove("armed");
    pane.closeCase.disabled = true;
    try {
      await this.ws.closeCase(caseId);
    } catch (err) {
      pane.closeCase.disabled = false;
      pane.closeCase.textContent = "Close case";
      this.toast(`Could not close the case: ${err.message}`);
    }
  }

  #send(caseId) {
    const pane = this.panes.get(caseId);
    const body = pane.textarea.value;
    if (body.trim() === "") return;
    pane.textarea.value = "";
    this.#stopTyping(caseId);
    this.ws.send(caseId, body).catch((err) => this.toast(`Could not send: ${err.message}`));
  }

  #typed(caseId) {
    const state = this.typingState.get(caseId) ?? { active: false, lastSent: 0, stopTimer: null };
    this.typingState.set(caseId, state);
    const now = Date.now();
    // At most one "typing" every 3 s, and "stopped" after 4 s without input (§8.11).
    if (!state.active || now - state.lastSent > 3000) {
      state.active = true;
      state.lastSent = now;
      this.ws.typing(caseId, true);
    }
    clearTimeout(state.stopTimer);
    state.stopTimer = setTimeout(() => this.#stopTyping(caseId), 4000);
  }

  #stopTyping(caseId) {
    const state = this.typingState.get(caseId);
    if (state === undefined) return;
    clearTimeout(state.stopTimer);
    if (state.active) this.ws.typing(caseId, false);
    this.typingState.delete(caseId);
  }

  #renderPane(caseId) {
    const pane = this.panes.get(caseId);
    const cs = this.ws.cases.get(caseId);
    if (pane === undefined || cs === undefined) return;
    const info = cs.info;
    pane.title.textContent =
      `${this.#clientName(cs)}: ${info.topic} (${info.language}), case #${shortId(caseId)}`;
    const fp = info.client_id ? this.ws.fingerprintOf(info.client_id) : null;
    pane.meta.textContent =
      `${info.state === "closed" ? "Closed" : "Open"} · opened ${dateTimeFormat.format(info.created_at)}` +
      (fp ? ` · client fingerprint ${fp}` : "");
    pane.root.dataset.state = info.state;
    const closed = info.state === "closed";
    pane.textarea.disabled = closed;
    pane.send.disabled = closed;
    pane.closeCase.hidden = closed;
    if (closed) pane.textarea.placeholder = "This case is closed.";
    pane.typing.textContent = !closed && this.ws.isTyping(cs) ? "The client is typing…" : "";
    renderCaseWarnings(pane.warnings, cs.problems, this.ws.caseNote(caseId));

    const stick = pane.log.scrollHeight - pane.log.scrollTop - pane.log.clientHeight < 40;
    const items = [...cs.messages.values()].sort((a, b) => a.seq - b.seq).map((m) => this.#messageItem(cs, m));
    for (const entry of this.ws.pendingFor(caseId)) {
      if (!cs.messages.has(entry.seq)) items.push(this.#pendingItem(entry));
    }
    pane.log.replaceChildren(...items);
    const held = cs.keyPending !== 0 ? Math.max(1, cs.info.last_seq - cs.lastSeen) : 0;
    pane.keyWait.hidden = held === 0;
    pane.keyWait.textContent = held === 0 ? "" :
      `Waiting for the client's key: ${held} message${held === 1 ? "" : "s"} from the client ` +
      "will appear here once their device shares the key (it does when it is online).";
    pane.empty.hidden = items.length > 0 || held > 0;
    if (stick) pane.log.scrollTop = pane.log.scrollHeight;
  }

  #messageItem(cs, m) {
    const mine = m.senderId === this.ws.me;
    const who = mine ? "You" : this.#clientName(cs);
    let state = null;
    if (mine) state = m.seq <= cs.peerRead ? "read" : m.seq <= cs.peerDelivered ? "delivered" : "sent";
    const li = el("li", {
      class: `msg ${mine ? "mine" : "theirs"} ${m.verified ? "verified" : "unverified"}`,
      "data-seq": m.seq,
      "data-status": state,
    });
    const mark = m.verified
      ? el("span", { class: "mark ok", title: "Decrypted and signature verified", text: "✓ verified" })
      : el("span", { class: "mark bad", text: "⚠ not verified" });
    li.append(el("div", { class: "meta" }, el("span", { class: "who", text: who }), " ",
      el("time", { datetime: new Date(m.ts).toISOString(), text: timeFormat.format(m.ts) }), " ", mark));
    if (m.verified) {
      li.append(el("p", { class: "body", text: m.body }));
    } else {
      li.append(el("p", {
        class: "body warning", role: "note",
        text: `This message failed verification and is not shown (${m.error}). It may have been altered.`,
      }));
    }
    if (state) li.append(el("p", { class: "state", text: MESSAGE_STATE_TEXT[state] }));
    return li;
  }

  #pendingItem(entry) {
    const failed = entry.status === "failed";
    const li = el("li", {
      class: "msg mine pending", "data-cmid": entry.cmid, "data-status": failed ? "failed" : "pending",
    });
    li.append(el("div", { class: "meta" }, el("span", { class: "who", text: "You" }), " ",
      el("time", { datetime: new Date(entry.ts).toISOString(), text: timeFormat.format(entry.ts) })));
    li.append(el("p", {
      class: "body", text: entry.body ?? "(encrypted message from before the lock, being resent)",
    }));
    const state = el("p", { class: "state", text: MESSAGE_STATE_TEXT[failed ? "failed" : "pending"] });
    if (failed) {
      state.append(`: ${entry.error} `,
        el("button", { type: "button", class: "link", "data-retry": entry.cmid, text: "Retry" }));
    }
    li.append(state);
    return li;
  }

  /** Open panes count as read while the page is visible. */
  #markVisibleRead() {
    if (document.visibilityState !== "visible") return;
    for (const caseId of this.panes.keys()) this.ws.markRead(caseId);
  }
}
