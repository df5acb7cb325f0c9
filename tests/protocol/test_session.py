"""The connection state machine: every client frame in every state, every event in
every state, and the close decisions."""

from __future__ import annotations

import typing

import msgspec
import pytest

from protocol import frames as f
from protocol.errors import (
    RESUMABLE_CLOSE_CODES,
    CloseCode,
    FrameTooBig,
    InvalidFrame,
    MalformedFrame,
    NotAuthenticated,
    UnknownType,
    UnsupportedVersion,
)
from protocol.limits import MAX_MALFORMED_IN_A_ROW
from protocol.session import (
    POST_AUTH_FRAMES,
    PRE_AUTH_FRAMES,
    Close,
    SessionMachine,
    SessionState,
    TransitionError,
)

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
        box_sig=bytes(64),
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
        escrow="none",
        seals=[f.KeySeal(account_id="a", sealed=bytes(80))],
    ),
    f.CaseKeys: f.CaseKeys(id="r", case_id="c"),
    f.CaseKeyShare: f.CaseKeyShare(
        id="r", case_id="c", epoch=1, seal=f.KeySeal(account_id="a", sealed=bytes(80))
    ),
    f.MsgSend: f.MsgSend(
        id="r", case_id="c", epoch=1, client_msg_id="m", nonce=bytes(24), ciphertext=bytes(100)
    ),
    f.Sync: f.Sync(id="r", case_id="c"),
    f.Receipt: f.Receipt(
        id="r", case_id="c", kind="read", up_to_seq=1, chain_hash=K32, sig=bytes(64)
    ),
    f.AccountAttest: f.AccountAttest(id="r", box_sig=bytes(64)),
    f.PrefsGet: f.PrefsGet(id="r"),
    f.PrefsPut: f.PrefsPut(id="r", blob=bytes(41), version=0),
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
    f.CaseKeyShare,
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
    f.AccountAttest,
    f.PrefsGet,
    f.PrefsPut,
}
NONCE = bytes(range(32))
PRE_AUTH_STATES = (SessionState.UNAUTHENTICATED, SessionState.CHALLENGED)


def machine_in(state: SessionState) -> SessionMachine:
    """A machine driven to ``state`` through legal events only."""
    machine = SessionMachine()
    if state in (SessionState.CHALLENGED, SessionState.AUTHENTICATED):
        machine.challenge_issued(NONCE)
    if state is SessionState.AUTHENTICATED:
        machine.authenticated()
    if state is SessionState.CLOSING:
        machine.close()
    assert machine.state is state
    return machine


def _tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


def test_samples_cover_every_client_frame() -> None:
    assert set(SAMPLES) == set(typing.get_args(f.ClientFrame))


def test_published_tables() -> None:
    assert PRE_AUTH_FRAMES == PRE_AUTH and POST_AUTH_FRAMES == POST_AUTH


def test_a_new_machine() -> None:
    machine = SessionMachine()
    assert machine.state is SessionState.UNAUTHENTICATED
    assert machine.challenge is None and machine.authenticating


# -- check: each client frame type in each state ------------------------------------


#: Before authentication, one frame of the pre-auth set is refused by the sub-state.
SUB_STATE_RULE = {
    SessionState.UNAUTHENTICATED: (f.AuthRequest, "send hello first to get a challenge"),
    SessionState.CHALLENGED: (f.Hello, "hello was already sent on this connection"),
}


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
@pytest.mark.parametrize("state", PRE_AUTH_STATES)
def test_before_authentication(state: SessionState, cls: type[msgspec.Struct]) -> None:
    machine = machine_in(state)
    frame = SAMPLES[cls]
    refused, why = SUB_STATE_RULE[state]
    if cls is refused:
        with pytest.raises(InvalidFrame) as info:
            machine.check(frame)
        assert info.value.message == why
    elif cls in PRE_AUTH:
        machine.check(frame)
    else:
        with pytest.raises(NotAuthenticated) as info:
            machine.check(frame)
        assert info.value.message == f"{_tag(cls)} requires an authenticated session"
    assert machine.state is state  # checking changes no state
    assert machine.challenge == (NONCE if state is SessionState.CHALLENGED else None)


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
def test_authenticated(cls: type[msgspec.Struct]) -> None:
    machine = machine_in(SessionState.AUTHENTICATED)
    frame = SAMPLES[cls]
    if cls in POST_AUTH:
        machine.check(frame)
    else:
        with pytest.raises(InvalidFrame) as info:
            machine.check(frame)
        assert info.value.message == f"{_tag(cls)} is not allowed in state authenticated"
    assert machine.state is SessionState.AUTHENTICATED


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
def test_closing_accepts_nothing(cls: type[msgspec.Struct]) -> None:
    machine = machine_in(SessionState.CLOSING)
    with pytest.raises(InvalidFrame) as info:
        machine.check(SAMPLES[cls])
    assert info.value.message == f"{_tag(cls)} is not allowed in state closing"


@pytest.mark.parametrize("state", list(SessionState))
def test_server_frames_and_foreign_objects_are_refused(state: SessionState) -> None:
    machine = machine_in(state)
    expected = NotAuthenticated if state in PRE_AUTH_STATES else InvalidFrame
    with pytest.raises(expected, match=r"^pong "):
        machine.check(f.Pong(id="r"))
    with pytest.raises(expected, match=r"^object "):  # a non-struct is named by its class
        machine.check(object())


# -- the auth sub-states ----------------------------------------------------------


