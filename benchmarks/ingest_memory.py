"""Ingest memory: stream a large video from the simulator into S3 and report the copier's peak memory.

The simulator and moto's S3 run in their own processes, so the figures are the copier's
alone: tracemalloc's peak of Python allocations during the copy, and the growth of this
process's peak RSS. reelay's part size is 8 MiB; memory must stay near that, whatever
the video size.

    .venv/bin/python benchmarks/ingest_memory.py [--mib 64 256]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import boto3
import httpx

from reelay.aws import ResultBucket
from reelay.ingest import ResultCopier, UrlGuard

MiB = 1024 * 1024
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[64, 256], help="video sizes to copy (MiB)")
    args = parser.parse_args()
    moto_port, sim_port = free_port(), free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    procs = [
        subprocess.Popen(
            [str(BIN / "moto_server"), "-p", str(moto_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "reelay_sim", "--port", str(sim_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        endpoint, sim = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sim_port}"
        wait_for(endpoint)
        wait_for(f"{sim}/_sim/state")
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        copier = ResultCopier(ResultBucket("bench", client=s3), UrlGuard(frozenset({f"127.0.0.1:{sim_port}"})))
        print(
            f"{'video MiB':>9} {'parts':>6} {'seconds':>8} {'MiB/s':>7} {'py peak MiB':>12} {'RSS growth MiB':>15}"
            f" {'sha256 ok':>9}"
        )
        for size in args.mib:
            httpx.post(
                f"{sim}/_sim/config",
                json={"protocol": "generate_task", "video_bytes": size * MiB, "generation_seconds": 0.1},
            ).raise_for_status()
            created = httpx.post(
                f"{sim}/generate-task/api/v1/generateTask/sora-2-pro",
                headers={"Authorization": "Bearer sim-gt-key"},
                json={"request_type": "async", "provider": "official", "input": {"prompt": "bench", "duration": 4}},
            ).json()["data"]["taskId"]
            time.sleep(0.5)
            url = f"{sim}/files/generate_task/{created}.mp4"
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            tracemalloc.start()
            started = time.perf_counter()
            out = copier.copy(url, f"bench/{size}", headers_for=lambda u: {})
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
            digest = hashlib.sha256()
            for chunk in s3.get_object(Bucket="bench", Key=out.key)["Body"].iter_chunks(MiB):
                digest.update(chunk)
            ok = digest.hexdigest() == out.sha256 and out.bytes == size * MiB
            parts = -(-out.bytes // (8 * MiB))
            print(
                f"{size:>9} {parts:>6} {elapsed:>8.1f} {size / elapsed:>7.0f} {peak / MiB:>12.1f} "
                f"{rss_growth:>15.1f} {ok!s:>9}"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
