"""Several hub processes on one PostgreSQL database and one Redis, behind HAProxy.

Every node is a real ``chat-server serve`` process (tests/helpers/cluster.py) with its
own port, on a database and a Redis key prefix of the test's own. Clients go through
HAProxy with ``wss://`` where the test is about what a user sees, and straight to a
node's own port where the test is about two nodes racing (HAProxy would only hide
which node did what). Failures (Redis, a killed node, PostgreSQL) are in
test_cluster_failures.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from chat_client import CaseAssignedEvent, ChatClient
from protocol import crypto
from protocol import frames as f
from protocol.chain import verify_chain
from protocol.errors import CloseCode
from tests.helpers.clients import PASS_CLIENT, PASS_COUNSELOR, next_message, take_event
from tests.helpers.cluster import Cluster, Node, people, run_cluster
from tests.helpers.haproxy import StartProxy
from tests.helpers.hubs import TEST_KDF
from tests.helpers.rawclient import RawClient, pair, rid
from tests.helpers.waiting import wait_until, within


async def _sessions(*nodes: Node) -> list[float]:
    return [await node.metric("chat_sessions_open") for node in nodes]


async def _placed(a: Node, b: Node, expected: list[float]) -> bool:
    return await _sessions(a, b) == expected


async def _events(client: RawClient, kind: type[f.MsgNew], count: int, timeout: float) -> None:
    """Until ``client`` has received ``count`` frames of ``kind`` (kept in its events)."""

    async def read() -> None:
        while sum(isinstance(e, kind) for e in client.events) < count:
            client.events.append(await client.recv(timeout))

    await within(read(), timeout, f"{count} {kind.__name__} frames")


async def test_a_client_and_a_counselor_on_two_nodes_chat_through_haproxy_with_wss(
    tmp_path: Path, cluster_db: str, redis_url: str, haproxy: StartProxy
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url) as cluster:
        a, b = cluster.nodes
        proxy = await haproxy([a.backend, b.backend])
        await proxy.wait_status("a", "UP")
        await proxy.wait_status("b", "UP")
        tls = proxy.client_ssl()
        invite = await cluster.invite_counselor()
        homes = {"counselor": tmp_path / "counselor", "client": tmp_path / "client"}
        for client in (
            await ChatClient.register(
                proxy.wss_url,
                "dr-wss",
                PASS_COUNSELOR,
                home=homes["counselor"],
                invite=invite,
                tls=tls,
                **TEST_KDF,
            ),
            await ChatClient.register(
                proxy.wss_url, "calm-river", PASS_CLIENT, home=homes["client"], tls=tls, **TEST_KDF
            ),
        ):
            await client.close()
        await wait_until(lambda: _no_connections(a, b), "registration connections closed")

        # One session each: HAProxy's leastconn puts the second on the other node.
        counselor = await ChatClient.open(None, homes["counselor"], PASS_COUNSELOR, tls=tls)
        client = await ChatClient.open(None, homes["client"], PASS_CLIENT, tls=tls)
        try:
            assert await _sessions(a, b) == [1.0, 1.0]
            case = await client.open_case("anxiety", "en")
            assert case.state == "assigned"  # matched with a counselor on the other node
            assigned = await take_event(counselor, CaseAssignedEvent)
            assert isinstance(assigned, CaseAssignedEvent)
            assert assigned.case.case_id == case.case_id

            await client.send(case.case_id, "hello from one node")
            heard = await next_message(counselor)
            assert (heard.body, heard.verified) == ("hello from one node", True)
            await counselor.send(case.case_id, "hello from the other")
            heard = await next_message(client)
            assert (heard.body, heard.verified) == ("hello from the other", True)
        finally:
            await client.close()
            await counselor.close()

        # The terminal client through the same load balancer, trusting only our CA.
        env = {**os.environ, "CHAT_PASSPHRASE": PASS_CLIENT}
        env.pop("SSL_CERT_FILE", None)

        async def chat_client(*args: str) -> subprocess.CompletedProcess[bytes]:
            command = [sys.executable, "-m", "chat_client", "--server", proxy.wss_url]
            command += ["--home", str(homes["client"]), "--json", *args]
            return await asyncio.to_thread(
                subprocess.run, command, capture_output=True, env=env, timeout=60, check=False
            )

        history = await chat_client("--ca-file", str(proxy.pki.ca_file), "history", case.case_id)
        assert history.returncode == 0, history.stderr.decode()
        messages = json.loads(history.stdout)["messages"]
        assert [(m["body"], m["verified"]) for m in messages] == [
            ("hello from one node", True),
            ("hello from the other", True),
        ]
        untrusted = await chat_client("history", case.case_id)
        assert untrusted.returncode == 4, untrusted.stderr.decode()  # certificate refused
        assert b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


async def _no_connections(*nodes: Node) -> bool:
    return [await node.metric("chat_connections_open") for node in nodes] == [0.0] * len(nodes)


async def test_two_nodes_append_to_one_case_gap_free_and_relay_everything(
    tmp_path: Path, cluster_db: str, redis_url: str
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url) as cluster:
        a, b = cluster.nodes
        client, counselor, case, key = await pair(
            a.url, await cluster.invite_counselor(), counselor_url=b.url
        )
        per_side = 150
        from_client = [client.encrypt(key, case.case_id, f"c{i}") for i in range(per_side)]
        from_counselor = [counselor.encrypt(key, case.case_id, f"k{i}") for i in range(per_side)]
        # Both nodes' group committers write the same case at once: the case row lock
        # orders them, so seqs stay unique and gap-free with no lock in any process.
        answers_a, answers_b = await asyncio.gather(
            client.pipeline(from_client), counselor.pipeline(from_counselor)
        )
        acks = [*answers_a.values(), *answers_b.values()]
        assert all(isinstance(x, f.MsgAck) and not x.duplicate for x in acks), acks
        seqs = sorted(x.seq for x in acks if isinstance(x, f.MsgAck))
        assert seqs == list(range(1, 2 * per_side + 1))
        # Each side's acks come in its own send order.
        for sent, answers in ((from_client, answers_a), (from_counselor, answers_b)):
            mine = [answers[frame.id] for frame in sent]
            assert [x.seq for x in mine if isinstance(x, f.MsgAck)] == sorted(
                x.seq for x in mine if isinstance(x, f.MsgAck)
            )

        # Every message reached the other node's participant live, once.
        await _events(client, f.MsgNew, per_side, 10)
        await _events(counselor, f.MsgNew, per_side, 10)
        for reader, writer_frames in ((client, from_counselor), (counselor, from_client)):
            got = [e.message.client_msg_id for e in reader.events if isinstance(e, f.MsgNew)]
            assert sorted(got) == sorted(x.client_msg_id for x in writer_frames)

        stored = await client.sync_all(case.case_id)
        assert [m.seq for m in stored] == list(range(1, 2 * per_side + 1))
        assert verify_chain(stored) == []

        # Typing and receipts cross nodes too.
        await client.request(f.Typing(id=rid(), case_id=case.case_id, active=True))
        typing = await counselor.event(f.TypingNew)
        assert (typing.account_id, typing.active) == (client.account_id, True)
        await counselor.request(counselor.receipt(case.case_id, stored[-1]))
        receipt = await client.event(f.ReceiptNew)
        assert (receipt.account_id, receipt.up_to_seq) == (counselor.account_id, 2 * per_side)
        assert await b.metric("chat_bus_received_total") > 0


async def test_two_nodes_racing_on_one_case_reach_one_outcome(
    tmp_path: Path, cluster_db: str, redis_url: str
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url) as cluster:
        a, b = cluster.nodes
        await _race_to_assign(cluster, a, b)
        await _race_close_and_send(cluster, a, b)
        await _race_key_deposits(cluster, a, b)


async def _race_to_assign(cluster: Cluster, a: Node, b: Node) -> None:
    """Waiting cases, and two counselors arriving at once on two nodes: each node
    matches; every case goes to exactly one of them, and everyone hears the same."""
    # The invites come first: a language no counselor (or invite) offers is refused.
    invites = [await cluster.invite_counselor(languages=("sw",)) for _ in (a, b)]
    client = await RawClient.connect(a.url)
    await client.register(f"waiting-{secrets.token_hex(3)}")
    await client.authenticate()
    waiting = []
    for _ in range(6):
        opened = await client.request(f.CaseOpen(id=rid(), topic="grief", language="sw"))
        assert isinstance(opened, f.CaseOpened) and opened.case.state == "waiting"
        waiting.append(opened.case.case_id)
    counselors = []
    for node, invite in zip((a, b), invites, strict=True):
        counselor = await RawClient.connect(node.url)
        await counselor.register(f"sw-{node.name}-{secrets.token_hex(3)}", invite=invite)
        counselors.append(counselor)
    await asyncio.gather(*(c.authenticate() for c in counselors))

    async with cluster.database() as db:
        rows = {case_id: await db.cases.get(case_id) for case_id in waiting}

        async def all_assigned() -> bool:
            for case_id in waiting:
                rows[case_id] = await db.cases.get(case_id)
            return all(r is not None and r.state == "assigned" for r in rows.values())

        await wait_until(all_assigned, "every waiting case assigned")
    owner = {case_id: row.counselor_id for case_id, row in rows.items() if row is not None}
    for counselor in counselors:
        mine = sorted(k for k, v in owner.items() if v == counselor.account_id)
        heard = await _assigned(counselor, len(mine))
        assert heard == mine
    assert await _assigned(client, len(waiting)) == sorted(waiting)
    for who in (client, *counselors):
        await who.close()


async def _assigned(who: RawClient, count: int) -> list[str]:
    """The case ids of the first ``count`` case.assigned events ``who`` receives, and
    a check that no other case.assigned follows them at once."""
    got = [(await who.event(f.CaseAssigned)).case.case_id for _ in range(count)]
    extra = await who.request(f.CaseList(id=rid()))  # a round trip: anything sent before it is in
    assert isinstance(extra, f.CaseListResult)
    assert not [e for e in who.events if isinstance(e, f.CaseAssigned)], "assigned twice"
    return sorted(got)


async def _race_close_and_send(cluster: Cluster, a: Node, b: Node) -> None:
    """A client pipelines sends on node A while its counselor closes the case on node B:
    every send before the close's commit is acked, every later one refused, in order."""
    client, counselor, case, key = await pair(
        a.url, await cluster.invite_counselor(), counselor_url=b.url
    )

    async def send_until_refused() -> list[f.ServerFrame]:
        answers: list[f.ServerFrame] = []
        for start in range(0, 150, 5):  # windows of 5 in flight, until the close bites
            window = [client.encrypt(key, case.case_id, f"m{start + i}") for i in range(5)]
            got = await client.pipeline(window)
            answers += [got[frame.id] for frame in window]
            if isinstance(answers[-1], f.ErrorFrame):
                break
        return answers

    sending = asyncio.ensure_future(send_until_refused())
    await _events(counselor, f.MsgNew, 20, 10)  # the close lands mid-stream
    closed = await counselor.request(f.CaseClose(id=rid(), case_id=case.case_id))
    assert isinstance(closed, f.Ok)
    answers = await within(sending, 20, "answers to every send")
    kinds = [type(x).__name__ for x in answers]
    acked = kinds.count("MsgAck")
    assert kinds == ["MsgAck"] * acked + ["ErrorFrame"] * (len(answers) - acked), kinds
    assert acked >= 20 and acked < len(answers)
    refusals = {(x.code, x.message) for x in answers if isinstance(x, f.ErrorFrame)}
    assert refusals == {("forbidden", "case is closed")}
    seqs = [x.seq for x in answers if isinstance(x, f.MsgAck)]
    assert seqs == list(range(1, acked + 1))
    async with cluster.database() as db:
        row = await db.cases.get(case.case_id)
    assert row is not None and (row.state, row.last_seq) == ("closed", acked)
    assert (await client.event(f.CaseClosed)).case_id == case.case_id  # across nodes
    await client.close()
    await counselor.close()


