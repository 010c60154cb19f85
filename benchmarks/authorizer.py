"""The API key authorizer's latency on the local stack, cached and uncached, and its cost on paper.

Starts ``reelay dev --client-auth apikey`` in-process (``DevEnvironment``), makes a key at the
gateway's ``/_reelay/keys``, then measures, ``--requests`` times each:

- the authorizer's decision as the local gateway takes it (``reelay_local.local_authorizer.authorize``):
  *uncached* (the cache is emptied before each call, so the real handler runs: SHA-256, one
  DynamoDB ``GetItem`` against moto) and *cached* (API Gateway's result cache answers);
- a whole ``GET /v1/videos`` over loopback through the gateway, with the cache emptied before each
  request and with it warm, so the authorizer's share of a request is visible.

It prints p50/p90 of each and the cost per 1,000 authorizer invocations in AWS (Lambda arm64 at
the function's memory, billed per ms, plus one eventually consistent on-demand read), next to
the HTTP API's own price per 1,000 requests. Not part of ``make test`` (``make bench-authorizer``).

    .venv/bin/python benchmarks/authorizer.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]

# us-east-1 list prices (2026): Lambda arm64 per GB-second and per request, DynamoDB on-demand per
# read request unit (an eventually consistent read of an item under 4 KB is half a unit), HTTP API.
LAMBDA_ARM_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1_000_000
DYNAMODB_RRU = 0.125 / 1_000_000
HTTP_API_REQUEST = 1.00 / 1_000_000
AUTHORIZER_MEMORY_GB = 256 / 1024


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def _timed(call: Callable[[], object], runs: int, before: Callable[[], None] = lambda: None) -> list[float]:
    samples = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="Requests per measurement.")
    args = parser.parse_args()
    os.environ.setdefault("REELAY_LOG_LEVEL", "WARNING")

    from reelay_local import DevEnvironment
    from reelay_local.local_authorizer import authorize

    with DevEnvironment(REPO, client_auth="apikey", parameter_overrides={"ApiKeyCacheSeconds": "300"}) as env:
        gateway = env.stack._gateway  # the benchmark looks inside the local gateway
        assert gateway is not None
        url = env.stack.api_url
        key = httpx.post(f"{url}/_reelay/keys", json={"owner": "bench"}, timeout=30).json()["key"]
        route = next(r for r in gateway.routes if r.method == "GET" and r.path == "/v1/videos")
        config = route.lambda_authorizer
        assert config is not None
        event = {"headers": {"authorization": f"Bearer {key}"}, "rawPath": "/v1/videos", "requestContext": {}}
        cache = gateway.authorizer_cache

        def empty_cache() -> None:
            cache.clear()

        def decide() -> None:
            assert authorize(config, event, env.stack.invoke, cache).allowed

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:

            def request() -> None:
                assert http.get("/v1/videos?limit=1").status_code == 200

            for _ in range(10):  # warm: imports, connections, moto's first answers
                empty_cache()
                request()
            uncached = _timed(decide, args.requests, empty_cache)
            cached = _timed(decide, args.requests)
            request_uncached = _timed(request, args.requests, empty_cache)
            request_cached = _timed(request, args.requests)

    rows = [
        ("authorizer decision, uncached (handler + GetItem)", uncached),
        ("authorizer decision, cached", cached),
        ("GET /v1/videos, authorizer uncached", request_uncached),
        ("GET /v1/videos, authorizer cached", request_cached),
    ]
    print(f"{'local stack, ' + str(args.requests) + ' requests each':<52} {'p50 ms':>8} {'p90 ms':>8}")
    for name, samples in rows:
        p50, p90 = _percentiles(samples)
        print(f"{name:<52} {p50:8.3f} {p90:8.3f}")

    # On paper: a warm arm64 invocation of the handler (a GetItem in-region is single-digit ms;
    # take the local p50, which includes moto over loopback, rounded up to whole ms, at least 5).
    billed_ms = max(5.0, float(int(_percentiles(uncached)[0]) + 1))
    per_invocation = LAMBDA_REQUEST + billed_ms / 1000 * AUTHORIZER_MEMORY_GB * LAMBDA_ARM_GB_SECOND
    per_invocation += 0.5 * DYNAMODB_RRU
    print()
    print(f"cost per 1,000 authorizer invocations (AWS, {billed_ms:.0f} ms billed): ${1000 * per_invocation:.5f}")
    print(f"cost per 1,000 HTTP API requests (the API itself): ${1000 * HTTP_API_REQUEST:.5f}")
    print(
        "with the 60 s cache, a key calling once a second invokes the authorizer once a minute: "
        f"${1000 * per_invocation / 60:.6f} per 1,000 requests"
    )


if __name__ == "__main__":
    main()