def test_hello_then_auth_authenticates_and_spends_the_nonce() -> None:
    machine = SessionMachine()
    machine.check(SAMPLES[f.Hello])
    machine.challenge_issued(NONCE)
    assert machine.state is SessionState.CHALLENGED and machine.challenge == NONCE
    assert machine.authenticating
    machine.check(SAMPLES[f.AuthRequest])
    machine.authenticated()
    assert machine.state is SessionState.AUTHENTICATED and machine.challenge is None
    assert not machine.authenticating


def test_a_failed_auth_keeps_the_challenge_for_a_retry() -> None:
    # A refused request reports no event, so nothing changes: the same nonce stays.
    machine = machine_in(SessionState.CHALLENGED)
    machine.check(SAMPLES[f.AuthRequest])
    assert machine.state is SessionState.CHALLENGED and machine.challenge == NONCE
    machine.check(SAMPLES[f.AuthRequest])
    machine.authenticated()
    assert machine.state is SessionState.AUTHENTICATED


@pytest.mark.parametrize("state", list(SessionState))
def test_challenge_issued_only_once_and_only_before_auth(state: SessionState) -> None:
    machine = machine_in(state)
    if state is SessionState.UNAUTHENTICATED:
        machine.challenge_issued(NONCE)
        assert machine.state is SessionState.CHALLENGED
    else:
        with pytest.raises(TransitionError, match=f"in state {state.value}$"):
            machine.challenge_issued(b"other")
        assert machine.state is state


@pytest.mark.parametrize("state", list(SessionState))
def test_authenticated_only_with_a_pending_challenge(state: SessionState) -> None:
    machine = machine_in(state)
    if state is SessionState.CHALLENGED:
        machine.authenticated()
        assert machine.state is SessionState.AUTHENTICATED
    else:
        with pytest.raises(TransitionError, match=f"in state {state.value}$"):
            machine.authenticated()
        assert machine.state is state


# -- requests that succeeded -------------------------------------------------------


@pytest.mark.parametrize("cls", SAMPLES, ids=_tag)
@pytest.mark.parametrize("state", list(SessionState))
def test_handled(cls: type[msgspec.Struct], state: SessionState) -> None:
    machine = machine_in(state)
    decision = machine.handled(SAMPLES[cls])
    if cls is f.Logout:
        assert decision == Close(CloseCode.NORMAL, "logged out")
        assert machine.state is SessionState.CLOSING
    else:
        assert decision is None and machine.state is state


# -- frames that do not decode ---------------------------------------------------------


def test_a_frame_too_big_closes_1009_at_once() -> None:
    machine = machine_in(SessionState.AUTHENTICATED)
    assert machine.undecodable(FrameTooBig()) == Close(CloseCode.TOO_BIG, "frame too big")
    assert machine.state is SessionState.CLOSING


@pytest.mark.parametrize("state", [SessionState.UNAUTHENTICATED, SessionState.AUTHENTICATED])
def test_another_protocol_version_closes_1008(state: SessionState) -> None:
    machine = machine_in(state)
    decision = machine.undecodable(UnsupportedVersion())
    assert decision == Close(CloseCode.POLICY, "unsupported protocol version")
    assert machine.state is SessionState.CLOSING


def test_malformed_frames_in_a_row_close_1007() -> None:
    machine = SessionMachine()
    for _ in range(MAX_MALFORMED_IN_A_ROW - 1):
        assert machine.undecodable(MalformedFrame()) is None
    assert machine.state is SessionState.UNAUTHENTICATED
    decision = machine.undecodable(MalformedFrame())
    assert decision == Close(CloseCode.INVALID_DATA, "too many malformed frames")
    assert machine.state is SessionState.CLOSING


def test_another_decode_error_breaks_the_malformed_run() -> None:
    machine = SessionMachine()
    for _ in range(3):
        assert machine.undecodable(MalformedFrame()) is None
        assert machine.undecodable(MalformedFrame()) is None
        assert machine.undecodable(UnknownType()) is None
    assert machine.state is SessionState.UNAUTHENTICATED


def test_a_decoded_frame_breaks_the_malformed_run_even_if_refused() -> None:
    machine = SessionMachine()
    for _ in range(3):
        assert machine.undecodable(MalformedFrame()) is None
        assert machine.undecodable(MalformedFrame()) is None
        with pytest.raises(NotAuthenticated):
            machine.check(SAMPLES[f.Sync])
    assert machine.state is SessionState.UNAUTHENTICATED


# -- the auth timer and closing -------------------------------------------------------


@pytest.mark.parametrize("state", list(SessionState))
def test_auth_deadline(state: SessionState) -> None:
    machine = machine_in(state)
    decision = machine.auth_deadline()
    if state in PRE_AUTH_STATES:
        assert decision == Close(CloseCode.AUTH_TIMEOUT, "authentication timeout")
        assert machine.state is SessionState.CLOSING and machine.challenge is None
    else:
        assert decision is None and machine.state is state


@pytest.mark.parametrize("state", list(SessionState))
def test_close_from_any_state_is_final(state: SessionState) -> None:
    machine = machine_in(state)
    machine.close()
    assert machine.state is SessionState.CLOSING and machine.challenge is None
    assert not machine.authenticating
    machine.close()
    assert machine.state is SessionState.CLOSING
    assert machine.auth_deadline() is None


@pytest.mark.parametrize("code", list(CloseCode))
def test_close_decisions_know_whether_they_are_resumable(code: CloseCode) -> None:
    assert Close(code, "x").resumable is (code in RESUMABLE_CLOSE_CODES)


def test_auth_timeout_is_not_resumable() -> None:
    # A client that could not authenticate in time must start afresh, not loop.
    assert not Close(CloseCode.AUTH_TIMEOUT, "x").resumable


def test_state_values() -> None:
    assert [s.value for s in SessionState] == [
        "unauthenticated",
        "challenged",
        "authenticated",
        "closing",
    ]
