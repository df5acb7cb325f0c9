"""Errors: stable wire codes, close codes, and the class hierarchy."""

from __future__ import annotations

import pytest

from protocol import errors as e

# The wire contract, written out so that any change to a code breaks this test
# (and must be reflected in docs/PROTOCOL.md).
EXPECTED_CODES = {
    e.MalformedFrame: "malformed",
    e.UnknownType: "unknown_type",
    e.InvalidFrame: "invalid",
    e.UnsupportedVersion: "unsupported_version",
    e.FrameTooBig: "too_big",
    e.NotAuthenticated: "not_authenticated",
    e.AuthFailed: "auth_failed",
    e.Forbidden: "forbidden",
    e.NotFound: "not_found",
    e.Conflict: "conflict",
    e.Duplicate: "duplicate",
    e.RateLimited: "rate_limited",
    e.LimitExceeded: "limit_exceeded",
    e.ConsentRequired: "consent_required",
    e.Unavailable: "unavailable",
    e.Busy: "busy",
    e.Replayed: "replayed",
}


@pytest.mark.parametrize(("cls", "code"), EXPECTED_CODES.items(), ids=EXPECTED_CODES.values())
def test_each_remote_error_has_its_stable_code(cls: type[e.RemoteError], code: str) -> None:
    assert issubclass(cls, e.RemoteError)
    assert cls.code == code
    assert cls.code.value == code
    err = cls("details")
    assert err.code == code
    assert err.message == "details" == str(err)


def test_default_message_is_the_code_in_words() -> None:
    assert e.NotAuthenticated().message == "not authenticated"
    assert e.RateLimited().message == "rate limited"
    assert e.ProtocolError().message == "internal"


def test_the_code_set_is_exactly_the_documented_one() -> None:
    assert {c.value for c in e.ErrorCode} == set(EXPECTED_CODES.values()) | {"internal"}


def test_every_remote_error_class_is_listed() -> None:
    remote = {
        obj
        for name in e.__all__
        if isinstance(obj := getattr(e, name), type)
        and issubclass(obj, e.RemoteError)
        and obj is not e.RemoteError
    }
    assert remote == set(EXPECTED_CODES)


def test_crypto_error_is_local_never_sent() -> None:
    assert issubclass(e.CryptoError, e.ProtocolError)
    assert not issubclass(e.CryptoError, e.RemoteError)
    assert e.CryptoError("bad mac").message == "bad mac"
    assert e.ProtocolError.code is e.ErrorCode.INTERNAL


def test_close_codes() -> None:
    assert {c.name: int(c) for c in e.CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "INVALID_DATA": 1007,
        "POLICY": 1008,
        "TOO_BIG": 1009,
        "INTERNAL": 1011,
        "TRY_AGAIN": 1013,
        "AUTH_TIMEOUT": 4001,
        "SESSION_EXPIRED": 4002,
        "SESSION_LIMIT": 4003,
        "SIGNED_OUT": 4004,
        "SLOW_CONSUMER": 4008,
        "REPLACED": 4009,
    }


def test_resumable_close_codes() -> None:
    assert {1001, 1011, 1013, 4008} == e.RESUMABLE_CLOSE_CODES
    assert "RESUMABLE_CLOSE_CODES" in e.__all__
    assert e.CloseCode.REPLACED not in e.RESUMABLE_CLOSE_CODES
    assert e.CloseCode.NORMAL not in e.RESUMABLE_CLOSE_CODES


@pytest.mark.parametrize(("cls", "code"), EXPECTED_CODES.items(), ids=EXPECTED_CODES.values())
def test_a_received_code_becomes_its_class(cls: type[e.RemoteError], code: str) -> None:
    assert e.ERROR_CLASSES[code] is cls
    err = e.remote_error(code, "case is closed")
    assert type(err) is cls and err.message == "case is closed"
    assert e.remote_error(code).message == code.replace("_", " ")


def test_an_unknown_code_is_a_plain_remote_error() -> None:
    err = e.remote_error("from_the_future", "")
    assert type(err) is e.RemoteError and err.message == "from the future"
    assert set(e.ERROR_CLASSES) == set(EXPECTED_CODES.values())  # "internal" is never sent


def test_retry_after_travels_with_the_error() -> None:
    assert e.Busy("wait", retry_after_ms=250).retry_after_ms == 250
    assert e.RateLimited().retry_after_ms is None
    assert e.remote_error("busy", "", 1200).retry_after_ms == 1200


def test_session_expired_is_not_resumed_without_a_new_login() -> None:
    assert e.CloseCode.SESSION_EXPIRED not in e.RESUMABLE_CLOSE_CODES
    assert e.CloseCode.SIGNED_OUT not in e.RESUMABLE_CLOSE_CODES


def test_auth_timeout_is_not_resumable() -> None:
    assert e.CloseCode.AUTH_TIMEOUT not in e.RESUMABLE_CLOSE_CODES
