"""$ per 1,000 tasks per path, from reelay's own counts, checked against an independent count.

Runs N tasks per path on the embedded local stack and the simulator, started ``--rate`` a second
(the paths in turn):

- ``callback``: generate_task (callbacks), a 3-minute task;
- ``poll-3min``: sorahk (the Step Functions poll path), a 3-minute task;
- ``poll-10min``: sorahk, a 10-minute task.

Time runs ``--speedup`` times faster than real (generation and typical times divided by it; the
adaptive schedule scales with the typical time), reconcile runs at the deployed ``ReconcileRate``
(template.yaml's default, 2 minutes) sped up as much (``--reconcile-every`` overrides it; 3600
keeps it out of the way), and the simulator's generate_task limits are lifted (429 backoffs would
be noise). Its runs are counted too: each is shared among the tasks it looked at, by reelay and by
the independent count alike. Time x10 compresses the tasks and the schedules but not every fixed
constant of reconcile's looks (``reelay.deadlines.MIN_LOOK``, the notify grace).

While they run, ``reelay_local.aws_calls.AwsCallCounter`` counts every AWS request the moto
server answers and every Lambda invocation, per task, from outside reelay's code, and afterwards
the state transitions of every execution's history. Then ``reelay cost --json --tasks`` (the CLI,
in a subprocess, over the API) reports each task's cost as reelay counted it; every task's calls,
Lambda and HTTP API requests and transitions must equal the independent count (exit 1 if not).
The table is priced from those counts (``reelay.costs.AWS_PRICES_USD``).

The Lambda line is priced from the local invocations' durations. Locally every function shares
this machine's cores, where each Lambda invocation has its own: started all at once, 300 tasks'
invocations queue for 2 cores and each takes 2-3 times as long as it does alone. Starting them
at a steady rate keeps that queueing (which Lambda does not have) out of the durations; moto's
and the simulator's own latency stays in them, so the line is still an upper bound. A task's
other counts do not depend on the rate.

    .venv/bin/python benchmarks/cost.py [--tasks 100] [--speedup 10] [--rate 1.5]     # make cost
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import httpx

REPO = Path(__file__).resolve().parents[1]
TYPICAL_SECONDS = 180.0
PATHS: dict[str, dict[str, Any]] = {
    "callback": {"provider": "generate_task", "duration": 4, "seconds": 180.0},
    "poll-3min": {"provider": "sorahk", "duration": 10, "seconds": 180.0},
    "poll-10min": {"provider": "sorahk", "duration": 10, "seconds": 600.0},
}


def _environment(speedup: float, reconcile_every: float = 3600.0) -> dict[str, str]:
    typical = f"{TYPICAL_SECONDS / speedup:g}"
    return {
        "REELAY_PROVIDERS": "generate_task,sorahk",
        "REELAY_GENERATE_TASK_TYPICAL_SECONDS": typical,
        "REELAY_SORAHK_TYPICAL_SECONDS": typical,
        "REELAY_LOG_LEVEL": "WARNING",
        "REELAY_RECONCILE_EVERY_SECONDS": f"{reconcile_every:g}",
        # A task's own cost, not that of waiting: 100 tasks at once at generate_task's documented
        # 60 requests a minute would add retries and waits (the simulator's limits are lifted
        # too). Its slots stay (each task takes and frees one); the request log is off ("0").
        "REELAY_GENERATE_TASK_REQUESTS_PER_MINUTE": "0",
        "REELAY_GENERATE_TASK_MAX_IN_FLIGHT": "1000",
    }


def _wait_terminal(env: Any, task_ids: list[str], timeout: float) -> dict[str, str]:
    """Every task's status, read from the table with the observer's key (not counted)."""
    from reelay_local.aws_calls import OBSERVER_KEY

    ddb = boto3.client(
        "dynamodb",
        endpoint_url=env.stack.aws_endpoint,
        aws_access_key_id=OBSERVER_KEY,
        aws_secret_access_key=OBSERVER_KEY,
        region_name="us-east-1",
    )
    table = env.stack.resources["TaskTable"]
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while True:
        pending = [t for t in task_ids if statuses.get(t) not in ("succeeded", "failed")]
        for start in range(0, len(pending), 100):
            keys = [{"pk": {"S": f"TASK#{t}"}, "sk": {"S": "TASK"}} for t in pending[start : start + 100]]
            found = ddb.batch_get_item(RequestItems={table: {"Keys": keys}})["Responses"][table]
            statuses.update({i["pk"]["S"].removeprefix("TASK#"): i["status"]["S"] for i in found})
        if all(statuses.get(t) in ("succeeded", "failed") for t in task_ids):
            return statuses
        if time.monotonic() > deadline:
            left = [t for t in task_ids if statuses.get(t) not in ("succeeded", "failed")]
            raise TimeoutError(f"{len(left)} tasks not terminal after {timeout:.0f} s, e.g. {left[:3]}")
        time.sleep(2)


def reelay_cost(api_url: str, task_ids: list[str]) -> dict[str, Any]:
    """``reelay cost --json --tasks`` over the API: rows by scope."""
    done = subprocess.run(
        [str(REPO / ".venv/bin/reelay"), "--api-url", api_url, "--json", "cost", "--tasks", *task_ids],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {"tasks": {r["key"]: r for r in rows if r["scope"] == "task"}, "total": rows[-1]}


def deployed_reconcile_seconds() -> float:
    """The period of template.yaml's default ``ReconcileRate``, in seconds."""
    from reelay_local.environment import rate_seconds
    from reelay_local.template import load_yaml

    parameters = load_yaml((REPO / "template.yaml").read_text())["Parameters"]
    return rate_seconds(str(parameters["ReconcileRate"]["Default"]))


