"""The dispatch tables match the state machine: every frame legal in a state has a use
case for that kind of caller, and nothing else does."""

from __future__ import annotations

from chat_server.router import GUEST_ROUTES, ROUTES
from protocol.session import POST_AUTH_FRAMES, PRE_AUTH_FRAMES


def test_guest_routes_are_exactly_the_pre_auth_frames() -> None:
    assert set(GUEST_ROUTES) == PRE_AUTH_FRAMES


def test_routes_are_exactly_the_post_auth_frames() -> None:
    assert set(ROUTES) == POST_AUTH_FRAMES
