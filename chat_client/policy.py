"""Client-side floors that never come from the hub: Argon2id cost and passphrase strength.

Web counterpart: web_client/src/account.js (same numbers, same rule).

* **KDF floor** (docs/PROTOCOL.md, "KDF floor"): opslimit >= 2 and memlimit >= 64 MiB,
  libsodium's ``crypto_pwhash_*_INTERACTIVE``. A hub (or a fake one) that asks for less
  would make the ``auth_key`` it captures cheap to brute-force, so the client refuses
  before deriving anything. Only the test suite may lower it, with the environment
  variable ``CHAT_TEST_WEAK_KDF=1`` (never set it outside tests).
* **Remembered parameters**: at login, a key store that already holds the handle must
  see the same salt and limits in ``prelogin``; any difference is a downgrade attempt.
* **Passphrase rule**: at least 10 characters and a zxcvbn score of at least 3, the
  handle counting as a known word (``zxcvbn`` is the maintained Python port of
  Dropbox's estimator; the page uses ``@zxcvbn-ts``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import zxcvbn

from .errors import KdfDowngrade, WeakPassphrase

__all__ = [
    "MIN_MEMLIMIT",
    "MIN_OPSLIMIT",
    "MIN_PASSPHRASE_CHARS",
    "MIN_PASSPHRASE_SCORE",
    "WEAK_KDF_ENV",
    "check_kdf_floor",
    "check_passphrase",
    "check_remembered",
    "kdf_floor",
]

#: libsodium crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE / MEMLIMIT_INTERACTIVE.
MIN_OPSLIMIT = 2
MIN_MEMLIMIT = 64 * 1024 * 1024
#: The explicit test override; honoured only when it is exactly "1".
WEAK_KDF_ENV = "CHAT_TEST_WEAK_KDF"
#: The lowest limits libsodium's Argon2id accepts (what the override allows).
_LIBSODIUM_MIN = (1, 8192)

MIN_PASSPHRASE_CHARS = 10
MIN_PASSPHRASE_SCORE = 3
#: zxcvbn (Python) refuses longer input; its cost grows with length. Both clients rate
#: only this prefix (a longer passphrase is at least as strong).
_ZXCVBN_MAX_CHARS = 72


def kdf_floor() -> tuple[int, int]:
    """(min opslimit, min memlimit) this process accepts."""
    if os.environ.get(WEAK_KDF_ENV) == "1":
        return _LIBSODIUM_MIN
    return MIN_OPSLIMIT, MIN_MEMLIMIT


def check_kdf_floor(opslimit: int, memlimit: int, *, source: str) -> None:
    """Raise KdfDowngrade if (opslimit, memlimit) is below the client floor.
    ``source`` says where the numbers came from (for the message)."""
    min_ops, min_mem = kdf_floor()
    if opslimit < min_ops or memlimit < min_mem:
        raise KdfDowngrade(
            f"{source} asks for Argon2id opslimit={opslimit} memlimit={memlimit}, below this "
            f"client's floor (opslimit>={min_ops}, memlimit>={min_mem}); a hub that lowers "
            "the cost could brute-force your passphrase, so nothing was sent"
        )


def check_remembered(
    handle: str,
    remembered: tuple[bytes, int, int],
    offered: tuple[bytes, int, int],
) -> None:
    """Raise KdfDowngrade if ``offered`` (salt, opslimit, memlimit) from ``prelogin``
    differs from what the key store remembers for ``handle``."""
    if offered == remembered:
        return
    _, ops, mem = remembered
    _, new_ops, new_mem = offered
    what = (
        "salt"
        if offered[1:] == remembered[1:]
        else (f"limits (opslimit {ops}->{new_ops}, memlimit {mem}->{new_mem})")
    )
    raise KdfDowngrade(
        f"the hub answered prelogin for {handle} with a different {what} than this "
        "key store remembers; refusing to derive or send anything (a hub could use this "
        "to make your passphrase cheap to guess)"
    )


def check_passphrase(passphrase: str, user_inputs: Sequence[str] = ()) -> None:
    """Raise WeakPassphrase unless ``passphrase`` has >= 10 characters and zxcvbn
    rates it >= 3 (of 4), with ``user_inputs`` (the handle) as known words, as the page
    does (web_client/src/passphrase.js). The message says why and how to do better."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise WeakPassphrase(
            f"passphrase too short: use at least {MIN_PASSPHRASE_CHARS} characters "
            "(several unrelated words work well)"
        )
    result = zxcvbn.zxcvbn(passphrase[:_ZXCVBN_MAX_CHARS], user_inputs=list(user_inputs))
    score = int(result["score"])
    if score < MIN_PASSPHRASE_SCORE:
        feedback = result["feedback"]
        hints = [str(feedback.get("warning") or "")] + [
            str(s) for s in feedback.get("suggestions") or []
        ]
        detail = " ".join(h.rstrip(".") + "." for h in hints if h)
        raise WeakPassphrase(
            f"passphrase too easy to guess (strength {score} of 4, need "
            f"{MIN_PASSPHRASE_SCORE})" + (f": {detail}" if detail else "")
        )
