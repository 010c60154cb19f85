"""A handler's cold start imports only what its first request needs.

Each function's ``app`` is imported in a fresh interpreter with its Lambda environment (as
``benchmarks/cold_start.py`` gives it: template.yaml's variables, tracing on), then the wiring
of its first request (the bench's ``WIRING``) is built; the modules loaded by then must not
include the heavy ones that function has no use for. The timing itself is the bench's (too
noisy for a test); this keeps what made it slow from coming back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import cache
from types import ModuleType

import pytest

from tests.template_support import REPO

# Powertools' parser models (built by its batch module for type hints when pydantic is loaded
# first), the OpenAPI document's models (Powertools' Swagger UI), what X-Ray's patch_all imports.
NEVER = (
    "aws_lambda_powertools.utilities.parser.models",
    "aws_lambda_powertools.event_handler.openapi.models",
    "sqlite3",
)
# Only the HTTP functions use Powertools' resolver; only the API has request bodies and routes.
RESOLVER = "aws_lambda_powertools.event_handler"
HTTP_FUNCTIONS = {"api", "callback"}
API_ONLY = ("reelay.api", "reelay.openai_api", "reelay.variants", "reelay.webhook_endpoints_api", "reelay.contract")
# Functions whose first request makes no HTTP call import no HTTP client library (the API's
# provider adapters name httpx's types, but it makes no connection).
NO_HTTP = {"authorizer": ("httpx", "httpcore"), "batch": ("httpx", "httpcore"), "api": ("httpcore",)}


@cache
def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cold_start_bench", REPO / "benchmarks" / "cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _environments() -> dict[str, dict[str, str]]:
    environments: dict[str, dict[str, str]] = _bench().template_environments()
    return environments


def _modules_after_first_wiring(name: str) -> set[str]:
    bench = _bench()
    code_dir = REPO / "functions" / name
    env = {
        **bench.LAMBDA_ENV,
        **_environments()[name],
        "AWS_LAMBDA_FUNCTION_NAME": f"reelay-{name}",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "PATH": os.environ.get("PATH", ""),
    }
    code = f"import app\n{bench.WIRING[name]}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    probe = subprocess.run(
        [sys.executable, "-c", bench.PROBE, code, str(code_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return set(json.loads(probe.stdout.strip().splitlines()[-2]))


def test_every_function_has_the_wiring_of_its_first_request() -> None:
    assert set(_bench().WIRING) == set(_bench().FUNCTIONS) == set(_environments())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "functions").iterdir() if (p / "app.py").exists()))
def test_a_cold_start_imports_none_of_what_its_first_request_does_not_need(name: str) -> None:
    # Given the function's Lambda environment, when its handler is imported and its first
    # request's services are built
    loaded = _modules_after_first_wiring(name)
    # Then none of the heavy modules it has no use for is loaded
    unwanted = [*NEVER, *NO_HTTP.get(name, ())]
    if name not in HTTP_FUNCTIONS:
        unwanted.append(RESOLVER)
    if name != "api":
        unwanted += API_ONLY
    assert "app" in loaded and "reelay.bootstrap" in loaded
    assert sorted(m for m in unwanted if m in loaded) == []