def run(tasks: int, speedup: float, timeout: float, rate: float, reconcile_every: float | None = None) -> int:
    from reelay.costs import price
    from reelay_local import DevEnvironment
    from reelay_local.aws_calls import AwsCallCounter, compare_task

    if reconcile_every is None:
        reconcile_every = deployed_reconcile_seconds() / speedup
    for key, value in _environment(speedup, reconcile_every).items():
        os.environ[key] = value
    started = time.monotonic()
    with AwsCallCounter() as counter, DevEnvironment(REPO) as env:
        env.sim.configure("generate_task", rate_limit_per_minute=1_000_000, max_concurrent=1_000_000)
        http = httpx.Client(base_url=env.stack.api_url, timeout=60)
        ids: dict[str, list[str]] = defaultdict(list)
        pace = time.monotonic()
        for n in range(tasks):
            for path, spec in PATHS.items():
                pace += 1 / rate
                time.sleep(max(0.0, pace - time.monotonic()))
                seconds = spec["seconds"] / speedup
                body = {
                    "provider": spec["provider"],
                    "prompt": f"cost run {path} {n} [sim:seconds={seconds:g}]",
                    "duration": spec["duration"],
                }
                answer = http.post("/v1/tasks", json=body)
                answer.raise_for_status()
                ids[path].append(answer.json()["id"])
        every = [t for group in ids.values() for t in group]
        statuses = _wait_terminal(env, every, timeout)
        env.stack.drain(timeout=120, executions=True)
        wall = time.monotonic() - started
        counter.stop_counting()  # what follows reads the counts; it is not part of the run
        transitions = counter.transitions(env.stack, every)
        problems: list[str] = []
        results = {}
        for path, group in ids.items():
            report = reelay_cost(env.stack.api_url, group)
            for task_id in group:
                task = http.get(f"/v1/tasks/{task_id}").json()
                problems += compare_task(task_id, task["cost"], counter, transitions[task_id])
                if report["tasks"][task_id]["units"] != task["cost"]["aws"]["units"]:
                    problems.append(f"{task_id}: reelay cost and GET /v1/tasks/{{id}} disagree")
            results[path] = (report["total"], [statuses[t] for t in group])
        http.close()
        totals = counter.totals()
    _print(results, tasks, speedup, rate, wall, totals, price, counter.invocations, reconcile_every)
    for problem in problems[:20]:
        print("MISMATCH", problem, file=sys.stderr)
    print(
        f"\nindependent count vs reelay's: {'equal for every task' if not problems else f'{len(problems)} mismatches'}"
    )
    return 1 if problems else 0


def _print(
    results: dict[str, Any],
    tasks: int,
    speedup: float,
    rate: float,
    wall: float,
    totals: Any,
    price: Any,
    lambdas: Any,
    reconcile_every: float,
) -> None:
    print(
        f"{tasks} tasks per path, started {rate:g} a second, time x{speedup:g}, reconcile every "
        f"{reconcile_every:g} s ({reconcile_every * speedup:g} s deployed), {wall:.0f} s wall; "
        "us-east-1 list prices (reelay.costs)\n"
    )
    header = ("path", "ok", "$ / 1,000 tasks", "lambda", "step fn", "dynamodb", "s3", "sqs", "api gw", "accounting")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path, (total, statuses) in results.items():
        lines = total["aws_lines"]
        per_k = {k: v / total["tasks"] * 1000 for k, v in lines.items()}
        ok = sum(1 for s in statuses if s == "succeeded")
        row = [
            path,
            f"{ok}/{len(statuses)}",
            f"{total['aws_usd_per_1000']:.4f}",
            *(f"{per_k.get(k, 0.0):.4f}" for k in ("lambda", "step_functions", "dynamodb", "s3", "sqs", "api_gateway")),
            f"{per_k.get('accounting', 0.0):.4f}",
        ]
        print("| " + " | ".join(row) + " |")
    print("\nper task (mean):")
    print(
        "| path | write units | of them accounting | read units | transitions | Lambda requests | GB-s | S3 PUT-class |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path, (total, _) in results.items():
        units = {k: v / total["tasks"] for k, v in total["units"].items()}
        print(
            f"| {path} | {units.get('ddb_wu', 0) + units.get('ddb_accounting_wu', 0):.1f} | "
            f"{units.get('ddb_accounting_wu', 0):.1f} | {units.get('ddb_ru', 0):.1f} | "
            f"{units.get('sfn_transitions', 0):.1f} | {units.get('lambda_requests', 0):.2f} | "
            f"{units.get('lambda_gb_s', 0):.4f} | {units.get('s3_put_requests', 0):.1f} |"
        )
    print("\nLambda by function, all paths (independent count): invocations, GB-s per invocation")
    print(
        ", ".join(
            f"{name} {n} x {lambdas.gb_s_by_function[name] / n:.3f}"
            for name, n in sorted(lambdas.by_function.items(), key=lambda kv: -lambdas.gb_s_by_function[kv[0]])
        )
    )
    print("\nAWS requests the moto server answered, all tasks (independent count):")
    print(", ".join(f"{op} {n}" for op, n in sorted(totals.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks per path")
    parser.add_argument("--speedup", type=float, default=10.0, help="time runs this many times faster")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for every task to end")
    parser.add_argument("--rate", type=float, default=1.5, help="tasks started per second, the paths in turn")
    parser.add_argument(
        "--reconcile-every",
        type=float,
        default=None,
        help="seconds between reconcile runs, local time (default: the deployed ReconcileRate sped up as the "
        "rest, 12 s at --speedup 10; 3600 keeps reconcile out of the way)",
    )
    args = parser.parse_args()
    sys.exit(run(args.tasks, args.speedup, args.timeout, args.rate, args.reconcile_every))


if __name__ == "__main__":
    main()
