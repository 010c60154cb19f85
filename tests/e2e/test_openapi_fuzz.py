"""Schemathesis against the served OpenAPI document, with every check.

Not only "no server error": responses must match their declared schemas and statuses, every
schema-valid request must be accepted and every schema-invalid one refused. The committed
``schemathesis.toml`` says which check is off, and why (API Gateway's own behaviour).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Api
from tests.template_support import REPO


# Schemathesis runs in a subprocess with its own 600 s limit; more than pytest's default 300 s
# on a loaded 2-core machine (≈350 s measured with 11 operations).
@pytest.mark.timeout(660)
def test_every_check_passes_on_every_generated_request(api: Api) -> None:
    # Given a succeeded video a remix can start from (schemathesis.toml names it for the remix route)
    remixable = api.submit_and_wait({"provider": "openai_videos", "prompt": "a remixable video", "duration": 10})
    assert remixable["status"] == "succeeded", remixable
    cli = Path(sys.executable).with_name("schemathesis")
    started = time.monotonic()
    run = subprocess.run(
        [
            str(cli),
            "--config-file",
            str(REPO / "schemathesis.toml"),
            "run",
            f"{api.env.stack.api_url}/v1/openapi.json",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--seed",
            "20261201",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
        env=os.environ | {"REELAY_FUZZ_REMIX_TASK_ID": remixable["id"]},
    )
    elapsed = time.monotonic() - started
    summary = run.stdout[-6000:]
    print(summary, f"\n(schemathesis took {elapsed:.0f} s)")
    # Then every generated case passed every check, in every phase, and there were plenty
    assert run.returncode == 0, summary
    assert "No issues found" in summary, summary
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 1000, summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
