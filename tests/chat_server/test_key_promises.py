"""The hub's key promise, checked on its source: it calls no decrypt or open function.

pyproject.toml's import-linter contract forbids ``chat_server`` and ``storage`` from
importing ``protocol.opening`` (where every unwrap/open/decrypt of the protocol lives),
even indirectly. This test adds what an import rule cannot see: a call of a libsodium
decrypt method (``SealedBox(...).decrypt``, ``crypto_aead_*_decrypt``) written in the
hub's own code. The one exception is storage/atrest.py, which decrypts the personal data
the hub itself encrypted at rest with its own data key (docs/DECISIONS.md 7).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from protocol import opening

ROOT = Path(__file__).resolve().parents[2]
#: Decrypts the hub's own at-rest ciphertext (display names, topics), nothing else.
ALLOWED = {ROOT / "storage" / "atrest.py"}
OPENING = set(opening.__all__)


def _sources() -> list[Path]:
    return sorted(
        p for package in ("chat_server", "storage") for p in (ROOT / package).rglob("*.py")
    )


def _opening_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if "decrypt" in name.lower() or name in OPENING:
            found.append(f"line {node.lineno}: {name}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    code = "box.decrypt(x)\nopen_capsule(c)\nnacl.bindings.crypto_aead_x_decrypt(a)\nok(b)"
    assert len(_opening_calls(ast.parse(code))) == 3


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_decrypt_or_open_call_in_the_hub(path: Path) -> None:
    if path in ALLOWED:
        return
    assert _opening_calls(ast.parse(path.read_text(), str(path))) == []
