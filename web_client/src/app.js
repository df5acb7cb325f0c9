// Entry point: screens (sign in / register, unlock, workspace), idle lock and sign-out.

import * as c from "./crypto.js";
import * as account from "./account.js";
import { IdleLock } from "./idle.js";
import { configureWeakKdf } from "./kdf.js";
import { checkPassphrase } from "./passphrase.js";
import { renderCertStatus } from "./trustview.js";
import { ErrorCode, RemoteError, isValidHandle } from "./protocol.js";
import { WorkspaceView } from "./ui.js";
import { Workspace } from "./workspace.js";

const $ = (id) => document.getElementById(id);
const SCREENS = ["screen-loading", "screen-auth", "screen-unlock", "screen-workspace"];
const DEFAULT_IDLE_SECONDS = 600;

const app = {
  creds: null,
  workspace: null,
  view: null,
  idle: null,
  idleSeconds: DEFAULT_IDLE_SECONDS,
  orgFingerprint: null, // escrow pin from /config.json (docs/WEB.md: set by the operator)
  carriedOutbox: [], // ciphertext of messages still unacknowledged when the page locked
};

function show(screen) {
  for (const id of SCREENS) $(id).hidden = id !== screen;
  $("account-bar").hidden = screen !== "screen-workspace";
  if (screen !== "screen-workspace") $("banner").hidden = true;
  document.body.dataset.screen = screen.replace("screen-", "");
}

function explain(err, formId) {
  if (err instanceof RemoteError) {
    switch (err.code) {
      case ErrorCode.AUTH_FAILED:
        // Each form names only what it asked for (the sign-in form has no invite field).
        if (formId === "register-form") return "The hub refused the invite code: check it (each works once).";
        return "The hub refused the sign-in: check the handle or passphrase.";
      case ErrorCode.CONFLICT:
        return "That handle is taken. Choose another.";
      case ErrorCode.INVALID:
        return "The hub refused the request as invalid.";
      case ErrorCode.RATE_LIMITED:
        return "Too many attempts. Wait a moment and try again.";
      default:
        return `The hub refused this (${err.code}).`;
    }
  }
  if (err instanceof account.AccountKeysRefused) return err.message;
  if (err instanceof c.CryptoError) return "Wrong passphrase.";
  if (err && err.name === "ConnectionLost") return "Cannot reach the hub. Check the connection and try again.";
  return err?.message || "Something went wrong.";
}

