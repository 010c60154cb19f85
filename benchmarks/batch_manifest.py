"""A large batch manifest on the local stack: acceptance, the function time of each chunk, the report.

Puts an N-line manifest (10,000 by default) at ``inbox/<name>.jsonl`` of the local stack's results
bucket and measures, from the put:

- *accepted*: when every chunk has committed (every line is a queued task or an invalid line
  recorded), and the batch function's own time for each chunk (kept on its chunk marker:
  reading its byte range, checking each line, the conditional task writes, the submit
  messages, the line records, the commit);
- *report*: when ``reports/<name>.jsonl`` and the summary are written (every task ended).

So that 10,000 tasks end quickly without a paid call, the lines go to sorahk with the
simulator's balance at 0: each task fails ``INSUFFICIENT_BALANCE`` at the submit worker's
balance check, before any create (``--provider generate_task`` really runs them instead, which
at its limits takes hours). Every 20th line is invalid, to show they cost nothing.

    .venv/bin/python benchmarks/batch_manifest.py [--lines 10000] [--chunk-lines 500] [--no-report]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--chunk-lines", type=int, default=None, help="REELAY_BATCH_CHUNK_LINES (template: 100)")
    parser.add_argument("--provider", default="sorahk")
    parser.add_argument("--no-report", action="store_true", help="stop once every chunk is accepted")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    os.environ.setdefault("REELAY_LOG_LEVEL", "WARNING")
    from reelay.batch_store import DynamoBatchStore
    from reelay.batches import batch_id_of
    from reelay_local import DevEnvironment

    # The check recounts a batch whose counters missed an update (a hook that failed after a
    # task's terminal write): every 20 s here instead of 300.
    overrides = {"REELAY_BATCH_CHECK_SECONDS": "20"}
    if args.chunk_lines:
        overrides["REELAY_BATCH_CHUNK_LINES"] = str(args.chunk_lines)
    lines = []
    for n in range(1, args.lines + 1):
        if n % 20 == 0:
            lines.append(json.dumps({"id": n, "provider": args.provider, "prompt": f"shot {n}", "duration": 7}))
        else:
            lines.append(json.dumps({"id": n, "provider": args.provider, "prompt": f"shot {n} of a long day"}))
    body = ("\n".join(lines) + "\n").encode()
    with DevEnvironment(REPO, env_overrides=overrides) as env:
        if args.provider == "sorahk":
            env.sim.configure("sorahk", balance=0)
        s3 = boto3.client("s3", endpoint_url=env.stack.aws_endpoint)
        key = "inbox/bench.jsonl"
        began = time.monotonic()
        etag = s3.put_object(Bucket=env.stack.bucket, Key=key, Body=body)["ETag"].strip('"')
        batch_id = batch_id_of(env.stack.bucket, key, etag)
        store = DynamoBatchStore(env.stack.resources["TaskTable"])
        accepted_at = report_at = None
        last_shown = began
        while time.monotonic() - began < args.timeout:
            batch = store.get(batch_id)
            if batch is not None and accepted_at is None and batch.split_done and batch.all_chunks_committed:
                accepted_at = time.monotonic()
                if args.no_report:
                    break
            if batch is not None and time.monotonic() - last_shown >= 10:
                last_shown = time.monotonic()
                print(
                    f"  {last_shown - began:6.0f} s: chunks {batch.chunks_done}/{batch.chunks_total or '?'}, "
                    f"tasks {batch.tasks}, invalid {batch.invalid}, ended {batch.ended}",
                    file=sys.stderr,
                )
            if batch is not None and batch.status == "completed":
                report_at = time.monotonic()
                break
            time.sleep(0.5)
        batch = store.get(batch_id)
        chunks = store.chunk_seconds(batch_id)
        timeouts = len(env.stack.timeouts)
    if batch is None or not chunks:
        print(f"nothing accepted within {args.timeout:g} s", file=sys.stderr)
        return 1
    if accepted_at is None:
        print(f"not all accepted within {args.timeout:g} s: {len(chunks)} of {batch.chunks_total} chunks")
        accepted_at = time.monotonic()
    seconds = [s for _, _, s in chunks]
    timeout = 300  # BatchFunction's template Timeout
    size = len(body) / 1e6
    print(f"manifest: {args.lines} lines, {size:.2f} MB, {batch.chunks_total} chunks; provider {args.provider}")
    print(f"accepted: {batch.tasks} tasks + {batch.invalid} invalid lines in {accepted_at - began:.1f} s after the put")
    print(
        f"chunk function time (s): min {min(seconds):.2f}, median {statistics.median(seconds):.2f}, "
        f"max {max(seconds):.2f} (timeout {timeout} s: max is {max(seconds) / timeout:.1%} of it)"
    )
    print("per chunk (index: lines, s): " + ", ".join(f"{i}: {n}, {s:.2f}" for i, n, s in chunks))
    if report_at is not None:
        ended = f"{batch.failed} failed, {batch.succeeded} succeeded"
        print(f"report: written {report_at - began:.1f} s after the put (tasks: {ended})")
    print(f"function timeouts: {timeouts}")
    return 0 if timeouts == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
