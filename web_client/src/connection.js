// One WebSocket to the hub: request/answer matching by id, events to a callback, and
// the close code. Reconnecting is the workspace's job (it knows what to resume); a
// Connection is used once and then thrown away.

import {
  ConnectionLost,
  RemoteError,
  decodeFrame,
  encodeFrame,
} from "./protocol.js";

/** ws(s)://<this origin>/ws: the page and its socket share one origin (CSP connect-src). */
export function hubUrl() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}/ws`;
}

export class Connection {
  /**
   * @param {object} handlers onEvent(frame) for server events, onClose({code, reason, local}).
   */
  constructor(url, { onEvent = () => {}, onClose = () => {} } = {}) {
    this.url = url;
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.closed = false;
    this.closedByUs = false;
    // Resolves with { code, reason, local } once the socket has closed, however it
    // closed; `local` is true when this page closed it (to retry, or on a timeout).
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  /** Resolve when the socket is open; reject if it fails first. */
  open(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      const timer = setTimeout(() => {
        if (!settled) {
          settled = true;
          this.closedByUs = true;
          ws.close();
          reject(new ConnectionLost());
        }
      }, timeoutMs);
      ws.addEventListener("open", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(this);
      });
      ws.addEventListener("message", (ev) => this.#receive(ev.data));
      ws.addEventListener("close", (ev) => {
        clearTimeout(timer);
        this.#closed(ev.code, ev.reason);
        if (!settled) {
          settled = true;
          reject(new ConnectionLost());
        }
      });
    });
  }

  get isOpen() {
    return !this.closed && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send a request and resolve with its answer frame; `error` rejects with RemoteError. */
  request(type, fields = {}) {
    if (!this.isOpen) return Promise.reject(new ConnectionLost());
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(encodeFrame(type, id, fields));
    });
  }

  close(code = 1000, reason = "") {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      this.closedByUs = true;
      this.ws.close(code, reason);
    }
  }

  #receive(data) {
    if (typeof data !== "string") return;
    const frame = decodeFrame(data);
    if (frame === undefined) {
      console.warn("skipping an undecodable frame from the hub");
      return;
    }
    const waiter = typeof frame.id === "string" ? this.pending.get(frame.id) : undefined;
    if (waiter !== undefined) {
      this.pending.delete(frame.id);
      if (frame.type === "error") waiter.reject(new RemoteError(frame.code, frame.message ?? ""));
      else waiter.resolve(frame);
      return;
    }
    if (frame.type === "error") {
      console.warn("hub error without a request:", frame.code);
      return;
    }
    try {
      this.onEvent(frame);
    } catch (err) {
      console.error("event handler failed", err);
    }
  }

  #closed(code, reason) {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.pending.values()) waiter.reject(new ConnectionLost());
    this.pending.clear();
    const info = { code, reason, local: this.closedByUs };
    this.resolveDone(info);
    this.onClose(info);
  }
}