async def _race_key_deposits(cluster: Cluster, a: Node, b: Node) -> None:
    """Both participants deposit the next epoch's key at once, on two nodes: one wins,
    the other gets ``conflict`` and hears of the winner's epoch."""
    client, counselor, case, _ = await pair(
        a.url, await cluster.invite_counselor(), counselor_url=b.url
    )
    assert client.identity is not None and counselor.identity is not None
    boxes = {
        client.account_id: client.identity.box_pk,
        counselor.account_id: counselor.identity.box_pk,
    }
    for epoch in range(2, 7):
        answers = await asyncio.gather(
            *(_deposit(who, case, epoch, boxes) for who in (client, counselor))
        )
        assert sorted(type(x).__name__ for x in answers) == ["ErrorFrame", "Ok"], answers
        loser_answer = next(x for x in answers if isinstance(x, f.ErrorFrame))
        assert loser_answer.code == "conflict"
        winner, loser = (client, counselor) if isinstance(answers[0], f.Ok) else (counselor, client)
        assert (await loser.event(f.CaseKeyNew)).epoch == epoch
        async with cluster.database() as db:
            stored = await db.cases.epoch_key(case.case_id, epoch)
            row = await db.cases.get(case.case_id)
        assert stored is not None and stored.creator_id == winner.account_id
        assert row is not None and row.epoch == epoch
    await client.close()
    await counselor.close()


