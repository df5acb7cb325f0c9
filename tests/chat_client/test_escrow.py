"""The SDK's escrow room against the real hub: the policy is fetched once per session,
a capsule made under a policy the hub has since replaced is made again, and the key of
a case the client wrote in while it waited is escrowed by both participants."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from nacl.signing import SigningKey

from chat_client import ChatClient, ConnectionEvent
from protocol import crypto
from protocol import frames as f
from protocol.clock import now_ms
from protocol.escrow import policy_fingerprint, sign_policy
from tests.helpers.certs import certify_counselors
from tests.helpers.clients import (
    PASS_COUNSELOR,
    register_client,
    register_counselor,
    take,
    take_until,
)
from tests.helpers.escrow_factory import officers
from tests.helpers.hubs import RunningHub
from tests.helpers.waiting import wait_until

ORG = SigningKey(bytes([42]) * 32)
ORG_FP = crypto.fingerprint(bytes(ORG.verify_key))
DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def _pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_ORG_FINGERPRINT", ORG_FP)


async def install(hub: RunningHub, version: int, seed: int) -> str:
    """Install a 1-of-2 policy signed by ORG; its fingerprint."""
    now = now_ms()
    signed = sign_policy(
        ORG,
        f.EscrowPolicy(
            version=version,
            officers=[o.public for o in officers(2, seed=seed)],
            threshold=1,
            not_before=now - DAY_MS,
            not_after=now + DAY_MS,
            org_sign_pk=bytes(ORG.verify_key),
        ),
    )
    fp = policy_fingerprint(signed.policy)
    assert hub.server.db is not None
    await hub.server.db.escrow.install(fp, msgspec.json.encode(signed), 1, now)
    return fp


async def capsule_policies(hub: RunningHub, case_id: str, want: int) -> dict[str, str]:
    """depositor -> policy fingerprint of the case's capsules, once ``want`` are there."""
    db = hub.server.db
    assert db is not None

    async def enough() -> bool:
        return len(await db.escrow.capsules_for(case_id)) >= want

    await wait_until(enough, f"{want} capsules for the case")
    return {c.depositor_id: c.policy_fingerprint for c in await db.escrow.capsules_for(case_id)}


async def open_and_greet(client: ChatClient, counselor: ChatClient, text: str) -> str:
    case = await client.open_case("anxiety", "en")
    await client.send(case.case_id, text)
    [got] = [m for m in await take(counselor, 1) if m.case_id == case.case_id]
    assert got.body == text and got.verified
    return case.case_id


async def test_policy_is_fetched_once_per_session(hub: RunningHub, tmp_path: Path) -> None:
    fp = await install(hub, 1, seed=0)
    counselor = await register_counselor(hub, tmp_path / "counselor")
    assert await certify_counselors(hub, ORG) == ["dr-who"]  # the client pins ORG
    client = await register_client(hub, tmp_path / "client")
    try:
        assert await client.consent()
        first = await open_and_greet(client, counselor, "one")
        cached = client._escrow._cached
        assert cached is not None and cached[0] == client._session.generation
        second = await open_and_greet(client, counselor, "two")
        assert client._escrow._cached is cached  # the second capsule asked nothing
        for case_id in (first, second):
            # The client's capsule came with case.key, the counselor's with case.capsule.
            assert await capsule_policies(hub, case_id, 2) == {
                client.account_id: fp,
                counselor.account_id: fp,
            }
        link = client._link
        assert link is not None
        link._ws.transport.abort()
        await take_until(  # disconnected, reconnecting, connected
            client, lambda e: isinstance(e, ConnectionEvent) and e.state == "connected"
        )
        await open_and_greet(client, counselor, "three")
        renewed = client._escrow._cached
        assert renewed is not None and renewed[0] == client._session.generation > cached[0]
    finally:
        await client.close()
        await counselor.close()


async def test_capsule_under_a_replaced_policy_is_made_again(
    hub: RunningHub, tmp_path: Path
) -> None:
    await install(hub, 1, seed=0)
    counselor = await register_counselor(hub, tmp_path / "counselor")
    assert await certify_counselors(hub, ORG) == ["dr-who"]  # the client pins ORG
    client = await register_client(hub, tmp_path / "client")
    try:
        assert await client.consent()
        await open_and_greet(client, counselor, "under policy 1")  # the counselor caches 1
        new_fp = await install(hub, 2, seed=10)
        assert await client.consent()  # the client reads, and accepts, policy 2
        case_id = await open_and_greet(client, counselor, "under policy 2")
        # The counselor's first capsule (policy 1, cached) was refused; it made another.
        assert await capsule_policies(hub, case_id, 2) == {
            client.account_id: new_fp,
            counselor.account_id: new_fp,
        }
    finally:
        await client.close()
        await counselor.close()


async def test_key_of_a_waiting_case_is_escrowed_and_shared_once_certified(
    hub: RunningHub, tmp_path: Path
) -> None:
    """Issue 14 under escrow: the key the client makes for its waiting case is bound to
    the installed policy and comes with the client's capsule; once the certified
    counselor is assigned the client shares it, and the counselor deposits its own
    capsule of the same key under the same policy."""
    fp = await install(hub, 1, seed=0)
    counselor = await register_counselor(hub, tmp_path / "counselor")
    assert await certify_counselors(hub, ORG) == ["dr-who"]
    await counselor.close()  # offline: the case waits
    client = await register_client(hub, tmp_path / "client")
    try:
        assert await client.consent()
        case = await client.open_case("anxiety", "en")
        assert case.state == "waiting"
        await client.send(case.case_id, "first, while waiting")
        await client.send(case.case_id, "second, while waiting")
        assert await capsule_policies(hub, case.case_id, 1) == {client.account_id: fp}
        counselor = await ChatClient.open(hub.url, tmp_path / "counselor", PASS_COUNSELOR)
        got = await take(counselor, 2)
        assert [(m.body, m.verified) for m in got] == [
            ("first, while waiting", True),
            ("second, while waiting", True),
        ]
        assert await capsule_policies(hub, case.case_id, 2) == {
            client.account_id: fp,
            counselor.account_id: fp,
        }
    finally:
        await client.close()
        await counselor.close()
