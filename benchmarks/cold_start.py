"""Cold start: import time of each function's handler module, next to ``import boto3`` alone.

Each measurement is a fresh, isolated interpreter (``python -I -S``: no site-packages, as a Lambda cold start
is) whose import path is what Lambda gives the function: the handler's folder, the core
layer (its pinned requirements installed with ``pip --target`` into .reelay/bench-layer,
plus the ``reelay`` package) and boto3, which the runtime ships. Dev-only packages of the
project venv (rich, click, moto...) are not visible, so optional imports behave as on
Lambda. The median of ``--runs`` runs is printed.

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
LAYER = REPO / ".reelay" / "bench-layer"
PROBE = """
import sys, time, json
sys.path[:0] = sys.argv[3].split(":")
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
exec(sys.argv[2])
print(json.dumps((time.perf_counter() - t0) * 1000))
"""


def build_layer() -> None:
    """Install the layer's pinned requirements and boto3 (as the runtime has) once."""
    if (LAYER / ".done").exists():
        return
    boto = next(line for line in (REPO / "requirements-dev.txt").read_text().splitlines() if line.startswith("boto3=="))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(LAYER),
            "-r",
            str(REPO / "layers/core/requirements.txt"),
            boto,
        ],
        check=True,
        capture_output=True,
    )
    (LAYER / ".done").write_text("ok")


def measure(code: str, path: str, runs: int) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("REELAY_", "AWS_"))}, **ENV}
    samples = []
    for _ in range(runs):
        paths = f"{LAYER}:{REPO / 'layers/core'}"
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", PROBE, path, code, paths],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    build_layer()
    print(f"{'module':28} {'import ms (median of ' + str(args.runs) + ')':>28}")
    print(f"{'boto3 alone':28} {measure('import boto3', str(REPO), args.runs):>28.1f}")
    for name in FUNCTIONS:
        ms = measure("import app", str(REPO / "functions" / name), args.runs)
        print(f"{'functions/' + name + '/app.py':28} {ms:>28.1f}")


if __name__ == "__main__":
    main()
