// Idle auto-lock: after `seconds` without keyboard, pointer or touch input the page locks
// (the workspace drops keys and plaintext; the passphrase unlocks it again).

const ACTIVITY_EVENTS = ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "focusin"];

export class IdleLock {
  constructor(seconds, onIdle) {
    this.ms = Math.max(1, seconds) * 1000;
    this.onIdle = onIdle;
    this.timer = null;
    this.lastReset = 0;
    this.reset = () => this.#reset();
  }

  start() {
    for (const name of ACTIVITY_EVENTS) {
      window.addEventListener(name, this.reset, { passive: true, capture: true });
    }
    this.lastReset = 0;
    this.#reset();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    for (const name of ACTIVITY_EVENTS) window.removeEventListener(name, this.reset, true);
  }

  #reset() {
    // pointermove fires very often; re-arming the timer at most every 250 ms is enough.
    const now = Date.now();
    if (this.timer !== null && now - this.lastReset < 250) return;
    this.lastReset = now;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.stop();
      this.onIdle();
    }, this.ms);
  }
}
