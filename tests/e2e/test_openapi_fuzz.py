"""Schemathesis against the served OpenAPI document: no input makes the API answer 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Api


def test_no_generated_request_gets_a_server_error(api: Api) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(cli),
            "run",
            f"{api.env.stack.api_url}/v1/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "20261121",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "Server error" not in summary
