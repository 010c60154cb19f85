"""Integration fixtures: a handler timeout, or a call a function's role refuses, fails the test
(see ``tests.lambda_timeouts`` and ``tests.access_denials``)."""

from __future__ import annotations

import pytest

from tests import access_denials
from tests.access_denials import _unexpected_access_denials_fail_the_test
from tests.lambda_timeouts import _unexpected_lambda_timeouts_fail_the_test, register_marker

__all__ = ["_unexpected_access_denials_fail_the_test", "_unexpected_lambda_timeouts_fail_the_test"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
    access_denials.register_marker(config)
