"""Limits on what one account can ask of counselors and the hub (issue 13, item 6):
cases waiting and open per client, per-account message and request rates over all of
its sessions (dispute requests per case: tests/chat_server/handlers/test_disputes.py).
The hub's defaults are used where the test says so; the rest of the suite runs with
these limits lifted (tests/helpers/hubs.py)."""

from __future__ import annotations

import secrets
from pathlib import Path

from protocol import frames as f
from tests.helpers.hubs import start_hub
from tests.helpers.rawclient import RawClient, pair, rid

#: The production defaults of the case caps (chat_server/config.py).
DEFAULT_CASE_CAPS = {"max_waiting_cases": 1, "max_open_cases": 3}


async def _client(url: str) -> RawClient:
    peer = await RawClient.connect(url)
    await peer.register(f"client{secrets.token_hex(3)}")
    await peer.authenticate()
    return peer


def _open() -> f.CaseOpen:
    return f.CaseOpen(id=rid(), topic="anxiety", language="en")


async def test_one_client_cannot_flood_the_only_counselor(tmp_path: Path) -> None:
    """The issue's scenario: one new account asks for many cases at once; with the
    defaults at most 3 reach the counselor, the rest are refused with limit_exceeded."""
    async with start_hub(tmp_path, **DEFAULT_CASE_CAPS) as hub:
        counselor = await RawClient.connect(hub.url)
        await counselor.register("onlycounselor", invite=await hub.invite_counselor())
        await counselor.authenticate()
        client = await _client(hub.url)
        # 9 of the 10 tries case.open's own budget allows at once (it counts attempts).
        replies = [await client.request(_open()) for _ in range(9)]
        opened = [r for r in replies if isinstance(r, f.CaseOpened)]
        refused = [r for r in replies if isinstance(r, f.ErrorFrame)]
        assert len(opened) == 3 and all(r.case.state == "assigned" for r in opened)
        assert len(refused) == 6 and {r.code for r in refused} == {"limit_exceeded"}
        # Closing one makes room for one more.
        closed = await client.request(f.CaseClose(id=rid(), case_id=opened[0].case.case_id))
        assert isinstance(closed, f.Ok), closed
        assert isinstance(await client.request(_open()), f.CaseOpened)
        for peer in (client, counselor):
            await peer.close()


async def test_a_client_has_one_case_waiting_at_a_time(tmp_path: Path) -> None:
    async with start_hub(tmp_path, **DEFAULT_CASE_CAPS) as hub:
        client = await _client(hub.url)  # no counselor online: cases wait
        first = await client.request(_open())
        assert isinstance(first, f.CaseOpened) and first.case.state == "waiting"
        second = await client.request(_open())
        assert isinstance(second, f.ErrorFrame) and second.code == "limit_exceeded"
        assert "waiting" in second.message
        other = await _client(hub.url)  # per client, not per hub
        assert isinstance(await other.request(_open()), f.CaseOpened)
        for peer in (client, other):
            await peer.close()


async def test_messages_per_account_are_limited_over_all_its_sessions(tmp_path: Path) -> None:
    async with start_hub(tmp_path, account_message_rate=(0.01, 5)) as hub:
        client, counselor, case, key = await pair(hub.url, await hub.invite_counselor())
        second = await client.session_of_same_account(hub.url)
        codes = []
        for sender in (client, second, client, second, client, second, client):
            reply = await sender.request(client.encrypt(key, case.case_id, "hi"))
            codes.append(reply.code if isinstance(reply, f.ErrorFrame) else "ack")
        assert codes == ["ack"] * 5 + ["rate_limited"] * 2
        refused = await second.request(client.encrypt(key, case.case_id, "again"))
        assert isinstance(refused, f.ErrorFrame) and refused.retry_after_ms
        assert refused.retry_after_ms > 60_000
        # The counselor's budget is its own.
        assert counselor.identity is not None
        ack = await counselor.request(counselor.encrypt(key, case.case_id, "reply"))
        assert isinstance(ack, f.MsgAck), ack
        for peer in (client, second, counselor):
            await peer.close()


async def test_requests_per_account_are_limited_over_all_its_sessions(tmp_path: Path) -> None:
    async with start_hub(tmp_path, account_request_rate=(0.01, 6)) as hub:
        first = await _client(hub.url)  # register, login and auth are before the budget
        second = await first.session_of_same_account(hub.url)
        replies = [await s.request(f.Ping(id=rid())) for s in (first, second) * 4]
        # hello, register, login and auth came before it: only the pings count.
        assert [type(r).__name__ for r in replies] == ["Pong"] * 6 + ["ErrorFrame"] * 2
        errors = [r for r in replies if isinstance(r, f.ErrorFrame)]
        assert {e.code for e in errors} == {"rate_limited"}
        assert all(e.retry_after_ms for e in errors)
        other = await _client(hub.url)
        assert isinstance(await other.request(f.Ping(id=rid())), f.Pong)
        for peer in (first, second, other):
            await peer.close()
