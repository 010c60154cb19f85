"""Cold start: import time of each function's handler module, next to ``import boto3`` alone.

Each measurement is a fresh interpreter (as a Lambda cold start is), importing the
handler with a stack-like environment; the median of ``--runs`` runs is printed.

    .venv/bin/python benchmarks/cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(p.name for p in (REPO / "functions").iterdir() if (p / "app.py").exists())
ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_SERVICE_NAME": "reelay",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "TASK_TABLE_NAME": "tasks",
    "RESULTS_BUCKET": "results",
    "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/submit",
    "INGEST_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ingest",
    "POLL_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:reelay-poll",
    "CALLBACK_BASE_URL": "https://api.example",
    "CALLBACK_SECRET": "bench-secret-bench-secret-bench!",
    "REELAY_GENERATE_TASK_BASE_URL": "https://gt.example",
    "REELAY_GENERATE_TASK_API_KEY": "k",
    "REELAY_SORAHK_BASE_URL": "https://api.sora.hk/v1",
    "REELAY_SORAHK_API_KEY": "k",
    "REELAY_OPENAI_VIDEOS_BASE_URL": "https://ov.example/sora",
    "REELAY_OPENAI_VIDEOS_API_KEY": "k",
}
PROBE = """
import sys, time, json
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
exec(sys.argv[2])
print(json.dumps((time.perf_counter() - t0) * 1000))
"""


def measure(code: str, path: str, runs: int) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("REELAY_", "AWS_"))}, **ENV}
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE, path, code], env=env, capture_output=True, text=True,
                             check=True)
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'module':28} {'import ms (median of ' + str(args.runs) + ')':>28}")
    print(f"{'boto3 alone':28} {measure('import boto3', str(REPO), args.runs):>28.1f}")
    for name in FUNCTIONS:
        ms = measure("import app", str(REPO / "functions" / name), args.runs)
        print(f"{'functions/' + name + '/app.py':28} {ms:>28.1f}")


if __name__ == "__main__":
    main()
