"""The page's crypto module, run in Chromium, reproduces docs/test-vectors.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.browser import open_page
from tests.helpers.hubs import start_hub

ROOT = Path(__file__).resolve().parents[2]
CHECK_JS = (Path(__file__).parent / "vectors_check.js").read_text()


def _lookup(vectors: dict[str, Any], dotted: str) -> Any:
    node: Any = vectors
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


async def test_browser_crypto_reproduces_vectors(browser: Any, tmp_path: Path) -> None:
    vectors = json.loads((ROOT / "docs" / "test-vectors.json").read_text())
    async with start_hub(tmp_path / "hub") as hub:
        page = await open_page(browser, hub.http_url)
        computed = await page.page.evaluate(
            CHECK_JS, {"vectors": vectors, "moduleUrl": f"{hub.http_url}dist/crypto.js"}
        )
        page.assert_clean()

    # Every computed value equals the file; the extra checks say what they saw.
    assert computed.pop("tampered") == "CryptoError"
    assert computed.pop("chain_head.verified") == "yes"
    # Both sides compute the same safety number.
    assert computed.pop("safety_number.reversed") == vectors["safety_number"]["number"]
    # A certificate from another org key, edited, or for other keys or account: refused.
    assert computed.pop("cert_refusals") == [
        "the certificate is signed by another organisation key than the pinned one",
        "the certificate's signature does not verify",
        "the certificate is for other keys",
        "the certificate is for another account",
    ]
    # Every negative envelope vector is refused by the page's strict reader.
    negative = vectors["envelope_negative"]
    assert len(negative) >= 10
    assert computed.pop("envelope_negative") == [f"{e['name']}: NonCanonical" for e in negative]
    bodies = {k: computed.pop(k) for k in list(computed) if k.endswith(".body")}
    for key, body in bodies.items():
        assert body == _lookup(vectors, key), key
    mismatches = {k: v for k, v in computed.items() if _lookup(vectors, k) != v}
    assert not mismatches, mismatches
    # The comparison covers every construction of PROTOCOL.md §12.
    covered = {k.split(".")[0] for k in computed}
    assert covered == {
        "identities",
        "login",
        "prefs_blob",
        "safety_number",
        "counselor_cert",
        "receipt",
        "padding",
        "wrapped_identity",
        "auth",
        "case_key",
        "sealed_key",
        "messages",
        "chain_head",
    }
    assert len(computed) >= 80
