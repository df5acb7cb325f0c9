"""Hub configuration (chat_server/config.py): defaults, CHAT_* variables, overrides, and
the key files in the state directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chat_server import cli
from chat_server.config import Config, load_key_file
from protocol import limits


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CHAT_DB_URL",
        "CHAT_HOST",
        "CHAT_PORT",
        "CHAT_STATE_DIR",
        "CHAT_DATA_KEY",
        "CHAT_ALLOWED_ORIGINS",
        "CHAT_PUBLIC_URL",
        "CHAT_LOG_FILE",
        "CHAT_LOG_LEVEL",
        "CHAT_ORG_FINGERPRINT",
        "CHAT_REDIS_URL",
        "CHAT_REDIS_PREFIX",
        "CHAT_NODE_ID",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_protocol_limits() -> None:
    config = Config.from_env()
    assert (config.host, config.port) == ("127.0.0.1", 8765)
    assert config.allowed_origins is None  # the listen address's (origins.OriginPolicy)
    assert config.public_url is None
    assert config.max_frame_bytes == limits.MAX_FRAME_BYTES
    assert config.auth_timeout_s == limits.AUTH_TIMEOUT_S
    assert (config.rate_per_s, config.rate_burst) == (limits.RATE_PER_S, limits.RATE_BURST)
    assert config.send_queue_frames == limits.SEND_QUEUE_FRAMES
    assert config.send_queue_bytes == limits.SEND_QUEUE_BYTES
    assert config.close_timeout_s == limits.CLOSE_TIMEOUT_S


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAT_DB_URL", "postgresql://db/chat")
    monkeypatch.setenv("CHAT_HOST", "0.0.0.0")
    monkeypatch.setenv("CHAT_PORT", "9000")
    monkeypatch.setenv("CHAT_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CHAT_DATA_KEY", "ab" * 32)
    monkeypatch.setenv("CHAT_ALLOWED_ORIGINS", " https://a.example , ,https://b.example")
    monkeypatch.setenv("CHAT_LOG_FILE", str(tmp_path / "hub.log"))
    monkeypatch.setenv("CHAT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CHAT_ORG_FINGERPRINT", "abcd")
    monkeypatch.setenv("CHAT_PUBLIC_URL", " https://chat.example.org ")
    config = Config.from_env(port=9001, host=None)  # None: keep what the environment says
    assert (config.db_url, config.host, config.port) == ("postgresql://db/chat", "0.0.0.0", 9001)
    assert config.state_dir == tmp_path and config.data_key == bytes([0xAB]) * 32
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert (config.log_file, config.log_level) == (tmp_path / "hub.log", "DEBUG")
    assert config.org_fingerprint == "abcd"
    assert config.public_url == "https://chat.example.org"
    assert config.resolved_data_key() == bytes([0xAB]) * 32


def test_a_data_key_must_be_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_DATA_KEY", "ab" * 31)
    with pytest.raises(ValueError, match="64 hex digits"):
        Config.from_env()


def test_key_files_are_made_once_private_and_read_back(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path / "state")
    data_key = config.resolved_data_key()
    assert len(data_key) == 32 and config.resolved_data_key() == data_key
    path = tmp_path / "state" / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == data_key.hex()
    server = config.server_key()
    assert server.sign_pk == config.server_key().sign_pk  # the same key every start
    assert (tmp_path / "state" / "server.key").exists()
    assert load_key_file(path) == data_key


def test_cluster_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.from_env().redis_url is None  # one node, everything in process
    monkeypatch.setenv("CHAT_REDIS_URL", "rediss://redis.internal:6380/0")
    monkeypatch.setenv("CHAT_REDIS_PREFIX", "prod:")
    monkeypatch.setenv("CHAT_NODE_ID", "hub-7")
    config = Config.from_env(node_id="hub-8")
    assert (config.redis_url, config.redis_prefix) == ("rediss://redis.internal:6380/0", "prod:")
    assert config.resolved_node_id() == "hub-8"


def test_node_ids_are_plain_names_and_default_to_host_and_pid() -> None:
    default = Config().resolved_node_id()
    assert default.endswith(f"-{os.getpid()}") and ":" not in default and "|" not in default
    for bad in ("", "a:b", "a|b", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="node id"):
            Config(node_id=bad).resolved_node_id()


def test_serve_refuses_a_bad_node_id_or_presence_ttl(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--node-id", "a:b"]) == 2
    assert "node id" in capsys.readouterr().err
    assert cli.main(["serve", "--presence-ttl", "0"]) == 2
    assert "--presence-ttl" in capsys.readouterr().err
