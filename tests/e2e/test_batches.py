"""Batch manifests end to end: S3 put → EventBridge → batch queue → tasks → simulator → report.

The stack delivers every EventBridge event three times (``event_copies=3``: S3 and EventBridge
deliver at least once), so every test here also shows that duplicate deliveries change nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from typer.testing import CliRunner

from reelay_cli.main import create_app
from tests.e2e.conftest import E2E_ENV, Api, running_api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    # The recount check every 2 s (not 300): it runs while batches run, and drains after they end.
    with running_api({**E2E_ENV, "REELAY_BATCH_CHECK_SECONDS": "2"}, event_copies=3) as client:
        yield client


def _s3(api: Api) -> Any:
    return boto3.client("s3", endpoint_url=api.env.stack.aws_endpoint)


def _put(api: Api, name: str, lines: list[str]) -> str:
    body = ("\n".join(lines) + "\n").encode()
    _s3(api).put_object(Bucket=api.env.stack.bucket, Key=f"inbox/{name}.jsonl", Body=body)
    return hashlib.md5(body).hexdigest()


def _report(api: Api, name: str, *, timeout: float = 120) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s3, deadline = _s3(api), time.monotonic() + timeout
    while True:
        try:
            summary = json.loads(
                s3.get_object(Bucket=api.env.stack.bucket, Key=f"reports/{name}.summary.json")["Body"].read()
            )
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise AssertionError(f"no report for {name} after {timeout} s") from None
            time.sleep(0.5)
            continue
        body = s3.get_object(Bucket=api.env.stack.bucket, Key=f"reports/{name}.jsonl")["Body"].read().decode()
        return [json.loads(line) for line in body.splitlines()], summary


def _tasks_of(api: Api, tag: str) -> list[dict[str, Any]]:
    return list(api.env.sim.counters()["tags"].get(tag, []))


def _line(n: int, tag: str, **extra: Any) -> str:
    body = {"id": f"shot-{n}", "provider": "generate_task", "prompt": f"shot {n} [tag:{tag}-{n}]", "duration": 4}
    return json.dumps(body | extra)


def test_the_same_manifest_delivered_three_times_gives_the_tasks_of_one_delivery(api: Api) -> None:
    # Given a manifest whose event arrives three times, put again with the same content twice more
    lines = [_line(n, "thrice") for n in range(1, 9)]
    lines[5] = json.dumps({"id": "shot-6", "provider": "sorahk", "prompt": "shot 6 [tag:thrice-6]"})
    for _ in range(3):
        _put(api, "thrice", lines)
    # When it has run
    report, summary = _report(api, "thrice")
    api.env.stack.drain(timeout=60, executions=True)
    # Then one provider task per line (8 in all, not 8 x 9), each line succeeded with its output in S3
    counters = api.env.sim.counters()["tags"]
    assert {n: len(counters.get(f"thrice-{n}", [])) for n in range(1, 9)} == {n: 1 for n in range(1, 9)}
    assert [r["line"] for r in report] == list(range(1, 9))
    assert {r["status"] for r in report} == {"succeeded"} and summary["by_status"] == {"succeeded": 8}
    assert [r["id"] for r in report] == [f"shot-{n}" for n in range(1, 9)]
    for row in report:
        task = api.task(row["task_id"])
        assert task["status"] == "succeeded" and [o["s3_uri"] for o in task["outputs"]] == row["outputs"]
        assert api.objects(row["task_id"]), row
    # And the batch says the same
    batch = api.http.get(f"/v1/batches/{summary['batch_id']}").json()
    assert (batch["status"], batch["tasks"], batch["succeeded"], batch["running"]) == ("completed", 8, 8, 0)
    assert summary["cost_cents"] == batch["cost_cents"] > 0  # sorahk reports its cost


def test_a_manifest_with_a_quarter_of_its_lines_invalid_runs_every_valid_line_and_reports_each_invalid_one(
    api: Api,
) -> None:
    # Given 12 lines, 3 of them invalid for different reasons (none may reach a provider)
    lines = [_line(n, "quarter") for n in range(1, 13)]
    lines[2] = _line(3, "quarter", duration=25)  # generate_task does 4, 8 or 12 s
    lines[6] = '{"provider": "generate_task", "prompt": "shot 7 [tag:quarter-7]", '  # cut off
    lines[10] = _line(11, "quarter", provider="nope")
    _put(api, "quarter", lines)
    report, summary = _report(api, "quarter")
    # Then every valid line's task succeeded, and no invalid line made a provider task
    invalid = {3, 7, 11}
    assert [r["line"] for r in report] == list(range(1, 13))
    for row in report:
        if row["line"] in invalid:
            assert row["status"] == "invalid" and "task_id" not in row
            assert not _tasks_of(api, f"quarter-{row['line']}")
        else:
            assert row["status"] == "succeeded" and len(_tasks_of(api, f"quarter-{row['line']}")) == 1
    # And each invalid line carries its reason
    reasons = {r["line"]: r["error"] for r in report if r["line"] in invalid}
    assert reasons[3]["code"] == "VALIDATION_FAILED" and "duration" in reasons[3]["message"]
    assert reasons[7]["code"] == "MALFORMED_JSON"
    assert reasons[11]["code"] == "VALIDATION_FAILED" and "provider" in reasons[11]["message"]
    assert summary["by_status"] == {"succeeded": 9, "invalid": 3}
    assert summary["by_code"] == {"VALIDATION_FAILED": 2, "MALFORMED_JSON": 1}


def test_reelay_batch_uploads_a_file_and_follows_it_to_its_report(api: Api, tmp_path: Path) -> None:
    manifest = tmp_path / "from-cli.jsonl"
    manifest.write_text("\n".join([_line(1, "cli"), _line(2, "cli"), json.dumps({"prompt": "no provider"})]) + "\n")
    runner = CliRunner()
    result = runner.invoke(
        create_app(), ["--api-url", api.env.stack.api_url, "batch", str(manifest), "--json", "--interval", "0.2"]
    )
    # Then it exits 1 (a line was invalid) after the batch completed, printing the final BatchView
    assert result.exit_code == 1, result.output
    view = json.loads(result.stdout)
    assert (view["status"], view["tasks"], view["succeeded"], view["invalid"]) == ("completed", 2, 2, 1)
    assert view["report"].endswith("/reports/from-cli.jsonl")
    report, _ = _report(api, "from-cli")
    assert [r["status"] for r in report] == ["succeeded", "succeeded", "invalid"]
    # And a file with other content under the same name is another batch
    manifest.write_text(_line(3, "cli") + "\n")
    again = runner.invoke(create_app(), ["--api-url", api.env.stack.api_url, "batch", str(manifest), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["id"] != view["id"]


def test_a_manifest_put_whose_bytes_are_not_its_ticket_md5_is_refused_and_starts_nothing(api: Api) -> None:
    # Given a manifest ticket: its MD5 signed into the PUT
    body = (_line(1, "md5") + "\n").encode()
    ticket = api.http.post(
        "/v1/batches", json={"name": "md5-checked", "bytes": len(body), "md5": hashlib.md5(body).hexdigest()}
    )
    assert ticket.status_code == 201, ticket.text
    upload = ticket.json()
    # When other bytes of the same length are PUT, S3 refuses them (moto alone would store them)
    other = body.replace(b"shot", b"shut")
    assert len(other) == len(body) and other != body
    refused = httpx.put(upload["url"], content=other, headers=upload["headers"])
    assert refused.status_code == 400 and "<Code>BadDigest</Code>" in refused.text, refused.text
    # Then nothing is in the inbox and the batch still awaits its manifest
    listed = _s3(api).list_objects_v2(Bucket=api.env.stack.bucket, Prefix=upload["key"])
    assert listed.get("KeyCount", 0) == 0
    assert api.http.get(f"/v1/batches/{upload['batch_id']}").json()["status"] == "awaiting"
    # And the bytes it was made for are taken and run
    assert httpx.put(upload["url"], content=body, headers=upload["headers"]).status_code == 200
    report, _ = _report(api, "md5-checked")
    assert [r["status"] for r in report] == ["succeeded"]
