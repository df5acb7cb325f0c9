"""Codec: every way a frame can be refused, with the typed error the hub reports."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import frames as f
from protocol.errors import (
    FrameTooBig,
    InvalidFrame,
    MalformedFrame,
    RemoteError,
    UnknownType,
    UnsupportedVersion,
)
from protocol.limits import (
    MAX_CIPHERTEXT_BYTES,
    MAX_FRAME_BYTES,
    MAX_ID_CHARS,
    MAX_SERVER_FRAME_BYTES,
    MAX_SYNC_BATCH,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def msg_send(**changes: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "v": 2,
        "type": "msg.send",
        "id": "req-1",
        "case_id": "case-1",
        "epoch": 1,
        "client_msg_id": "cmid-0001",
        "nonce": b64(bytes(24)),
        "ciphertext": b64(bytes(100)),
    }
    frame.update(changes)
    return frame


def key_deposit(**changes: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "case.key",
        "id": "r",
        "case_id": "c",
        "epoch": 1,
        "commitment": b64(bytes(32)),
        "commitment_sig": b64(bytes(64)),
        "seals": [{"account_id": "a", "sealed": b64(bytes(80))}],
    }
    frame.update(changes)
    return frame


def wire(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def refuse(data: bytes | str, error: type[RemoteError]) -> RemoteError:
    with pytest.raises(error) as info:
        codec.decode_client(data)
    assert type(info.value) is error
    assert info.value.code == error.code
    return info.value


def test_a_valid_frame_decodes() -> None:
    frame = codec.decode_client(wire(msg_send()))
    assert isinstance(frame, f.MsgSend)
    assert frame.ciphertext == bytes(100)


# -- malformed -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{}}", b"\xff\xfe", b'{"type":"ping","id":"a"} x', b"{'type': 'ping'}", b"nul"],
)
def test_malformed_json(data: bytes) -> None:
    err = refuse(data, MalformedFrame)
    assert err.message == "frame is not valid JSON"


@pytest.mark.parametrize("data", [b"[]", b'[{"type":"ping","id":"a"}]', b"1", b'"ping"', b"null"])
def test_json_that_is_not_an_object(data: bytes) -> None:
    err = refuse(data, MalformedFrame)
    assert err.message == "frame must be a JSON object"


#: ~2 KB nested 1,000 levels deep: past msgspec's recursion limit (issue 13).
DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("data", "message", "rid"),
    [
        (b'{"v":1,"type":"ping","id":"a\xff"}', "frame is not valid UTF-8", None),
        # The lenient envelope skips the field it does not read, so the id is named.
        (b'{"v":1,"type":"ping","id":"ok","x":"\xc3\x28"}', "frame is not valid UTF-8", "ok"),
        ('{"v":1,"type":"ping","id":"a\ud800"}', "frame is not valid UTF-8", None),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "frame is nested too deeply", None),
        (DEEP, "frame is nested too deeply", None),
        # A schema error comes first, then the untyped parse meets the nesting.
        (b'{"v":1,"type":"nope","x":' + DEEP + b"}", "frame is nested too deeply", None),
        (b'{"v":1,"type":"ping","id":"p","x":' + DEEP + b"}", "frame is nested too deeply", None),
    ],
)
def test_undecodable_text_and_nesting_are_malformed(
    data: bytes | str, message: str, rid: str | None
) -> None:
    err = refuse(data, MalformedFrame)
    assert err.message == message
    assert codec.request_id_of(data) == rid


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteError):
        codec.decode_client(data)


# -- type ------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["nope", "msg.new", "challenge", "", "PING", 5, None, [], {}])
def test_unknown_type(tag: Any) -> None:
    err = refuse(wire({"type": tag, "id": "a"}), UnknownType)
    assert err.message == "unknown frame type"


def test_missing_type_is_invalid() -> None:
    err = refuse(b'{"id":"a"}', InvalidFrame)
    assert "type" in err.message


# -- schema --------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        msg_send(extra=1),
        {"type": "ping", "id": "a", "token": "x"},
        key_deposit(seals=[{"account_id": "a", "sealed": b64(bytes(80)), "x": 1}]),
    ],
    ids=["top-level", "on-empty-frame", "nested"],
)
def test_unknown_field(frame: dict[str, Any]) -> None:
    err = refuse(wire(frame), InvalidFrame)
    assert "unknown field" in err.message


@pytest.mark.parametrize(
    "frame",
    [
        msg_send(epoch="1"),
        msg_send(epoch=1.0),
        msg_send(epoch=True),
        msg_send(case_id=7),
        msg_send(nonce=list(range(24))),
        msg_send(ciphertext=None),
        {"type": "typing", "id": "a", "case_id": "c", "active": 1},
        {"type": "receipt", "id": "a", "case_id": "c", "kind": "seen", "up_to_seq": 1},
        {"type": "directory.get", "id": "a", "account_ids": "acct"},
        key_deposit(seals={"account_id": "a", "sealed": b64(bytes(80))}),
    ],
)
def test_wrong_type(frame: dict[str, Any]) -> None:
    refuse(wire(frame), InvalidFrame)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ping"},
        {k: v for k, v in msg_send().items() if k != "ciphertext"},
        {"type": "case.open", "id": "a", "topic": "anxiety"},
    ],
)
def test_missing_field(frame: dict[str, Any]) -> None:
    err = refuse(wire(frame), InvalidFrame)
    assert "missing required field" in err.message


@pytest.mark.parametrize(
    "value",
    [
        b64(bytes(32)).rstrip("="),  # padding is required
        b64(bytes([0xFB, 0xFF]) * 16).replace("+", "-").replace("/", "_"),  # url-safe alphabet
        "not base64!",
        b64(bytes(32))[:-1] + "\n",
    ],
)
def test_bytes_must_be_padded_standard_base64(value: str) -> None:
    frame = {"type": "login", "id": "a", "handle": "alice", "auth_key": value}
    err = refuse(wire(frame), InvalidFrame)
    assert "$.auth_key" in err.message


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "login", "id": "a", "handle": "alice", "auth_key": b64(bytes(33))},
        {"type": "login", "id": "a", "handle": "alice", "auth_key": b64(bytes(31))},
        {"type": "auth", "id": "a", "account_id": "x", "token": "t", "sig": b64(bytes(63))},
        {"type": "auth", "id": "a", "account_id": "x", "token": "t" * 129, "sig": b64(bytes(64))},
        {"type": "auth", "id": "a", "account_id": "x", "token": "", "sig": b64(bytes(64))},
        {"type": "ping", "id": "a" * (MAX_ID_CHARS + 1)},
        {"type": "ping", "id": ""},
        {"type": "ping", "id": "a b"},
        {"type": "ping", "id": "caf\u00e9"},
        {"type": "ping", "id": "abc\n"},  # Python's $ would let a trailing newline through
        {"type": "prelogin", "id": "a", "handle": "alice\n"},
        {"type": "prelogin", "id": "a", "handle": "Alice"},
        {"type": "prelogin", "id": "a", "handle": "ab"},
        {"type": "prelogin", "id": "a", "handle": "a" * 33},
        {"type": "prelogin", "id": "a", "handle": "_alice"},
        {"type": "case.open", "id": "a", "topic": "anxiety\n", "language": "en"},
        {"type": "case.open", "id": "a", "topic": "anxiety", "language": "en\n"},
        {"type": "case.open", "id": "a", "topic": "9lives", "language": "en"},
        {"type": "case.open", "id": "a", "topic": "anxiety", "language": "english"},
        {"type": "hello", "id": "a", "client": "c" * 65},
        msg_send(nonce=b64(bytes(25))),
        msg_send(ciphertext=b64(bytes(16))),
        msg_send(ciphertext=b64(bytes(MAX_CIPHERTEXT_BYTES + 1))),
        msg_send(epoch=0),
        msg_send(epoch=2**31 + 1),
        msg_send(client_msg_id="x" * (MAX_ID_CHARS + 1)),
        {"type": "sync", "id": "a", "case_id": "c", "after_seq": -1},
        {"type": "sync", "id": "a", "case_id": "c", "after_seq": 2**53 + 1},
        {"type": "sync", "id": "a", "case_id": "c", "limit": MAX_SYNC_BATCH + 1},
        {"type": "sync", "id": "a", "case_id": "c", "limit": 0},
        {"type": "directory.get", "id": "a", "account_ids": []},
        {"type": "directory.get", "id": "a", "account_ids": ["x"] * 51},
        key_deposit(seals=[]),
        key_deposit(seals=[{"account_id": "a", "sealed": b64(bytes(80))}] * 9),
        key_deposit(seals=[{"account_id": "a", "sealed": b64(bytes(79))}]),
        {
            "type": "register",
            "id": "a",
            "handle": "alice",
            "salt": b64(bytes(16)),
            "opslimit": 1,
            "memlimit": 4096,
            "auth_key": b64(bytes(32)),
            "sign_pk": b64(bytes(32)),
            "box_pk": b64(bytes(32)),
            "wrapped_keys": b64(bytes(104)),
        },
    ],
)
def test_out_of_range_value(frame: dict[str, Any]) -> None:
    err = refuse(wire(frame), InvalidFrame)
    assert "$." in err.message  # names the offending path
    assert len(err.message) <= 200


def test_limits_are_inclusive() -> None:
    assert codec.decode_client(wire({"type": "ping", "id": "a" * MAX_ID_CHARS}))
    biggest = wire(msg_send(ciphertext=b64(bytes(MAX_CIPHERTEXT_BYTES))))
    assert len(biggest) < MAX_FRAME_BYTES  # the largest message fits a frame
    assert isinstance(codec.decode_client(biggest), f.MsgSend)
    assert codec.decode_client(wire({"type": "sync", "id": "a", "case_id": "c", "limit": 500}))


def test_invalid_detail_is_truncated() -> None:
    frame = {"type": "receipt", "id": "a", "case_id": "c", "kind": "x" * 1000, "up_to_seq": 1}
    err = refuse(wire(frame), InvalidFrame)
    assert len(err.message) == 200


# -- size ------------------------------------------------------------------------


def test_frame_above_max_frame_bytes() -> None:
    padding = "x" * MAX_FRAME_BYTES
    refuse(wire({"type": "hello", "id": "a", "client": padding}), FrameTooBig)
    refuse(b"x" * (MAX_FRAME_BYTES + 1), FrameTooBig)  # checked before parsing


def test_frame_of_exactly_max_frame_bytes_is_parsed() -> None:
    data = b" " * (MAX_FRAME_BYTES - 24) + b'{"type":"ping","id":"a"}'
    assert len(data) == MAX_FRAME_BYTES
    assert codec.decode_client(data) == f.Ping(id="a")


def test_size_of_a_str_frame_counts_utf8_bytes() -> None:
    # 30,000 characters, 90,000 bytes: too big although len(str) is under the limit.
    text = '{"type":"hello","id":"a","client":"' + "\u20ac" * 30_000 + '"}'
    assert len(text) < MAX_FRAME_BYTES < len(text.encode())
    refuse(text, FrameTooBig)


def test_server_frames_have_a_larger_limit() -> None:
    body = b'{"type":"pong","id":"a"}'
    padded = b" " * (MAX_FRAME_BYTES * 2) + body
    assert codec.decode_server(padded) == f.Pong(id="a")
    with pytest.raises(FrameTooBig):
        codec.decode_server(b" " * MAX_SERVER_FRAME_BYTES + body)


# -- version -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 3, -1, "2", None, True, 2.0])
def test_wrong_version(version: Any) -> None:
    err = refuse(wire({"v": version, "type": "ping", "id": "a"}), UnsupportedVersion)
    assert err.message == "protocol version must be 2"


def test_a_version_1_hello_is_unsupported() -> None:
    # What a version-1 client sends first: the hub answers unsupported_version.
    refuse(b'{"type":"hello","id":"1","client":"old","v":1}', UnsupportedVersion)


def test_future_version_with_new_fields_or_types_is_unsupported_not_invalid() -> None:
    refuse(wire({"v": 3, "type": "ping", "id": "a", "new_field": 1}), UnsupportedVersion)
    refuse(wire({"v": 3, "type": "msg.edit", "id": "a"}), UnsupportedVersion)
    # An old client's frame: version-2 fields are missing, yet the answer is the version.
    refuse(
        wire(
            {"v": 1, "type": "receipt", "id": "a", "case_id": "c", "kind": "read", "up_to_seq": 1}
        ),
        UnsupportedVersion,
    )


def test_missing_version_means_the_current_version() -> None:
    # Every version-1 encoder wrote "v" (msgspec encodes defaults), so its absence
    # cannot hide an old client.
    assert codec.decode_client(b'{"type":"ping","id":"a"}') == f.Ping(id="a", v=2)


def test_server_decoder_checks_the_version_too() -> None:
    with pytest.raises(UnsupportedVersion):
        codec.decode_server(b'{"v":1,"type":"pong","id":"a"}')


# -- request_id_of -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"type":"nope","id":"req-7"}', "req-7"),
        (wire(msg_send(epoch="x")), "req-1"),
        ('{"id":"A.b:c_d-9"}', "A.b:c_d-9"),
        (wire({"id": "a" * MAX_ID_CHARS}), "a" * MAX_ID_CHARS),
        (b'{"type":"ping","id":"a","id":"b"}', "b"),
        (wire({"id": "a" * (MAX_ID_CHARS + 1)}), None),
        (b'{"id":""}', None),
        (b'{"id":"a b"}', None),
        (b'{"id":"abc\\n"}', None),
        (b'{"id":"caf\\u00e9"}', None),
        (b'{"id":"\\u0000"}', None),
        (b'{"id":7}', None),
        (b'{"id":null}', None),
        (b'{"id":["a"]}', None),
        (b'{"type":"ping"}', None),
        (b"{", None),
        (b"[]", None),
        (b'"id"', None),
        (b"", None),
        (b"\xff", None),
        (b'{"id":"a\xff"}', None),
        ('{"id":"a\ud800"}', None),
        (b'{"x":' + DEEP + b',"id":"a"}', None),
        (b'{"id":"a","x":' + b'{"a":' * 1000 + b"}" * 1000 + b"}", None),
    ],
)
def test_request_id_of(data: bytes | str, expected: str | None) -> None:
    assert codec.request_id_of(data) == expected


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=80))
def test_request_id_of_returns_only_ids_an_error_frame_can_carry(rid: str) -> None:
    found = codec.request_id_of(json.dumps({"id": rid}))
    if found is not None:
        err = f.ErrorFrame(code="invalid", message="m", id=found)
        assert codec.decode_server(codec.encode(err)) == err


def test_request_id_of_ignores_the_size_limit() -> None:
    data = wire({"type": "hello", "id": "big", "client": "x" * MAX_FRAME_BYTES})
    assert codec.request_id_of(data) == "big"


def test_encode_is_compact_utf8() -> None:
    data = codec.encode(f.ErrorFrame(code="invalid", message="caf\u00e9", id="a"))
    expected = (
        '{"type":"error","code":"invalid","message":"caf\u00e9","id":"a",'
        '"retry_after_ms":null,"v":2}'
    )
    assert data == expected.encode()
