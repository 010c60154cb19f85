"""Integration fixtures: a handler timeout fails the test (see ``tests.lambda_timeouts``)."""

from __future__ import annotations

import pytest

from tests.lambda_timeouts import _unexpected_lambda_timeouts_fail_the_test, register_marker

__all__ = ["_unexpected_lambda_timeouts_fail_the_test"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