async def _deposit(
    who: RawClient, case: f.CaseInfo, epoch: int, boxes: dict[str, bytes]
) -> f.ServerFrame:
    assert who.identity is not None
    key = crypto.new_case_key()
    commitment = crypto.key_commitment(key, case.case_id, epoch)
    return await who.request(
        f.CaseKeyDeposit(
            id=rid(),
            case_id=case.case_id,
            epoch=epoch,
            commitment=commitment,
            commitment_sig=crypto.sign_commitment(
                who.identity, case.case_id, epoch, commitment, escrow=crypto.NO_ESCROW
            ),
            escrow=crypto.NO_ESCROW,
            seals=[
                f.KeySeal(account_id=account, sealed=crypto.seal_case_key(key, box))
                for account, box in boxes.items()
            ],
        )
    )


async def test_session_cap_and_rate_limits_hold_across_nodes(
    tmp_path: Path, cluster_db: str, redis_url: str
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url) as cluster:
        a, b = cluster.nodes
        first = await RawClient.connect(a.url)
        await first.register(f"many-{secrets.token_hex(3)}")
        await first.authenticate()
        sessions = [first] + [await first.session_of_same_account(a.url) for _ in range(7)]
        # The ninth session, on the other node: the oldest, on node A, is replaced.
        ninth = await first.session_of_same_account(b.url)
        await within(first.ws.wait_closed(), 10, "the oldest session's close")
        assert first.ws.close_code == CloseCode.REPLACED
        assert all(s.ws.close_code is None for s in sessions[1:])
        await wait_until(lambda: _placed(a, b, [7.0, 1.0]), "7 sessions on A, 1 on B")

        # case.open's per-account budget (burst 10) is one budget for both nodes.
        answers = [
            await (ninth if i % 2 else sessions[1]).request(
                f.CaseOpen(id=rid(), topic="anxiety", language="en")
            )
            for i in range(11)
        ]
        assert [type(x).__name__ for x in answers] == ["CaseOpened"] * 10 + ["ErrorFrame"]
        refused = answers[-1]
        assert isinstance(refused, f.ErrorFrame) and refused.code == "rate_limited"
        for node in (a, b):
            assert await node.metric('chat_ratelimit_allowed_total{limit="case_open"}') > 0
        for session in (*sessions[1:], ninth):
            await session.close()


