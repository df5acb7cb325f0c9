"""The exit codes of every command-line tool: one table, one meaning per number.

``chat-client``, ``chat-server``, ``chat-escrow`` and ``chat-unseal`` return these, so a
script can tell the same failure apart the same way whichever tool it ran. The table is
shown in each tool's ``--help`` epilog (:func:`epilog`) and in the README.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "epilog"]


class ExitCode(IntEnum):
    OK = 0
    #: Anything else that went wrong (refused by the server, not found, closed case).
    ERROR = 1
    #: Bad command-line input: a missing or malformed argument, an unusable value.
    USAGE = 2
    #: Authentication failed or wrong passphrase (chat-unseal keeps 13, below).
    AUTH = 3
    #: The server (or its database, for chat-server) could not be reached.
    CONNECT = 4
    #: A security refusal: a pinned key changed, a downgrade, an uncertified key.
    SECURITY = 5
    #: chat-server could not start listening: the address is in use or not allowed.
    START_FAILED = 6
    #: A tampered, missing or reordered record (chat-unseal messages, the audit log).
    TAMPERED = 10
    #: chat-unseal: wrong or too few officer keys.
    KEYS = 11
    #: A forged or foreign bundle, request or policy (chat-unseal, chat-escrow).
    FOREIGN = 12
    #: chat-unseal: wrong passphrase on an officer key (kept from before this table).
    PASSPHRASE = 13


_MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.ERROR: "error",
    ExitCode.USAGE: "usage",
    ExitCode.AUTH: "authentication failed or wrong passphrase",
    ExitCode.CONNECT: "cannot connect",
    ExitCode.SECURITY: "security refusal",
    ExitCode.START_FAILED: "address in use / cannot start listening",
    ExitCode.TAMPERED: "tampered, missing or reordered record",
    ExitCode.KEYS: "wrong or too few officer keys",
    ExitCode.FOREIGN: "forged or foreign bundle, request or policy",
    ExitCode.PASSPHRASE: "wrong officer-key passphrase",
}


def epilog(*codes: ExitCode) -> str:
    """The ``--help`` epilog listing ``codes`` (a tool names the ones it can return)."""
    return "Exit codes: " + ", ".join(f"{int(c)} {_MEANING[c]}" for c in codes) + "."
