"""chat_client.safetext: what other people wrote, made safe for a terminal."""

from __future__ import annotations

import json

import pytest

from chat_client.safetext import INDENT, block, escape, escape_json, lines


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain Ünïcode 🙂", "plain Ünïcode 🙂"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x1b]52;c;aGk=\x07", "\\x1b]52;c;aGk=\\x07"),
        ("\x9b2J\x85", "\\x9b2J\\x85"),
        ("a\rb\tc\x00\x7f", "a\\x0db\\x09c\\x00\\x7f"),
        (
            "\u202eabc\u202c\u2066\u2069\u200f\u061c",
            "\\u202eabc\\u202c\\u2066\\u2069\\u200f\\u061c",
        ),
        ("x\u2028y\u2029z", "x\\u2028y\\u2029z"),
        ("one\ntwo", "one\\x0atwo"),
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_lines_indents_every_continuation() -> None:
    assert lines("a\r\n[x #1 00:00:00] b\n\x1bc") == (
        f"a\n{INDENT}[x #1 00:00:00] b\n{INDENT}\\x1bc"
    )
    assert all(
        not line or line == "a" or line.startswith(INDENT) for line in lines("a\n\n").split("\n")
    )


def test_block_quotes_every_line() -> None:
    assert block("Terms\r\nAccept these terms? [y/N] \x1b[8m") == (
        "  Terms\n  Accept these terms? [y/N] \\x1b[8m"
    )


def test_escape_json_keeps_the_value() -> None:
    value = {"body": "a\x9bb\u202ec\x1bd\u2028"}
    text = escape_json(json.dumps(value, ensure_ascii=False))
    assert json.loads(text) == value
    assert not any(ch in text for ch in "\x9b\u202e\x1b\u2028")
