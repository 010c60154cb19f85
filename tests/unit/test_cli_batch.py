"""``reelay batch FILE`` against a fake API: upload through the presigned PUT, then follow to the end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from reelay.contract import BatchView
from reelay_cli.batches import eta_seconds, manifest_name
from tests.unit.test_cli import FakeApi, error, reelay

BATCH_ID = "bat_" + "ab" * 14
PUT_URL = "http://127.0.0.1:4566/results/inbox/shots.jsonl?X-Amz-Signature=deadbeef"


def view(status: str = "running", **fields: Any) -> dict[str, Any]:
    return {
        "id": BATCH_ID,
        "status": status,
        "manifest": "s3://results/inbox/shots.jsonl",
        "name": "shots",
        "created_at": "2026-12-01T00:00:00+00:00",
        "updated_at": "2026-12-01T00:01:00+00:00",
        "split_done": True,
        "lines": 3,
        "tasks": 2,
        "invalid": 1,
        "succeeded": 0,
        "failed": 0,
        "running": 2,
        "cost_cents": 0,
        "by_code": {"VALIDATION_FAILED": 1},
        **fields,
    }


def ticket(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "batch_id": BATCH_ID,
        "key": f"inbox/{body['name']}.jsonl",
        "report_key": f"reports/{body['name']}.jsonl",
        "url": PUT_URL,
        "method": "PUT",
        "headers": {"Content-Type": "application/x-ndjson", "Content-Length": str(body["bytes"]), "Content-MD5": "x"},
        "expires_at": "2026-12-01T00:15:00+00:00",
    }


def _api(*views: httpx.Response) -> FakeApi:
    return (
        FakeApi()
        .on("POST", "/v1/batches", lambda r: httpx.Response(201, json=ticket(json.loads(r.content))))
        .on("PUT", "/results/inbox/shots.jsonl", httpx.Response(200, headers={"ETag": '"e"'}))
        .on("GET", f"/v1/batches/{BATCH_ID}", *views)
    )


def test_batch_uploads_the_file_with_its_md5_and_follows_until_completed(tmp_path: Path) -> None:
    manifest = tmp_path / "shots.jsonl"
    manifest.write_bytes(
        b'{"provider": "generate_task", "prompt": "a"}\n{"provider": "generate_task", "prompt": "b"}\n'
    )
    done = view("completed", succeeded=2, running=0, report="s3://results/reports/shots.jsonl")
    api = _api(
        error(404, "NOT_FOUND", "batch not found"),  # the manifest's event is on its way
        httpx.Response(200, json=view()),
        httpx.Response(200, json=done),
    )
    run = reelay(api, "batch", str(manifest), "--json")
    # Then the upload named the file, its size and MD5, and went to the presigned URL with its headers only
    (create,) = api.sent("POST", "/v1/batches")
    assert json.loads(create.content) == {
        "name": "shots",
        "bytes": manifest.stat().st_size,
        "md5": hashlib.md5(manifest.read_bytes()).hexdigest(),
    }
    (put,) = api.sent("PUT", "/results/inbox/shots.jsonl")
    assert put.content == manifest.read_bytes() and put.headers["Content-MD5"] == "x"
    assert "authorization" not in put.headers
    # And it followed through the 404 to the end: exit 1, since a line was invalid
    assert len(api.sent("GET", f"/v1/batches/{BATCH_ID}")) == 3
    assert run.code == 1 and BatchView.model_validate_json(run.out).status == "completed"


def test_batch_exits_0_when_every_line_succeeded_and_prints_plain_lines_off_a_terminal(tmp_path: Path) -> None:
    manifest = tmp_path / "shots.jsonl"
    manifest.write_text('{"provider": "generate_task", "prompt": "a"}\n')
    api = _api(httpx.Response(200, json=view("completed", tasks=1, invalid=0, succeeded=1, running=0, by_code={})))
    run = reelay(api, "batch", str(manifest))
    assert run.code == 0, run.text
    assert "status\tcompleted" in run.out.splitlines() and "succeeded\t1" in run.out.splitlines()
    assert f"{BATCH_ID}\tcompleted\t1\t0\t0\t0" in run.err


def test_batch_refuses_an_empty_file_and_reports_a_refused_upload(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert reelay(_api(), "batch", str(empty)).code == 2
    manifest = tmp_path / "shots.jsonl"
    manifest.write_text("{}\n")
    api = _api().on(
        "PUT", "/results/inbox/shots.jsonl", httpx.Response(400, text="<Error><Code>BadDigest</Code></Error>")
    )
    run = reelay(api, "batch", str(manifest))
    assert run.code == 1 and "BadDigest" in run.err and "deadbeef" not in run.err


def test_manifest_names_and_eta() -> None:
    assert manifest_name(Path("/x/Shots of 1 Dec.jsonl")) == "Shots-of-1-Dec"
    assert manifest_name(Path("..jsonl")) == "batch"
    running = BatchView.model_validate(view(succeeded=2, failed=2, running=4, tasks=8))
    assert eta_seconds(running, elapsed=40) == 40.0  # 4 ended in 40 s: 4 more take 40 s
    assert eta_seconds(BatchView.model_validate(view()), elapsed=10) is None  # none ended yet
