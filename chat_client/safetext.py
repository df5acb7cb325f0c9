"""Text from other people (and from the hub) made safe to print on a terminal.

A message body, a handle, a topic or a close reason is chosen by someone else, so it
must not be able to drive the terminal or pass for the client's own output:

* C0 controls (but see newlines below), DEL, C1 controls (U+0080-U+009F: a UTF-8
  terminal may take U+009B as CSI), and so every ESC, CSI and OSC sequence (OSC 52
  writes the clipboard, OSC 8 makes links), are shown escaped as ``\\x1b``, ``\\x9b``;
* bidirectional overrides, embeddings, isolates and marks (U+202A-U+202E,
  U+2066-U+2069, U+200E, U+200F, U+061C) and the Unicode line and paragraph
  separators are shown as ``\\u202e`` and the like, so text cannot be reordered on
  screen (CVE-2021-42574, "Trojan Source");
* a newline in a body starts a continuation line that is indented (:data:`INDENT`):
  no line of a body can start at column 0, where every header the client prints does.
"""

from __future__ import annotations

import re

__all__ = ["INDENT", "block", "escape", "escape_json", "lines"]

#: What every continuation line of a multi-line body starts with.
INDENT = "    "

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: The same set minus what JSON already escapes (C0 and the quote/backslash).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _show(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` on one line with every unsafe character escaped (newlines too)."""
    return _UNSAFE.sub(_show, text)


def lines(text: str) -> str:
    """``text`` escaped line by line, continuation lines indented by :data:`INDENT`."""
    parts = text.replace("\r\n", "\n").split("\n")
    return ("\n" + INDENT).join(escape(part) for part in parts)


def block(text: str) -> str:
    """A document from elsewhere (the terms) as a quoted block: every line escaped and
    indented, so none of it can pass for the client's own prompt."""
    return "\n".join("  " + escape(part) for part in text.replace("\r\n", "\n").split("\n"))


def escape_json(encoded: str) -> str:
    """A JSON text with the terminal-unsafe characters JSON leaves raw written as
    ``\\uXXXX`` escapes: the same value, safe to print."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)
