"""Fixtures for the end-to-end tests."""

from __future__ import annotations

from tests.haproxy import haproxy

__all__ = ["haproxy"]
