"""Give up on a test whose outside service is missing: skip it on a laptop, fail it in CI.

Tests run against real services (PostgreSQL, Redis, Chromium, the built web bundle),
never mocks. When one is not reachable the tests that need it are skipped with the
reason; ``CHAT_REQUIRE_SERVICES=1`` (CI) turns that skip into a failure, so a broken
environment cannot silently skip half of the suite.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["require_service"]


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the current test because ``name`` is unusable, or fail it when
    ``CHAT_REQUIRE_SERVICES=1``."""
    message = f"{name} not reachable: {reason}"
    if os.environ.get("CHAT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (CHAT_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)
