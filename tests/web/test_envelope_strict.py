"""The page's envelope reader (web_client/src/envelope.js) and the Python rule
(msgspec decode, then re-encode and compare) give the same verdict on the same bytes:
canonical bytes are accepted by both, everything else refused by both (issue 10 item 4)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from protocol import crypto, errors


def python_verdict(data: bytes) -> bool:
    """The reference rule (crypto.decode_envelope): strict decode, byte-identical re-encoding."""
    try:
        crypto.decode_envelope(data)
    except errors.CryptoError:
        return False
    return True


def envelope(body: str, ts: int, cmid: str = "a") -> bytes:
    return crypto.encode_envelope(
        crypto.Envelope(
            body=body, ts=ts, client_msg_id=cmid, prev_seq=7, prev_hash=bytes(range(32)), n=3
        )
    )


def candidates() -> dict[str, bytes]:
    good = envelope(
        'h\u00e9llo "q" \\ / \n\t\x01\x1f\x7f \U0001f642 \u2028', 1_700_000_000_123, "cmid-0001"
    )
    text = good.decode()
    ts = '"ts":1700000000123'
    out = {
        "canonical": good,
        "long body": envelope("x" * 9000, 0),
        "ts at 2^53": envelope("", 2**53),
        "ts negative": text.replace(ts, '"ts":-5').encode(),
        "space after colon": text.replace('"kind":', '"kind": ', 1).encode(),
        "leading space": b" " + good,
        "trailing newline": good + b"\n",
        "BOM": b"\xef\xbb\xbf" + good,
        "float ts": text.replace(ts, ts + ".0").encode(),
        "exponent ts": text.replace(ts, '"ts":1.700000000123e12').encode(),
        "minus zero ts": text.replace(ts, '"ts":-0').encode(),
        "ts as string": text.replace(ts, '"ts":"1700000000123"').encode(),
        "lone surrogate": text.replace("h\u00e9llo", "\\ud800llo").encode(),
        "lone low surrogate": text.replace("h\u00e9llo", "\\udc00llo").encode(),
        "escaped pair": text.replace("\U0001f642", "\\ud83d\\ude42").encode(),
        "escaped letter": text.replace("h\u00e9llo", "\\u0068\u00e9llo").encode(),
        "escaped slash": text.replace(" / ", " \\/ ").encode(),
        "uppercase hex escape": text.replace("\\u001f", "\\u001F").encode(),
        "missing kind": text.replace('"kind":"text",', "").encode(),
        "other kind": text.replace('"kind":"text"', '"kind":"file"').encode(),
        "missing ts": text.replace(ts + ",", "").encode(),
        "unknown field": (text[:-1] + ',"extra":1}').encode(),
        "duplicate ts": (text[:-1] + ',"ts":1}').encode(),
        "duplicate same ts": text.replace(ts, ts + "," + ts).encode(),
        "wrong order": json.dumps(
            dict(reversed(list(json.loads(text).items()))),
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode(),
        "bad id": text.replace('"cmid-0001"', '"cmid 0001"').encode(),
        "array": b"[" + good + b"]",
        "invalid utf-8": good.replace(b"h\xc3\xa9", b"h\xc3\x28"),
        "utf-8 surrogate": good.replace(b"h\xc3\xa9", b"h\xed\xa0\x80"),
        "ts past 2^53": text.replace(ts, '"ts":9007199254740993').encode(),
        "n zero": text.replace('"n":3', '"n":0').encode(),
        "prev_hash short": text.replace('"prev_hash":"', '"prev_hash":"AAEC", "x":"').encode(),
        "prev_hash unpadded": text.replace('=","n"', '","n"').encode(),
    }
    return out


def test_envelope_reader_agrees_with_python(node: Callable[[str], Any]) -> None:
    cases = candidates()
    encoded = {name: base64.b64encode(data).decode() for name, data in cases.items()}
    script = f"""
    const e = await import("./src/envelope.js");
    const out = {{}};
    for (const [name, b64] of Object.entries({json.dumps(encoded)})) {{
      const bytes = Uint8Array.from(Buffer.from(b64, "base64"));
      try {{
        const env = e.decodeEnvelope(bytes);
        const again = e.encodeEnvelope(env);
        out[name] = Buffer.from(again).equals(Buffer.from(bytes)) ? "ok" : "re-encoded differently";
      }} catch (err) {{
        out[name] = err.name;
      }}
    }}
    console.log(JSON.stringify(out));
    """
    page = node(script)
    python = {name: python_verdict(data) for name, data in cases.items()}
    accepted = {name for name, ok in python.items() if ok}
    # The few that must pass; everything else is a refusal in Python.
    assert accepted == {"canonical", "long body", "ts at 2^53"}
    for name, ok in python.items():
        assert page[name] == ("ok" if ok else "NonCanonical"), (name, page[name])