async def test_sigterm_drains_a_node_and_its_sessions_move_through_haproxy(
    tmp_path: Path, cluster_db: str, redis_url: str, haproxy: StartProxy
) -> None:
    async with run_cluster(tmp_path, cluster_db, redis_url, start=["a"]) as cluster:
        a, b = cluster.nodes
        proxy = await haproxy([a.backend, b.backend])
        await proxy.wait_status("a", "UP")
        async with people(cluster, proxy, tmp_path) as (counselor, client):
            case = await client.open_case("anxiety", "en")
            await take_event(counselor, CaseAssignedEvent)
            before = [await client.send(case.case_id, f"before {i}") for i in range(20)]
            stays = await RawClient.connect(a.url)  # a counselor that will not come back
            await stays.register("dr-gone", invite=await cluster.invite_counselor())
            await stays.authenticate()
            await b.start()
            await proxy.wait_status("b", "UP")
            assert {counselor.account_id, stays.account_id} <= await cluster.online_counselors()

            assert await a.terminate() == 0  # drained: commits finished, sessions told 1001
            await within(stays.ws.wait_closed(), 5, "the drained node's close")
            assert stays.ws.close_code == CloseCode.GOING_AWAY
            # Its counselors left presence at once, not after the presence TTL (15 s).
            assert stays.account_id not in await cluster.online_counselors()
            # The SDK's sessions come back through HAProxy, on node B.
            await wait_until(
                lambda: b.metric("chat_sessions_open"), "sessions back on node B", timeout=15
            )
            after = await client.send(case.case_id, "after the drain")
            got = [await next_message(counselor, timeout=15) for _ in range(len(before) + 1)]
            assert [m.seq for m in got] == [s.seq for s in before] + [after.seq]
            assert [m.body for m in got] == [f"before {i}" for i in range(20)] + ["after the drain"]
            await wait_until(
                lambda: _online(cluster, counselor.account_id), "the counselor online on B"
            )


async def _online(cluster: Cluster, account_id: str) -> bool:
    return account_id in await cluster.online_counselors()
