"""The counselor certification ceremony in tests: what ``chat-server admin counselors
pending``, ``chat-escrow certify`` and ``install-certs`` do, in one call on a running hub
whose installed escrow policy is signed by ``org`` (the hub checks certificates against
it)."""

from __future__ import annotations

from nacl.signing import SigningKey

from chat_client.certify import certify
from chat_client.keyfiles import KeyFile
from chat_server.counselors_cli import install_certs, pending
from protocol.ceremony import CounselorCerts
from protocol.clock import now_ms
from tests.helpers.hubs import RunningHub

__all__ = ["certify_counselors"]


async def certify_counselors(hub: RunningHub, org: SigningKey) -> list[str]:
    """Certify every pending counselor with ``org``; their handles."""
    assert hub.server.db is not None
    listed, _unsigned = await pending(hub.server.db)
    org_file = KeyFile(kind="org", name="org", sign_key=org, box_key=None)
    certs = certify(
        org_file, listed.counselors, now=now_ms(), confirm=lambda p, fp: True, say=lambda s: None
    )
    problems = await install_certs(hub.server.db, CounselorCerts(certs=certs))
    assert problems == [], problems
    return [c.handle for c in certs]
