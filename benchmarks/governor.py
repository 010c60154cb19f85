"""Governor benchmark: a provider kept full and never over its limits, on the local stack.

    .venv/bin/python benchmarks/governor.py [--tasks 200] [--generation 10] [--max-in-flight 10]
        [--rpm 60] [--workers 1 10] [--fairness 0]
    make governor-bench

For each ``--workers`` value (the submit function's reserved concurrency, template parameter
``SubmitConcurrency``: the local stack runs that many submit batches at once) it starts
``reelay_local.DevEnvironment`` with generate_task alone on the simulator — ``--generation`` s per
task, callbacks on, the simulator enforcing ``--max-in-flight`` unfinished tasks and ``--rpm``
requests in any 60 s window per key (429 above them), and reelay configured with the same limits
(``REELAY_GENERATE_TASK_MAX_IN_FLIGHT`` / ``_REQUESTS_PER_MINUTE``) — submits ``--tasks`` tasks
through the HTTP API at once and waits until every one is terminal. It prints:

- makespan (first POST to the last terminal write) ÷ the theoretical minimum for those limits,
  ``max(ceil(T/N) * generation, Q/R * 60 s)``, Q being the requests the tasks need (a create and
  one status check each: 2 T); target ≤ 1.05;
- 429s the simulator answered (rate and concurrency), target 0;
- the most unfinished tasks the simulator saw at once (≤ N) and the most requests it counted in
  one 60 s window (≤ R);
- duplicate provider tasks (a task's ``[tag:…]`` on two provider tasks), target 0;
- requests actually made, and how the tasks ended.

With ``--fairness B`` it then measures an API task's wait while a batch runs: a B-line manifest
is put at ``inbox/fairness.jsonl`` of the results bucket (the local owner's inbox: the batch
function splits it, its chunks create the tasks and offer them to the governor's line), then,
once its tasks fill the provider with a line behind them, one interactive task is POSTed; its
wait is the time from the POST to its create at the simulator, next to one task's generation
time. The run stops after that (the batch is not waited for).

The handlers' logs go to a file (its path is printed). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "layers" / "core"), str(REPO / "devstack")]

PROVIDER = "generate_task"


def environment(args: argparse.Namespace) -> dict[str, str]:
    return {
        "REELAY_PROVIDERS": PROVIDER,
        "REELAY_GENERATE_TASK_MAX_IN_FLIGHT": str(args.max_in_flight),
        "REELAY_GENERATE_TASK_REQUESTS_PER_MINUTE": str(args.rpm),
        # The local stack would take the simulator's default generation time (3 s) as typical;
        # reconcile looks at a task due by it (a queued one every typical time, a callback that
        # never came at twice it), so a short one only adds looks.
        "REELAY_GENERATE_TASK_TYPICAL_SECONDS": str(args.typical),
        "REELAY_LOG_LEVEL": "WARNING",
        "REELAY_RECONCILE_EVERY_SECONDS": str(args.reconcile_every),
    }


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def list_all(http: httpx.Client) -> list[dict[str, Any]]:
    """Every task of the local owner (the API's listing, paged)."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/v1/tasks", params=params)
        if response.status_code != 200:  # a loaded machine may time the API out: ask again
            time.sleep(1.0)
            continue
        page = response.json()
        tasks.extend(page["tasks"])
        cursor = page.get("next_cursor")
        if not cursor:
            return tasks


def run_once(args: argparse.Namespace, workers: int, log: IO[str], out: IO[str]) -> bool:
    from reelay_local import DevEnvironment

    for key, value in environment(args).items():
        os.environ[key] = value
    env = DevEnvironment(REPO, parameter_overrides={"SubmitConcurrency": str(workers)})
    with contextlib.redirect_stdout(log):
        env.start()
    try:
        env.sim.configure(
            PROVIDER,
            generation_seconds=args.generation,
            max_concurrent=args.max_in_flight,
            rate_limit_per_minute=args.rpm,
            callback_mode="normal",
        )
        mapping = next(m for m in env.stack.queue_mappings if m.function == "SubmitFunction")
        out.write(f"\n== {workers} submit worker(s) (local SQS poller: {mapping.max_concurrency} at once) ==\n")
        with httpx.Client(base_url=env.stack.api_url, timeout=60) as http, contextlib.redirect_stdout(log):
            ok = throughput(args, env, http, out) if args.tasks else True
            if args.fairness:
                ok = fairness(args, env, http, out) and ok
        return ok
    finally:
        with contextlib.redirect_stdout(log):
            env.stop()


def throughput(args: argparse.Namespace, env: Any, http: httpx.Client, out: IO[str]) -> bool:
    run = uuid.uuid4().hex[:6]
    first = time.time()
    ids = []
    for i in range(args.tasks):
        body = {"provider": PROVIDER, "prompt": f"governor bench {i} [tag:gov-{run}-{i}]", "duration": 4}
        response = http.post("/v1/tasks", json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    submitted = time.time() - first
    wanted = set(ids)
    deadline = time.monotonic() + args.timeout
    while True:
        views = {t["id"]: t for t in list_all(http) if t["id"] in wanted}
        done = [t for t in views.values() if t["status"] in ("succeeded", "failed")]
        out.write(f"\r  {len(done)}/{len(ids)} terminal, {time.time() - first:6.1f} s")
        out.flush()
        if len(done) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(5.0)
    out.write("\n")
    last = max((_epoch(t["updated_at"]) for t in done), default=time.time())
    makespan = last - first
    n, g, r = args.max_in_flight, args.generation, args.rpm
    needed = 2 * args.tasks
    minimum = max(math.ceil(args.tasks / n) * g, needed / r * 60.0)
    limits = env.sim.counters()["limits"].get(PROVIDER, {})
    tags = env.sim.counters()["tags"]
    duplicates = sum(1 for label, made in tags.items() if label.startswith(f"gov-{run}-") and len(made) > 1)
    ended = Counter(t["status"] if t["status"] != "failed" else f"failed {t['error']['code']}" for t in done)
    ratio = makespan / minimum
    rate_429s = int(limits.get("rate_429s", 0))
    concurrency_429s = int(limits.get("concurrency_429s", 0))
    max_in_flight = int(limits.get("max_in_flight", 0))
    out.write(f"  tasks {args.tasks}, all POSTed in {submitted:.1f} s; ended: {dict(ended)}\n")
    out.write(
        f"  makespan {makespan:.1f} s; theoretical minimum max(ceil({args.tasks}/{n})*{g:g}, {needed}/{r}*60) = "
        f"{minimum:.1f} s; ratio {ratio:.3f} (target <= 1.05)\n"
    )
    out.write(f"  429s received: {rate_429s + concurrency_429s} (rate {rate_429s}, concurrency {concurrency_429s})\n")
    out.write(
        f"  most in flight at the simulator: {max_in_flight} (limit {n}); most requests in a 60 s window: "
        f"{limits.get('max_requests_in_window', 0)} (limit {r})\n"
    )
    made = limits.get("requests", 0)
    out.write(f"  requests made: {made} (needed {needed}); duplicate provider tasks: {duplicates}\n")
    timeline(env, first, last, r, out)
    return (
        len(done) == len(ids)
        and ratio <= 1.05
        and rate_429s + concurrency_429s == 0
        and max_in_flight <= n
        and duplicates == 0
        and ended.get("succeeded", 0) == len(ids)
    )


def timeline(env: Any, first: float, last: float, rpm: int, out: IO[str]) -> None:
    """Where the makespan went: the time to the first request, the send time left unused
    between requests (beyond the governor's spacing) by how many tasks were in flight then
    (10: the slots bound; fewer: nobody asked in time), and the tail after the last request."""
    accepted = [
        r
        for r in env.sim.requests
        if r["protocol"] == PROVIDER and r["kind"] in ("create", "status") and r.get("status") != 429
    ]
    sent = sorted((r["at"], r["kind"]) for r in accepted)
    if not sent:
        return
    checked: dict[str, float] = {}
    for r in accepted:
        if r["kind"] == "status":
            task_id = str(r["query"].get("taskId", ""))
            checked[task_id] = max(checked.get(task_id, 0.0), r["at"])
    spans = [(t["created_at"], checked.get(t["id"], last)) for t in env.sim.tasks(PROVIDER)]

    def in_flight(moment: float) -> int:
        return sum(1 for made, done in spans if made <= moment < done)

    spacing = 61.0 / rpm
    idle = [(a, b - a - spacing, kind) for (a, _), (b, kind) in itertools.pairwise(sent) if b - a > spacing]
    by_load: Counter[int] = Counter()
    for a, gap, _ in idle:
        by_load[in_flight(a + 0.01)] += gap
    out.write(
        f"  timeline: first request {sent[0][0] - first:.1f} s after the first POST; requests span "
        f"{sent[-1][0] - sent[0][0]:.1f} s (paced minimum {(len(sent) - 1) * spacing:.1f} s); last write "
        f"{last - sent[-1][0]:.1f} s after the last request\n"
        f"  send time unused between requests: {sum(g for _, g, _ in idle):.1f} s; by tasks in flight then: "
        + ", ".join(f"{n}: {s:.1f} s" for n, s in sorted(by_load.items()))
        + "\n"
    )
    worst = sorted(idle, key=lambda g: -g[1])[:10]
    out.write("  longest gaps (s into the run: unused s, in flight, the request after): ")
    out.write(", ".join(f"{a - first:.0f}: {gap:.2f} {in_flight(a + 0.01)} {kind}" for a, gap, kind in worst) + "\n")


def fairness(args: argparse.Namespace, env: Any, http: httpx.Client, out: IO[str]) -> bool:
    """Measure an interactive task's wait for a slot while a manifest of ``--fairness`` lines runs."""
    import boto3

    from reelay.bootstrap import Container

    function_env = env.stack.functions["SubmitFunction"].environment
    governor = Container.from_environ(function_env).governor
    lines = [
        json.dumps({"id": line, "provider": PROVIDER, "prompt": f"batch line {line}", "duration": 4})
        for line in range(1, args.fairness + 1)
    ]
    s3 = boto3.client("s3", endpoint_url=env.stack.aws_endpoint)
    began = time.time()
    s3.put_object(Bucket=env.stack.bucket, Key="inbox/fairness.jsonl", Body=("\n".join(lines) + "\n").encode())
    # Let the batch fill the provider and start finishing: every slot taken, a line behind
    # them, and a generation's worth of batch tasks made.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        made = sum(1 for t in env.sim.tasks(PROVIDER) if "batch line" in t.get("prompt", ""))
        if made >= 2 * args.max_in_flight and governor.waiting(PROVIDER) >= 2 * args.max_in_flight:
            break
        time.sleep(1.0)
    else:
        out.write("  fairness: the manifest's tasks did not fill the provider in time\n")
        return False
    out.write(
        f"  fairness: manifest of {args.fairness} lines put at inbox/fairness.jsonl; {made} of its tasks made "
        f"and {governor.waiting(PROVIDER)} waiting {time.time() - began:.0f} s after the put\n"
    )
    posted = time.time()
    body = {"provider": PROVIDER, "prompt": "interactive [tag:fair-api]", "duration": 4}
    response = http.post("/v1/tasks", json=body)
    response.raise_for_status()
    task_id = response.json()["id"]
    created_at = None
    deadline = time.monotonic() + 10 * args.generation + 120
    while created_at is None and time.monotonic() < deadline:
        made_now = [t for t in env.sim.tasks(PROVIDER) if "[tag:fair-api]" in t.get("prompt", "")]
        created_at = made_now[0]["created_at"] if made_now else None
        time.sleep(0.2)
    view = http.get(f"/v1/tasks/{task_id}").json()
    batch_done = sum(
        1 for t in env.sim.tasks(PROVIDER) if t.get("state") == "succeeded" and "batch line" in t.get("prompt", "")
    )
    if created_at is None:
        out.write("  fairness: the interactive task was not created in time\n")
        return False
    wait = created_at - posted
    out.write(
        f"  fairness: an API task POSTed {posted - began:.0f} s after a {args.fairness}-line manifest's put waited "
        f"{wait:.1f} s for its slot and create (one generation: {args.generation:g} s); "
        f"waiting batch tasks then: {governor.waiting(PROVIDER)}; batch tasks done: {batch_done}; "
        f"the API task is {view['status']}\n"
    )
    return wait <= 2 * args.generation + 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--generation", type=float, default=10.0, help="seconds per task at the simulator")
    parser.add_argument("--max-in-flight", type=int, default=10)
    parser.add_argument("--rpm", type=int, default=60, help="requests per minute per key")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 10], help="submit workers (runs)")
    parser.add_argument("--fairness", type=int, default=0, help="manifest lines for the fairness measurement")
    parser.add_argument("--reconcile-every", type=float, default=10.0)
    parser.add_argument("--typical", type=float, default=30.0, help="REELAY_GENERATE_TASK_TYPICAL_SECONDS")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)
    out = sys.stdout
    log_dir = Path(tempfile.mkdtemp(prefix="reelay-governor-"))
    ok = True
    for workers in args.workers:
        log_path = log_dir / f"workers-{workers}.log"
        out.write(f"handler logs in {log_path}\n")
        with log_path.open("w") as log:
            handler = logging.StreamHandler(log)
            logging.getLogger().addHandler(handler)
            try:
                ok = run_once(args, workers, log, out) and ok
            finally:
                logging.getLogger().removeHandler(handler)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
