"""The page takes the protocol's constants from protocol/, through a generated module.

web_client/src/generated/protocol.js is rendered from protocol/ by
scripts/make_web_protocol.py (and checked by ``scripts/make_vectors.py --check``); these
tests prove it is current and that the page's close-code rule is the Python client's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chat_client.connection import ABNORMAL_CLOSURE, CloseInfo, is_resumable
from protocol import errors as pe
from protocol import limits
from scripts import make_web_protocol


def test_generated_module_is_current() -> None:
    assert make_web_protocol.check(), "run scripts/make_vectors.py"


def test_page_resumes_after_exactly_the_codes_the_sdk_resumes_after(
    node: Callable[[str], Any],
) -> None:
    codes = [int(c) for c in pe.CloseCode] + [ABNORMAL_CLOSURE, 4002, 1005, 1012]
    page = node(
        f"""
        const p = await import("./src/protocol.js");
        const codes = {json.dumps(codes)};
        const verdicts = Object.fromEntries(codes.map((code) => [code, p.isResumable({{ code }})]));
        const local = p.isResumable({{ code: 1000, local: true }});
        console.log(JSON.stringify({{ verdicts, local, resumable: p.RESUMABLE_CLOSE_CODES }}));
        """
    )
    sdk = {str(code): is_resumable(CloseInfo(code, "")) for code in codes}
    assert page["verdicts"] == sdk
    assert page["verdicts"][str(int(pe.CloseCode.AUTH_TIMEOUT))] is False  # 4001 is not
    assert page["local"] is is_resumable(CloseInfo(1000, "retry", local=True)) is True
    assert page["resumable"] == sorted(pe.RESUMABLE_CLOSE_CODES)


def test_page_constants_come_from_protocol(node: Callable[[str], Any]) -> None:
    page = node(
        """
        const p = await import("./src/protocol.js");
        console.log(JSON.stringify({
          errors: p.ErrorCode, closes: p.CloseCode, sync: p.MAX_SYNC_BATCH,
          maxChars: p.MAX_MESSAGE_CHARS,
          handles: ["ab", "dr-who", "Dr-Who", "-dr", "a".repeat(32), "a".repeat(33)]
            .map((h) => p.isValidHandle(h)),
        }));
        """
    )
    assert page["errors"] == {c.name: c.value for c in pe.ErrorCode}
    assert page["closes"] == {c.name: int(c) for c in pe.CloseCode}
    assert (page["sync"], page["maxChars"]) == (limits.MAX_SYNC_BATCH, limits.MAX_MESSAGE_CHARS)
    assert page["handles"] == [False, True, False, False, True, False]
