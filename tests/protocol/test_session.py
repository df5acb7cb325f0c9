"""The session state table: each client frame type in each state."""

from __future__ import annotations

import typing

import msgspec
import pytest

from protocol import frames as f
from protocol.errors import InvalidFrame, NotAuthenticated
from protocol.session import SessionState, check_allowed, next_state

K32 = bytes(32)
SAMPLES: dict[type[msgspec.Struct], msgspec.Struct] = {
    f.Hello: f.Hello(id="r"),
    f.Register: f.Register(
        id="r",
        handle="alice",
        salt=bytes(16),
        opslimit=1,
        memlimit=8192,
        auth_key=K32,
        sign_pk=K32,
        box_pk=K32,
        wrapped_keys=bytes(104),
    ),
    f.Prelogin: f.Prelogin(id="r", handle="alice"),
    f.Login: f.Login(id="r", handle="alice", auth_key=K32),
    f.AuthRequest: f.AuthRequest(id="r", account_id="a", token="t", sig=bytes(64)),
    f.Logout: f.Logout(id="r"),
    f.DirectoryGet: f.DirectoryGet(id="r", account_ids=["a"]),
    f.CaseOpen: f.CaseOpen(id="r", topic="anxiety", language="en"),
    f.CaseList: f.CaseList(id="r"),
    f.CaseKeyDeposit: f.CaseKeyDeposit(
        id="r",
        case_id="c",
        epoch=1,
        commitment=K32,
        commitment_sig=bytes(64),
        seals=[f.KeySeal(account_id="a", sealed=bytes(80))],
    ),
    f.CaseKeys: f.CaseKeys(id="r", case_id="c"),
    f.MsgSend: f.MsgSend(
        id="r", case_id="c", epoch=1, client_msg_id="m", nonce=bytes(24), ciphertext=bytes(100)
    ),
    f.Sync: f.Sync(id="r", case_id="c"),
    f.Receipt: f.Receipt(id="r", case_id="c", kind="read", up_to_seq=1),
    f.Typing: f.Typing(id="r", case_id="c", active=True),
    f.CaseClose: f.CaseClose(id="r", case_id="c"),
    f.Ping: f.Ping(id="r"),
    f.PolicyGet: f.PolicyGet(id="r"),
    f.ConsentAccept: f.ConsentAccept(
        id="r", terms_version=1, policy_fingerprint=" ".join(["abcd"] * 10), sig=bytes(64)
    ),
    f.CaseCapsule: f.CaseCapsule(
        id="r",
        case_id="c",
        epoch=1,
        capsule=f.Capsule(
            policy_fingerprint=" ".join(["abcd"] * 10),
            subsets=[f.CapsuleLayer(officers=[0], sealed=bytes(130))],
        ),
    ),
    f.DisputeRequest: f.DisputeRequest(
        id="r",
        case_id="c",
        timestamp=1,
        policy_fingerprint=" ".join(["abcd"] * 10),
        reason_ct=[bytes(60)],
        sig=bytes(64),
    ),
    f.DisputeList: f.DisputeList(id="r"),
}

PRE_AUTH = {f.Hello, f.Register, f.Prelogin, f.Login, f.AuthRequest, f.Ping}
POST_AUTH = {
    f.Ping,
    f.Logout,
    f.DirectoryGet,
    f.CaseOpen,
    f.CaseList,
    f.CaseKeyDeposit,
    f.CaseKeys,
    f.MsgSend,
    f.Sync,
    f.Receipt,
    f.Typing,
    f.CaseClose,
    f.PolicyGet,
    f.ConsentAccept,
    f.CaseCapsule,
    f.DisputeRequest,
    f.DisputeList,
}


def test_samples_cover_every_client_frame() -> None:
    assert set(SAMPLES) == set(typing.get_args(f.ClientFrame))


def _tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
def test_unauthenticated(cls: type[msgspec.Struct]) -> None:
    frame = SAMPLES[cls]
    if cls in PRE_AUTH:
        check_allowed(SessionState.UNAUTHENTICATED, frame)
    else:
        with pytest.raises(NotAuthenticated) as info:
            check_allowed(SessionState.UNAUTHENTICATED, frame)
        assert info.value.message == f"{_tag(cls)} requires an authenticated session"


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
def test_authenticated(cls: type[msgspec.Struct]) -> None:
    frame = SAMPLES[cls]
    if cls in POST_AUTH:
        check_allowed(SessionState.AUTHENTICATED, frame)
    else:
        with pytest.raises(InvalidFrame) as info:
            check_allowed(SessionState.AUTHENTICATED, frame)
        assert info.value.message == f"{_tag(cls)} is not allowed in state authenticated"


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
def test_closing_accepts_nothing(cls: type[msgspec.Struct]) -> None:
    with pytest.raises(InvalidFrame) as info:
        check_allowed(SessionState.CLOSING, SAMPLES[cls])
    assert info.value.message == f"{_tag(cls)} is not allowed in state closing"


@pytest.mark.parametrize("state", list(SessionState))
def test_server_frames_and_foreign_objects_are_refused(state: SessionState) -> None:
    expected = NotAuthenticated if state is SessionState.UNAUTHENTICATED else InvalidFrame
    with pytest.raises(expected, match=r"^pong "):
        check_allowed(state, f.Pong(id="r"))
    with pytest.raises(expected, match=r"^object "):  # a non-struct is named by its class
        check_allowed(state, object())


def test_successful_auth_authenticates() -> None:
    auth = SAMPLES[f.AuthRequest]
    assert next_state(SessionState.UNAUTHENTICATED, auth, succeeded=True) is (
        SessionState.AUTHENTICATED
    )


def test_failed_auth_stays_unauthenticated() -> None:
    auth = SAMPLES[f.AuthRequest]
    assert next_state(SessionState.UNAUTHENTICATED, auth, succeeded=False) is (
        SessionState.UNAUTHENTICATED
    )


def test_logout_closes() -> None:
    logout = SAMPLES[f.Logout]
    assert next_state(SessionState.AUTHENTICATED, logout, succeeded=True) is SessionState.CLOSING
    assert next_state(SessionState.AUTHENTICATED, logout, succeeded=False) is (
        SessionState.AUTHENTICATED
    )


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
@pytest.mark.parametrize("state", list(SessionState))
@pytest.mark.parametrize("succeeded", [True, False])
def test_transition_table(cls: type[msgspec.Struct], state: SessionState, succeeded: bool) -> None:
    expected = state
    if succeeded and state is SessionState.UNAUTHENTICATED and cls is f.AuthRequest:
        expected = SessionState.AUTHENTICATED
    elif succeeded and cls is f.Logout:
        expected = SessionState.CLOSING
    assert next_state(state, SAMPLES[cls], succeeded=succeeded) is expected


def test_a_second_auth_does_not_change_state() -> None:
    auth = SAMPLES[f.AuthRequest]
    with pytest.raises(InvalidFrame):
        check_allowed(SessionState.AUTHENTICATED, auth)
    assert next_state(SessionState.AUTHENTICATED, auth, succeeded=True) is (
        SessionState.AUTHENTICATED
    )


def test_state_values() -> None:
    assert [s.value for s in SessionState] == ["unauthenticated", "authenticated", "closing"]
