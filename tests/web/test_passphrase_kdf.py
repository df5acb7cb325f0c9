"""The page's passphrase rule and KDF floor and pins (passphrase.js, kdf.js), run in Node,
and the passphrase rule on the real registration form in Chromium."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.browser import open_page, playwright_expect
from tests.helpers.hubs import start_hub

WEAK = ["short1!", "password1234", "aaaaaaaaaaaa", "qwertyuiop12", "dr-maria2024"]
STRONG = ["counselor passphrase 1", "correct horse battery", "lantern orbit -- 7 pebbles"]


def test_passphrase_rule(node: Callable[[str], Any]) -> None:
    script = f"""
    const p = await import("./src/passphrase.js");
    const out = {{}};
    for (const pass of [...{json.dumps(WEAK)}, ...{json.dumps(STRONG)}]) {{
      try {{
        await p.checkPassphrase(pass, ["dr-maria"]);
        out[pass] = "ok";
      }} catch (err) {{
        out[pass] = err.name + ": " + err.message;
      }}
    }}
    console.log(JSON.stringify(out));
    """
    verdicts = node(script)
    assert verdicts["short1!"].startswith("WeakPassphrase: Use a passphrase of at least 10")
    for weak in WEAK[1:]:
        assert verdicts[weak].startswith("WeakPassphrase: This passphrase is too easy"), weak
    for strong in STRONG:
        assert verdicts[strong] == "ok", strong


def test_kdf_floor_and_pins(node: Callable[[str], Any]) -> None:
    script = """
    const store = new Map();
    globalThis.localStorage = {
      getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v),
    };
    const k = await import("./src/kdf.js");
    const out = {};
    const verdict = (fn) => { try { fn(); return "ok"; } catch (e) { return e.name; } };
    const MiB = 1024 * 1024;
    out.floor_ok = verdict(() => k.checkFloor(2, 64 * MiB));
    out.floor_ops = verdict(() => k.checkFloor(1, 256 * MiB));
    out.floor_mem = verdict(() => k.checkFloor(4, 8 * MiB));
    out.floor_float = verdict(() => k.checkFloor(2.5, 64 * MiB));
    // The test flag needs both the hub's config and the URL.
    out.weak_url_only = k.configureWeakKdf({ test_kdf: false }, "?weakkdf=1");
    out.weak_config_only = k.configureWeakKdf({ test_kdf: true }, "?x=1");
    out.weak_both = k.configureWeakKdf({ test_kdf: true }, "?weakkdf=1");
    out.floor_weak = verdict(() => k.checkFloor(1, 8192));
    k.configureWeakKdf({}, "");
    const pre = { salt: "c2FsdHNhbHRzYWx0c2FsdA==", opslimit: 3, memlimit: 256 * MiB };
    out.unpinned = verdict(() => k.checkPrelogin("dr-a", pre));
    k.rememberKdf("dr-a", pre);
    out.same = verdict(() => k.checkPrelogin("dr-a", { ...pre }));
    out.salt = verdict(() => k.checkPrelogin("dr-a", { ...pre, salt: "AAAAAAAAAAAAAAAAAAAAAA==" }));
    out.ops = verdict(() => k.checkPrelogin("dr-a", { ...pre, opslimit: 2 }));
    out.mem_up = verdict(() => k.checkPrelogin("dr-a", { ...pre, memlimit: 512 * MiB }));
    out.other_handle = verdict(() => k.checkPrelogin("dr-b", { ...pre, opslimit: 2 }));
    console.log(JSON.stringify(out));
    """
    assert node(script) == {
        "floor_ok": "ok",
        "floor_ops": "KdfDowngrade",
        "floor_mem": "KdfDowngrade",
        "floor_float": "KdfDowngrade",
        "weak_url_only": False,
        "weak_config_only": False,
        "weak_both": True,
        "floor_weak": "ok",
        "unpinned": "ok",
        "same": "ok",
        "salt": "KdfDowngrade",
        "ops": "KdfDowngrade",
        "mem_up": "KdfDowngrade",  # any change, not only a lower one
        "other_handle": "ok",
    }


async def test_registration_form_refuses_a_guessable_passphrase(
    browser: Any, tmp_path: Path
) -> None:
    expect = playwright_expect()
    async with start_hub(tmp_path / "hub") as hub:
        invite = await hub.invite_counselor()
        bp = await open_page(browser, hub.http_url)
        page = bp.page
        for field, value in (
            ("#reg-invite", invite),
            ("#reg-handle", "dr-weak"),
            ("#reg-pass", "password1234"),
            ("#reg-pass2", "password1234"),
        ):
            await page.fill(field, value)
        await page.click("#register-form button[type=submit]")
        await expect(page.locator("#register-error")).to_contain_text("too easy to guess")
        await expect(page.locator("#screen-auth")).to_be_visible()
        assert await page.evaluate("() => localStorage.length") == 0
        bp.assert_clean()
