"""A handler of the local stack that ran past its timeout fails the test it ran in.

In AWS such an invocation fails (``Sandbox.Timedout``); locally it fails the same way, and the
autouse fixture below also fails the test at teardown, so a timeout hidden by a retry or a
redelivery is still seen. A test that times a handler out on purpose says so with
``@pytest.mark.expect_lambda_timeouts``. The fixture watches the stack running in the process
(the integration and e2e fixtures start one per class or module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from reelay_local import LocalStack

EXPECT_MARKER = "expect_lambda_timeouts"


def register_marker(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EXPECT_MARKER}: the test times out a handler on purpose")


def fail_on_new(
    request: pytest.FixtureRequest, marker: str, seen: Callable[[LocalStack], Sequence[str]], what: str
) -> Iterator[None]:
    """Fail the test at teardown if ``seen(stack)`` (what went wrong, one line each) grew during
    it, unless the test carries ``marker``; the body of a watching fixture (``yield from``)."""
    stack = LocalStack.running()
    before = len(seen(stack)) if stack is not None else 0
    yield
    if stack is None or LocalStack.running() is not stack or request.node.get_closest_marker(marker):
        return
    new = seen(stack)[before:]
    if new:
        pytest.fail(f"{what} during the test: {'; '.join(sorted(set(new)))} (mark it {marker} if expected)")


@pytest.fixture(autouse=True)
def _unexpected_lambda_timeouts_fail_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from fail_on_new(
        request,
        EXPECT_MARKER,
        lambda stack: [f"{t.function} after {t.timeout:g}s" for t in stack.timeouts],
        "handlers timed out",
    )
