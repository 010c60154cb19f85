"""`reelay dev --client-auth jwt`: the local stack built with ClientAuth=JWT enforces it as API Gateway does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from reelay_local import DevEnvironment
from tests.template_support import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[DevEnvironment]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REELAY_LOG_LEVEL", "WARNING")
        with DevEnvironment(REPO, client_auth="jwt") as env:
            yield env


def test_the_v1_routes_want_a_local_jwt_and_the_callbacks_do_not(stack: DevEnvironment) -> None:
    with httpx.Client(base_url=stack.stack.api_url, timeout=30) as http:
        token = http.post("/_reelay/token", json={"sub": "alice"}).json()["token"]

        anonymous = http.get("/v1/providers")
        forged = http.get("/v1/providers", headers={"Authorization": "Bearer " + token[:-4] + "AAAA"})
        allowed = http.get("/v1/providers", headers={"Authorization": f"Bearer {token}"})
        callback = http.post("/callbacks/generate_task/tsk_x?t=nope", json={})

    assert (anonymous.status_code, anonymous.json()) == (401, {"message": "Unauthorized"})
    assert forged.status_code == 401
    assert allowed.status_code == 200 and allowed.json()["providers"]
    assert "error" in callback.json()  # the callback handler answered (its own token check), not the authorizer


def test_the_template_was_built_for_the_local_issuer(stack: DevEnvironment) -> None:
    assert stack.jwt_issuer is not None
    routes = {(r.method, r.path): r for r in stack.stack._gateway.routes}  # type: ignore[union-attr]

    assert routes[("GET", "/v1/tasks")].authorizer is not None
    assert routes[("GET", "/v1/tasks")].authorizer.issuer == stack.jwt_issuer.url  # type: ignore[union-attr]
    assert all(r.authorizer is None for (_, path), r in routes.items() if path.startswith("/callbacks/"))
