"""The terms of service a client accepts before opening a case, rendered from the
installed escrow policy.

The text is a pure function of (terms version, policy), so client and hub render the
same words and the signed acceptance (protocol/escrow.py, ``consent_transcript``)
names exactly what was shown: the terms version and the policy fingerprint, which the
text itself spells out together with the threshold and the officers' names.
"""

from __future__ import annotations

import datetime

from .escrow import policy_fingerprint
from .frames import EscrowPolicy

__all__ = ["CURRENT_TERMS_VERSION", "render_terms"]

#: The terms version a hub installs a policy with unless told otherwise.
CURRENT_TERMS_VERSION = 1


def _date(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d")


def render_terms(terms_version: int, policy: EscrowPolicy) -> str:
    """The full terms text for ``terms_version`` under ``policy``."""
    names = ", ".join(o.name for o in policy.officers)
    legal = ", ".join(s.name for s in policy.legal_signers)
    n = len(policy.officers)
    k = policy.threshold
    single = (
        [
            "",
            f"WARNING: this policy's threshold is {k}: ONE escrow officer alone, with their",
            "own key, can open a conversation; no second person has to agree.",
        ]
        if k < 2
        else []
    )
    return "\n".join(
        [
            f"Terms of service, version {terms_version}",
            "",
            "Your conversations are end-to-end encrypted: the service stores and routes",
            "ciphertext only and cannot read what you or your counselor write.",
            "",
            "Dispute escrow. Each conversation key is also sealed, on your device, to the",
            f"escrow policy with fingerprint {policy_fingerprint(policy)}:",
            f"any {k} of its {n} escrow officers ({names}) acting together, each with",
            "their own offline key, can open a conversation. They do so only for a",
            *(
                [
                    "written dispute request signed by you, or a legal order signed by",
                    f"{legal} (named in this policy); you are told of any legal order",
                    "on your case as soon as it is recorded. Every request, approval and",
                    "export is recorded in an append-only audit log.",
                ]
                if legal
                else [
                    "written dispute request signed by you (this policy names no one who",
                    "may sign a legal order). Every request, approval and export is",
                    "recorded in an append-only audit log.",
                ]
            ),
            f"The policy is in force from {_date(policy.not_before)} to {_date(policy.not_after)}.",
            *single,
            "",
            "By accepting you sign this terms version and this policy fingerprint.",
            "A new policy or a new terms version asks for your consent again.",
        ]
    )
