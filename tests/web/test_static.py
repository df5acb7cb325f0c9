"""The hub serves the web chat itself, same origin as the socket, under a strict CSP."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chat_server.cli import build_parser
from chat_server.config import Config
from tests.helpers.hubs import start_hub

WEB = Path(__file__).resolve().parents[2] / "web_client"


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(_get, url)


def test_page_has_no_inline_script_style_or_handlers() -> None:
    html = (WEB / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="' in attrs and body.strip() == "" for attrs, body in scripts)
    assert not re.search(r"\sstyle\s*=", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert "<style" not in html


async def test_index_config_and_bundle_are_served_with_csp(tmp_path: Path) -> None:
    if not (WEB / "dist" / "app.js").is_file():
        pytest.skip("web bundle not built (scripts/setup builds it)")
    async with start_hub(tmp_path, idle_lock_minutes=2.5) as hub:
        status, headers, body = await fetch(hub.http_url)
        assert status == 200 and b'src="dist/app.js"' in body
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "connect-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert headers["Cache-Control"] == "no-store"
        status, headers, body = await fetch(hub.http_url + "config.json")
        assert status == 200 and json.loads(body) == {
            "idle_lock_seconds": 150.0,
            "org_fingerprint": None,
            "test_kdf": True,  # start_hub runs the test KDF profile
        }
        assert headers["Cache-Control"] == "no-store"
        for name in ("dist/app.js", "dist/crypto.js", "style.css"):
            status, headers, _ = await fetch(hub.http_url + name)
            assert status == 200, name
        for bad in ("package.json", "node_modules/", "../chat_server/app.py", "src/", "src/app.js"):
            status, _, _ = await fetch(hub.http_url + bad)
            assert status == 404, bad
        # A raw request with ".." inside dist/ (clients normalise it away) is refused too.
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.server.port)
        host = f"127.0.0.1:{hub.server.port}".encode()
        writer.write(b"GET /dist/../package.json HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        writer.close()


def test_idle_lock_flag() -> None:
    args: Any = build_parser().parse_args(["serve", "--idle-lock-minutes", "0.5"])
    assert args.idle_lock_minutes == 0.5


def test_web_root_defaults_to_the_repository_client_and_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Config().web_root == WEB
    monkeypatch.setenv("CHAT_WEB_ROOT", str(tmp_path))
    assert Config.from_env().web_root == tmp_path
    args: Any = build_parser().parse_args(["serve", "--web-root", str(tmp_path / "page")])
    assert args.web_root == tmp_path / "page"


async def test_hub_serves_the_page_from_its_web_root(tmp_path: Path) -> None:
    root = tmp_path / "page"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    async with start_hub(tmp_path / "hub", web_root=root) as hub:
        status, _, body = await fetch(hub.http_url)
        assert status == 200 and b"elsewhere" in body
        status, _, _ = await fetch(hub.http_url + "style.css")
        assert status == 404  # nothing falls back to the default root
