"""Ingest throughput and memory: reelay's copier against boto3's transfer manager, on loopback.

In one run, for each size (10 MiB, 100 MiB, 1 GiB by default) the simulator serves a video
(``video_bytes`` knob) and moto's S3 runs in its own process; each way of copying runs in a
fresh process of its own, several times, interleaved (so drift hits every way alike):

- ``reelay``    reelay's ``ResultCopier`` (pipelined parts, SHA-256 on the fly), through ``Fetcher``;
- ``boto3``     ``upload_fileobj`` on the same httpx stream (a file over ``iter_raw``), default ``TransferConfig``;
- ``naive``     the whole body in memory, then one ``put_object``;
- ``download``  the ceiling's first half: download and discard;
- ``upload``    the ceiling's second half: upload the same number of bytes from memory (``upload_fileobj``).

It prints medians: MiB/s, the peak RSS above the worker's baseline (its RSS after imports
and client set-up) and the seconds spent in ``CompleteMultipartUpload`` (where moto copies
every part into one object; S3's completion is a metadata operation), and reelay ÷ boto3.
Every copy's object is checked (size and SHA-256).

    .venv/bin/python benchmarks/ingest_throughput.py [--mib 10 100 1024] [--reps 5 5 2]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

MiB = 1024 * 1024
BIN = Path(sys.executable).parent
WAYS = ("reelay", "boto3", "naive", "download", "upload")
ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StreamFile(io.RawIOBase):
    """A read-only file over an httpx response's raw stream (what ``upload_fileobj`` reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._rest:
            self._rest = next(self._chunks, b"")
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def worker(way: str, url: str, endpoint: str, size: int, key: str, sim_host: str) -> dict[str, Any]:
    """One copy in this process; its seconds and peak RSS above the baseline."""
    import boto3
    from botocore.config import Config

    from reelay.aws import ResultBucket
    from reelay.copier import ResultCopier
    from reelay.fetch import Fetcher, UrlPolicy

    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=32))
    s3.list_buckets()  # connections and credentials set up before the baseline
    client = httpx.Client(timeout=120)
    sha = ""
    if way == "reelay":
        # The bucket adapter builds its client as the ingest function does (AWS_ENDPOINT_URL points it at moto).
        bucket = ResultBucket("bench")
        bucket.head("warm-up")
        fetcher = Fetcher(UrlPolicy(frozenset({sim_host})))
        # Its HTTP client (and TLS context) made before the baseline, as the other ways' httpx
        # client is, and as a warm ingest function holds it.
        assert fetcher._client is not None
        copier = ResultCopier(
            bucket,
            fetcher,
            part_bytes=int(os.environ["BENCH_PART_MIB"]) * MiB,
            parts_in_flight=int(os.environ["BENCH_IN_FLIGHT"]),
        )
    # The time spent in CompleteMultipartUpload, for the ways that make one (moto copies every
    # part into one object there; S3's completion is a metadata operation).
    completing: list[float] = []

    def timed(call: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                completing.append(time.perf_counter() - began)

        return wrapped

    s3.complete_multipart_upload = timed(s3.complete_multipart_upload)
    if way == "reelay":
        bucket.complete_multipart = timed(bucket.complete_multipart)  # type: ignore[method-assign]
    baseline = _rss_mib()
    started = time.perf_counter()
    if way == "reelay":
        record = copier.copy(url, key)
        key, sha = record.key, record.sha256 or ""
    elif way == "boto3":
        with client.stream("GET", url) as response:
            s3.upload_fileobj(io.BufferedReader(StreamFile(response.iter_raw()), 1024 * 1024), "bench", key)
    elif way == "naive":
        body = client.get(url).content
        s3.put_object(Bucket="bench", Key=key, Body=body)
        del body
    elif way == "download":
        with client.stream("GET", url) as response:
            for _ in response.iter_raw():
                pass
    elif way == "upload":
        data = bytes(size)
        started = time.perf_counter()  # the upload alone: building the bytes is not part of it
        s3.upload_fileobj(io.BytesIO(data), "bench", key)
    seconds = time.perf_counter() - started
    peak = _rss_mib() - baseline
    ok = True
    if way in ("reelay", "boto3", "naive"):
        head = s3.head_object(Bucket="bench", Key=key)
        ok = int(head["ContentLength"]) == size
        if sha:  # reelay's own SHA-256 against the stored object's
            digest = hashlib.sha256()
            for chunk in s3.get_object(Bucket="bench", Key=key)["Body"].iter_chunks(4 * MiB):
                digest.update(chunk)
            ok = ok and digest.hexdigest() == sha
    if way != "download":
        s3.delete_object(Bucket="bench", Key=key)  # moto keeps objects in memory
    return {"seconds": seconds, "rss": peak, "ok": ok, "complete": sum(completing)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def video_url(sim: str, size: int) -> tuple[str, int]:
    """A simulator task whose result is a ``size``-byte MP4; its URL and exact size."""
    httpx.post(
        f"{sim}/_sim/config", json={"protocol": "generate_task", "video_bytes": size, "generation_seconds": 0.1}
    ).raise_for_status()
    task = httpx.post(
        f"{sim}/generate-task/api/v1/generateTask/sora-2-pro",
        headers={"Authorization": "Bearer sim-gt-key"},
        json={"request_type": "async", "provider": "official", "input": {"prompt": "bench", "duration": 4}},
    ).json()["data"]["taskId"]
    time.sleep(0.5)
    url = f"{sim}/files/generate_task/{task}.mp4"
    with httpx.stream("GET", url) as response:
        return url, int(response.headers["content-length"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[10, 100, 1024])
    parser.add_argument("--reps", type=int, nargs="+", default=[5, 5, 2], help="repetitions per size")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--part-mib", type=int, default=8, help="reelay's part size (REELAY_INGEST_PART_BYTES)")
    parser.add_argument("--in-flight", type=int, default=4, help="reelay's parts in flight")
    args = parser.parse_args()
    moto_port, sim_port = free_port(), free_port()
    env = {
        **os.environ,
        **ENV,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "BENCH_PART_MIB": str(args.part_mib),
        "BENCH_IN_FLIGHT": str(args.in_flight),
    }
    print(f"reelay: {args.part_mib} MiB parts, {args.in_flight} in flight; boto3: default TransferConfig")
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
    began = time.monotonic()
    try:
        endpoint, sim = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{sim_port}"
        wait_for(endpoint)
        wait_for(f"{sim}/_sim/state")
        import boto3

        os.environ.update(ENV)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        print(
            f"{'MiB':>5} {'way':>9} {'reps':>4} {'MiB/s':>7} {'(min-max)':>13} {'peak RSS MiB':>12} {'ok':>3}"
            f" {'completion s':>12}"
        )
        for size_mib, reps in zip(args.mib, args.reps + [args.reps[-1]] * len(args.mib), strict=False):
            url, size = video_url(sim, size_mib * MiB)
            results: dict[str, list[dict[str, Any]]] = {w: [] for w in args.ways}
            for rep in range(reps):
                # Alternate the order each repetition, and let moto settle between runs (it frees
                # the previous object and its temp files lazily): no way always runs after another.
                order = args.ways if rep % 2 == 0 else list(reversed(args.ways))
                for way in order:
                    time.sleep(1.0)
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", way, url, endpoint, str(size), f"b/{way}/{rep}",
                         f"127.0.0.1:{sim_port}"],
                        env=env, capture_output=True, text=True, check=True,
                    )
                    results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
            rates = {}
            for way, runs in results.items():
                speeds = [size / MiB / r["seconds"] for r in runs]
                rates[way] = statistics.median(speeds)
                rss = statistics.median(r["rss"] for r in runs)
                ok = all(r["ok"] for r in runs)
                completion = statistics.median(r["complete"] for r in runs)
                print(
                    f"{size_mib:>5} {way:>9} {reps:>4} {rates[way]:>7.1f} "
                    f"{f'({min(speeds):.0f}-{max(speeds):.0f})':>13} {rss:>12.1f} {'yes' if ok else 'NO':>3}"
                    f" {completion:>12.2f}",
                    flush=True,
                )
            if "reelay" in rates and "boto3" in rates:
                ratio = rates["reelay"] / rates["boto3"]
                print(f"{size_mib:>5}  reelay ÷ boto3 upload_fileobj = {ratio:.2f}", flush=True)
        print(f"bench took {time.monotonic() - began:.0f} s")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        way, url, endpoint, size, key, host = sys.argv[2:8]
        print(json.dumps(worker(way, url, endpoint, int(size), key, host)))
    else:
        main()
