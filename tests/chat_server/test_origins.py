"""Allowed origins and Host names (issue 13, item 8): DNS rebinding gets 403.

A page at a name the attacker controls, resolving to the hub, sends an ``Origin`` and a
``Host`` that match each other; the hub used to compare only those two. Now both must be
among the configured (or listen-address) origins.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from chat_server.cli import main as cli_main
from chat_server.origins import OriginPolicy, normalize_origin
from protocol import frames as f
from tests.helpers.hubs import RunningHub, start_hub
from tests.helpers.rawclient import RawClient, rid

# -- the policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("HTTPS://Chat.Example.ORG:443/", "https://chat.example.org"),
        ("http://example.org:80", "http://example.org"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_origins_are_normalized(value: str, normal: str) -> None:
    assert normalize_origin(value) == normal


@pytest.mark.parametrize(
    "value",
    ["null", "ftp://x.example", "https://", "https://a.example/path", "https://u@a.example", ""],
)
def test_what_is_not_an_origin_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_origin(value)


def _policy(host: str, **kw: object) -> OriginPolicy:
    values: dict[str, object] = {"allowed_origins": None, "public_url": None, **kw}
    return OriginPolicy.build(listen_host=host, port=8765, **values)  # type: ignore[arg-type]


def test_a_loopback_listen_address_allows_its_loopback_names_only() -> None:
    policy = _policy("127.0.0.1")
    assert policy.origins == {
        "http://127.0.0.1:8765",
        "http://localhost:8765",
        "http://[::1]:8765",
    }
    assert policy.host_allowed("LOCALHOST:8765") and policy.host_allowed("127.0.0.1:8765")
    assert not policy.host_allowed("127.0.0.1:8766")
    assert not policy.host_allowed("evil.example:8765")
    assert not policy.host_allowed(None)
    assert _policy("localhost").origins == policy.origins
    assert _policy("::1").origins == policy.origins


def test_other_listen_addresses() -> None:
    assert _policy("192.0.2.7").origins == {"http://192.0.2.7:8765"}
    assert _policy("2001:db8::7").origins == {"http://[2001:db8::7]:8765"}
    assert _policy("chat.internal").origins == {"http://chat.internal:8765"}
    every = _policy("0.0.0.0")
    assert f"http://{socket.gethostname().lower()}:8765" in every.origins
    assert "http://localhost:8765" in every.origins
    assert _policy("").origins == every.origins == _policy("::").origins


def test_configured_origins_replace_the_default_and_the_public_url_is_added() -> None:
    policy = _policy(
        "127.0.0.1",
        allowed_origins=("https://a.example",),
        public_url="https://chat.example.org",
    )
    assert policy.origins == {"https://a.example", "https://chat.example.org"}
    # A default port may be written or not, in Host as in Origin.
    assert policy.host_allowed("chat.example.org") and policy.host_allowed("a.example:443")
    assert policy.origin_allowed("https://chat.example.org:443")
    assert not policy.host_allowed("127.0.0.1:8765")
    assert not policy.origin_allowed("null")


# -- the real hub ----------------------------------------------------------------------


async def _status(hub: RunningHub, path: str, headers: dict[str, str]) -> int:
    """Status of one raw HTTP/1.1 request (a WebSocket handshake when asked for)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.server.port)
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(status.split()[1])


def _upgrade(host: str, origin: str | None = None) -> dict[str, str]:
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    return headers


async def test_hostile_dns_rebinding_is_refused(hub: RunningHub) -> None:
    port = hub.server.port
    rebound = f"evil.example:{port}"
    # The attacker's page: Origin and Host agree with each other, not with the hub.
    assert await _status(hub, "/ws", _upgrade(rebound, f"http://{rebound}")) == 403
    assert await _status(hub, "/", {"Host": rebound}) == 403
    assert await _status(hub, "/config.json", {"Host": rebound}) == 403
    # A foreign Origin with the hub's own Host, and the hub's Origin with a foreign Host.
    own = f"127.0.0.1:{port}"
    assert await _status(hub, "/ws", _upgrade(own, f"http://{rebound}")) == 403
    assert await _status(hub, "/ws", _upgrade(rebound, f"http://{own}")) == 403
    # The hub's own page and socket, by either loopback name.
    assert await _status(hub, "/ws", _upgrade(own, f"http://{own}")) == 101
    local = f"localhost:{port}"
    assert await _status(hub, "/ws", _upgrade(local, f"http://{local}")) == 101
    assert await _status(hub, "/", {"Host": own}) == 200
    assert "http.host_refused" in hub.log_file.read_text()


async def test_native_clients_and_probes_are_not_browser_requests(hub: RunningHub) -> None:
    # A client behind a proxy reaches the hub under the proxy's name, without an Origin.
    assert await _status(hub, "/ws", _upgrade("proxy.example:443")) == 101
    # HAProxy's health check (deploy/haproxy.cfg) sends "Host: haproxy-check".
    assert await _status(hub, "/healthz", {"Host": "haproxy-check"}) == 200
    peer = await RawClient.connect(hub.url)
    assert isinstance(await peer.request(f.Ping(id=rid())), f.Pong)


async def test_the_public_url_behind_a_proxy_is_allowed(tmp_path: Path) -> None:
    async with start_hub(tmp_path, public_url="https://chat.example.org") as hub:
        page = "https://chat.example.org"
        assert await _status(hub, "/ws", _upgrade("chat.example.org", page)) == 101
        assert await _status(hub, "/", {"Host": "chat.example.org"}) == 200
        own = f"127.0.0.1:{hub.server.port}"
        assert await _status(hub, "/ws", _upgrade(own, f"http://{own}")) == 101
        assert await _status(hub, "/", {"Host": "evil.example"}) == 403


async def test_configured_origins_replace_the_listen_address(tmp_path: Path) -> None:
    async with start_hub(tmp_path, allowed_origins=("https://a.example",)) as hub:
        own = f"127.0.0.1:{hub.server.port}"
        assert await _status(hub, "/ws", _upgrade(own, f"http://{own}")) == 403
        assert await _status(hub, "/ws", _upgrade("a.example", "https://a.example")) == 101


async def test_a_bad_origin_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        async with start_hub(tmp_path, allowed_origins=("chat.example.org",)):
            pass


def test_the_cli_refuses_a_bad_origin(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--public-url", "chat.example.org"]) == 2
    assert "not an http(s) origin" in capsys.readouterr().err