/** Run a form action with its button disabled and errors shown in the form. */
function bindForm(formId, errorId, action) {
  const form = $(formId);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const error = $(errorId);
    error.textContent = "";
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await action(new FormData(form));
      form.reset();
    } catch (err) {
      console.warn(formId, "failed:", err);
      error.textContent = explain(err, formId);
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

function enterWorkspace(creds) {
  app.creds = creds;
  $("me-handle").textContent = creds.handle;
  $("me-fp").textContent = c.fingerprintV2(creds.identity.signPk, creds.identity.boxPk);
  if ($("me-cert")) renderCertStatus($("me-cert"), creds, app.orgFingerprint, c.verifyCounselorCert);
  const outbox = app.carriedOutbox;
  app.carriedOutbox = [];
  const workspace = new Workspace(creds, {
    outbox,
    orgFingerprint: app.orgFingerprint,
    onChange: (kind, caseId) => app.view?.update(kind, caseId),
    // The hub ended the session for good (4002 token expired, 4004 signed out on every
    // device): drop the keys and go back to signing in, saying why.
    onSignedOut: (reason) => lock(reason.charAt(0).toUpperCase() + reason.slice(1) + "."),
  });
  app.workspace = workspace;
  app.view = new WorkspaceView(workspace, {
    caseList: $("case-list"),
    caseEmpty: $("case-empty"),
    panes: $("panes"),
    panesEmpty: $("panes-empty"),
    banner: $("banner"),
    toasts: $("toasts"),
    escrow: $("escrow-info"),
    escrowText: $("escrow-text"),
    keyAlerts: $("key-alerts"),
  });
  show("screen-workspace");
  $("panes-empty").hidden = false;
  workspace.start();
  app.idle = new IdleLock(app.idleSeconds, () => lock("Locked after a period without activity."));
  app.idle.start();
  $("case-list").focus();
}

/** Drop keys, plaintext and the decrypted DOM; keep only the wrapped blob and token. */
function leaveWorkspace() {
  app.idle?.stop();
  app.idle = null;
  if (app.workspace) app.carriedOutbox = app.workspace.stop();
  app.view?.destroy();
  app.creds?.forgetSecrets();
  app.workspace = null;
  app.view = null;
  app.creds = null;
}

function lock(reason) {
  leaveWorkspace();
  showUnlock(reason);
}

function showUnlock(reason = "") {
  const record = account.storedAccount();
  if (record === null) {
    show("screen-auth");
    return;
  }
  $("unlock-handle").textContent = record.handle;
  $("unlock-reason").textContent = reason;
  show("screen-unlock");
  $("unlock-pass").focus();
}

async function signOut() {
  const workspace = app.workspace;
  if (workspace) await workspace.logout();
  leaveWorkspace();
  app.carriedOutbox = [];
  account.forgetAccount();
  show("screen-auth");
  $("login-handle").focus();
}

function wire() {
  bindForm("login-form", "login-error", async (data) => {
    const handle = String(data.get("handle")).trim();
    if (!isValidHandle(handle)) throw new Error("A handle is 3–32 characters: a–z, 0–9, . _ -");
    enterWorkspace(await account.login({ handle, passphrase: String(data.get("passphrase")) }));
  });
  bindForm("register-form", "register-error", async (data) => {
    const handle = String(data.get("handle")).trim();
    const passphrase = String(data.get("passphrase"));
    if (!isValidHandle(handle)) throw new Error("A handle is 3–32 characters: a–z, 0–9, . _ -");
    if (passphrase !== String(data.get("passphrase2"))) throw new Error("The passphrases differ.");
    await checkPassphrase(passphrase, [handle]);
    const invite = String(data.get("invite")).trim();
    enterWorkspace(await account.register({ handle, passphrase, invite }));
  });
  bindForm("unlock-form", "unlock-error", async (data) => {
    enterWorkspace(await account.unlock(String(data.get("passphrase"))));
  });
  $("switch-account").addEventListener("click", () => {
    account.forgetAccount();
    app.carriedOutbox = [];
    show("screen-auth");
    $("login-handle").focus();
  });
  $("lock-btn").addEventListener("click", () => lock("Locked."));
  $("logout-btn").addEventListener("click", () => signOut());
}

async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) {
      const config = await response.json();
      if (Number.isFinite(config.idle_lock_seconds) && config.idle_lock_seconds > 0) {
        app.idleSeconds = config.idle_lock_seconds;
      }
      if (typeof config.org_fingerprint === "string" && config.org_fingerprint.trim()) {
        app.orgFingerprint = config.org_fingerprint;
      }
      // Test suites only: weak Argon2id costs with ?weakkdf=1 on a hub running --kdf test.
      if (configureWeakKdf(config, window.location.search)) document.body.dataset.weakKdf = "yes";
    }
  } catch {
    // keep the default
  }
}

async function main() {
  wire();
  try {
    await Promise.all([c.ready(), loadConfig()]);
  } catch (err) {
    console.error(err);
    $("loading-text").textContent =
      "This browser cannot run the encryption library (WebAssembly is blocked or missing).";
    $("loading-text").classList.add("error");
    return;
  }
  document.body.dataset.idleSeconds = String(app.idleSeconds);
  if (account.storedAccount()) showUnlock("Enter your passphrase to continue.");
  else show("screen-auth");
}

main();
