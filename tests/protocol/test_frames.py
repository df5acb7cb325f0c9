"""Frames: every client and server frame type round-trips through the codec.

Valid frames are generated from the struct annotations themselves (msgspec.inspect), so a
new field or a changed constraint is exercised without touching this file.
"""

from __future__ import annotations

import base64

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import PROTOCOL_VERSION, codec
from protocol import frames as f
from protocol.errors import UnknownType
from tests.helpers.frame_strategies import CLIENT_TYPES, SERVER_TYPES, struct_strategy


def _ids(types: tuple[type[msgspec.Struct], ...]) -> list[str]:
    return [str(t.__struct_config__.tag) for t in types]


_ROUNDTRIP = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("cls", CLIENT_TYPES, ids=_ids(CLIENT_TYPES))
@_ROUNDTRIP
@given(data=st.data())
def test_client_frame_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    frame = data.draw(struct_strategy(cls))
    wire = codec.encode(frame)
    decoded = codec.decode_client(wire)
    assert decoded == frame
    assert type(decoded) is cls
    assert codec.encode(decoded) == wire
    assert codec.decode_client(wire.decode("utf-8")) == frame  # str input (websockets text)


@pytest.mark.parametrize("cls", SERVER_TYPES, ids=_ids(SERVER_TYPES))
@_ROUNDTRIP
@given(data=st.data())
def test_server_frame_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    frame = data.draw(struct_strategy(cls))
    wire = codec.encode(frame)
    decoded = codec.decode_server(wire)
    assert decoded == frame
    assert type(decoded) is cls
    assert codec.encode(decoded) == wire


@pytest.mark.parametrize("cls", CLIENT_TYPES, ids=_ids(CLIENT_TYPES))
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_client_frames_are_not_server_frames(
    cls: type[msgspec.Struct], data: st.DataObject
) -> None:
    with pytest.raises(UnknownType):
        codec.decode_server(codec.encode(data.draw(struct_strategy(cls))))


@pytest.mark.parametrize("cls", SERVER_TYPES, ids=_ids(SERVER_TYPES))
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_server_frames_are_not_client_frames(
    cls: type[msgspec.Struct], data: st.DataObject
) -> None:
    with pytest.raises(UnknownType):
        codec.decode_client(codec.encode(data.draw(struct_strategy(cls))))


def test_tags_are_unique_across_directions() -> None:
    tags = _ids(CLIENT_TYPES) + _ids(SERVER_TYPES)
    assert len(tags) == len(set(tags))


def test_the_wire_tags_are_stable() -> None:
    # Changing this list is a wire-protocol change: update docs/PROTOCOL.md with it.
    assert _ids(CLIENT_TYPES) == [
        "hello",
        "register",
        "prelogin",
        "login",
        "auth",
        "logout",
        "directory.get",
        "case.open",
        "case.list",
        "case.key",
        "case.keys",
        "case.key.share",
        "msg.send",
        "sync",
        "receipt",
        "typing",
        "case.close",
        "ping",
        "case.capsule",
        "policy.get",
        "consent",
        "dispute.request",
        "dispute.list",
        "account.attest",
        "prefs.get",
        "prefs.put",
    ]
    assert _ids(SERVER_TYPES) == [
        "challenge",
        "registered",
        "prelogin.result",
        "login.result",
        "welcome",
        "directory.result",
        "case.opened",
        "case.list.result",
        "case.keys.result",
        "msg.ack",
        "sync.result",
        "ok",
        "pong",
        "error",
        "msg.new",
        "case.assigned",
        "case.key.new",
        "receipt.new",
        "typing.new",
        "case.closed",
        "case.queue",
        "policy.result",
        "dispute.created",
        "dispute.list.result",
        "dispute.updated",
        "prefs.result",
    ]


def test_requests_and_results_carry_an_id_events_do_not() -> None:
    for cls in CLIENT_TYPES:
        assert issubclass(cls, f._Request), cls
    events = {
        f.MsgNew,
        f.CaseAssigned,
        f.CaseKeyNew,
        f.ReceiptNew,
        f.TypingNew,
        f.CaseClosed,
        f.CaseQueue,
        f.DisputeUpdated,
    }
    for cls in SERVER_TYPES:
        names = {field.name for field in mi.type_info(cls).fields}  # type: ignore[attr-defined]
        if cls in events:
            assert "id" not in names, cls
        else:
            assert "id" in names, cls


def test_encoding_layout() -> None:
    """type first, then fields in declaration order, v last; bytes as padded std base64."""
    frame = f.Login(id="r1", handle="alice", auth_key=bytes([0xFB, 0xFF]) * 16)
    key = base64.b64encode(frame.auth_key).decode()
    assert "+" in key and "/" in key
    assert codec.encode(frame) == (
        b'{"type":"login","id":"r1","handle":"alice","auth_key":"' + key.encode() + b'","v":2}'
    )
    assert frame.v == PROTOCOL_VERSION


def test_defaults() -> None:
    assert codec.decode_client(b'{"type":"hello","id":"a"}') == f.Hello(id="a", client="")
    sync = codec.decode_client(b'{"type":"sync","id":"a","case_id":"c"}')
    assert sync == f.Sync(id="a", case_id="c", after_seq=0, limit=500)
    reg = f.Register(
        id="a",
        handle="abc",
        salt=bytes(16),
        opslimit=1,
        memlimit=8192,
        auth_key=bytes(32),
        sign_pk=bytes(32),
        box_pk=bytes(32),
        box_sig=bytes(64),
        wrapped_keys=bytes(104),
    )
    assert reg.invite is None
    entry = codec.decode_server(
        b'{"type":"directory.result","id":"a","entries":[{"account_id":"x","handle":"abc",'
        b'"role":"client","sign_pk":"'
        + base64.b64encode(bytes(32))
        + b'","box_pk":"'
        + base64.b64encode(bytes(32))
        + b'"}]}'
    )
    assert isinstance(entry, f.DirectoryResult)
    assert entry.entries[0].box_sig is None and entry.entries[0].cert is None
    assert codec.decode_client(codec.encode(reg)) == reg
    ack = codec.decode_server(
        b'{"type":"msg.ack","id":"a","case_id":"c","client_msg_id":"m","seq":1,'
        b'"chain_hash":"' + base64.b64encode(bytes(32)) + b'"}'
    )
    assert isinstance(ack, f.MsgAck) and ack.duplicate is False
    err = codec.decode_server(b'{"type":"error","code":"invalid","message":"x"}')
    assert err == f.ErrorFrame(code="invalid", message="x", id=None)


def test_frames_are_frozen() -> None:
    frame = f.Ping(id="a")
    with pytest.raises(AttributeError):
        frame.id = "b"  # type: ignore[misc]
