"""A call of a local stack's function that its role does not allow fails the test it ran in.

The local stack checks every AWS call a function makes against its execution role
(``reelay_local.local_iam``), and a refused call fails as it would in AWS. The autouse fixture
below also fails the test at teardown, so a refusal that the code absorbs (a retry, a logged
error, a message left to redeliver) is still seen: it would be a permission missing from
``template.yaml``. A test that is refused on purpose says so with
``@pytest.mark.expect_access_denied``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lambda_timeouts import fail_on_new

EXPECT_MARKER = "expect_access_denied"


def register_marker(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EXPECT_MARKER}: a function's call is refused on purpose")


@pytest.fixture(autouse=True)
def _unexpected_access_denials_fail_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from fail_on_new(
        request,
        EXPECT_MARKER,
        lambda stack: [f"{function} may not {action} on {resource}" for function, action, resource in stack.iam.denied],
        "calls refused by the functions' roles",
    )
