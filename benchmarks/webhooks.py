"""Webhooks and events on the local stack: every delivery verified by the ``standardwebhooks`` library.

    .venv/bin/python benchmarks/webhooks.py [--tasks 100] [--flaky-share 0.3] [--failed-share 0.1]
    make webhooks

Starts two loopback receivers (``Receiver``): one listed in ``REELAY_ALLOWED_WEBHOOK_HOSTS``, and
one not listed (a "refused" receiver: any request that reaches it is a delivery to a refused URL).
Then ``reelay_local.DevEnvironment`` (real handlers on moto, the provider simulator) with a short
webhook schedule (``REELAY_WEBHOOK_RETRY_SECONDS``, 1 s between attempts) and
``REELAY_LOCAL_EVENTS_FILE``. It submits ``--tasks`` tasks across the three providers, each with a
``webhook_url`` on the listed receiver; ``--flaky-share`` of them on a path where the receiver
answers the first two attempts with 503 (the second with ``Retry-After: 1``); ``--failed-share``
of them with a prompt the simulator fails (so ``Task Failed`` is told too). Halfway through it
rotates the owner's secret (``POST /v1/webhook-secret/rotate``); from then on the receiver knows
both secrets, and every delivery that carries two signatures must verify with each of them alone.
It also submits webhook URLs that must be refused at input (the unlisted loopback receiver, a
private and a metadata address, ``localhost``, plain http to a public name): each must be a 422.

It waits until every task is terminal and its webhook final, then prints: tasks, terminal,
accepted deliveries (the receiver verified the signature and answered 2xx), tasks with exactly one
accepted delivery by ``webhook-id``, duplicate accepted deliveries, verification failures,
deliveries signed after the rotation that both secrets verify, requests the refused receiver got,
refused URLs answered 422, attempts recorded on the tasks (flaky: 3 each), and EventBridge events
on the stack's bus per terminal task (in the events file). It exits 1 when any target is missed:
all terminal, one accepted delivery per task, 0 duplicates, 0 verification failures, 0 requests to
the refused receiver, every refused URL a 422, exactly one event per terminal task.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

REPO = Path(__file__).resolve().parents[1]
PROVIDER_BODIES = (
    {"provider": "generate_task", "duration": 4},
    {"provider": "sorahk", "duration": 10},
    {"provider": "openai_videos", "orientation": "landscape"},
)
FLAKY_FAILURES = 2  # the first two attempts of a flaky task's webhook answer 503


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies each delivery with the ``standardwebhooks`` library.

    Paths under ``/flaky/`` answer the first ``FLAKY_FAILURES`` attempts of each ``webhook-id`` with
    503 (the last of them with ``Retry-After: 1``). Any other delivery is verified against the
    secrets the receiver holds (``secrets``): verified → 204 and counted in ``accepted``; not → 400
    and counted in ``failures``. A delivery with two signatures must verify with each secret alone.
    """

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.accepted: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.dual_signed = 0  # deliveries with two signatures, each verified by its secret alone
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, extra = receiver.handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = lowered.get("webhook-id", "")
        with self._lock:
            self.attempts[msg_id] += 1
            attempt = self.attempts[msg_id]
            self.requests.append({"path": path, "webhook_id": msg_id, "attempt": attempt})
            secrets = list(self.secrets)
        if path.startswith("/flaky/") and attempt <= FLAKY_FAILURES:
            return 503, ({"retry-after": "1"} if attempt == FLAKY_FAILURES else {})
        verified = [secret for secret in secrets if _verifies(secret, body, headers)]
        signatures = len(lowered.get("webhook-signature", "").split())
        with self._lock:
            if not verified or (signatures > 1 and len(verified) < min(signatures, len(secrets))):
                self.failures.append(msg_id)
                return 400, {}
            if signatures > 1:
                self.dual_signed += 1
            self.accepted[msg_id] += 1
        return 204, {}


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def environment(receiver: Receiver, events_file: Path) -> dict[str, str]:
    """What ``reelay dev`` reads for this run (a variable already set wins)."""
    values = {
        "REELAY_ALLOWED_WEBHOOK_HOSTS": receiver.host_port,
        "REELAY_WEBHOOK_RETRY_SECONDS": "1,1,1,1,1,1,1",
        "REELAY_LOCAL_EVENTS_FILE": str(events_file),
        "REELAY_LOG_LEVEL": "WARNING",
        "REELAY_RECONCILE_EVERY_SECONDS": "5",
    }
    return {key: os.environ.get(key, value) for key, value in values.items()}


@contextlib.contextmanager
def local_stack(variables: dict[str, str]) -> Iterator[Any]:
    """A started ``DevEnvironment`` with ``variables`` exported while it runs."""
    from reelay_local import DevEnvironment

    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        with DevEnvironment(REPO) as env:
            yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refused_urls(refused: Receiver) -> list[str]:
    """Webhook URLs that must be refused at input (422)."""
    return [
        refused.url("/hook"),  # loopback, not listed
        "https://10.0.0.7/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # metadata service
        "https://localhost/hook",  # a loopback name
        "http://hooks.example.com/hook",  # plain http to a public name
    ]


def run(
    http: httpx.Client,
    receiver: Receiver,
    refused: Receiver,
    events_file: Path,
    *,
    tasks: int = 100,
    flaky_share: float = 0.3,
    failed_share: float = 0.1,
    timeout: float = 600.0,
    out: Any = sys.stdout,
) -> dict[str, int]:
    """Submit, wait, and count (see the module docstring); the counts by name."""
    receiver.secrets = http.get("/v1/webhook-secret").json()["secrets"][:1]
    refused_422 = 0
    for url in refused_urls(refused):
        answer = http.post("/v1/tasks", json={"provider": "generate_task", "prompt": "refused", "webhook_url": url})
        refused_422 += answer.status_code == 422
    flaky_every = round(1 / flaky_share) if flaky_share else 0
    failed_every = round(1 / failed_share) if failed_share else 0
    ids: list[str] = []
    flaky: set[str] = set()
    rotated_after = tasks // 2
    started = time.monotonic()
    for i in range(tasks):
        if i == rotated_after:
            both = http.post("/v1/webhook-secret/rotate").json()["secrets"]
            receiver.secrets = both
        is_flaky = bool(flaky_every) and i % flaky_every == 0 and len(flaky) < round(tasks * flaky_share)
        fails = bool(failed_every) and i % failed_every == 1
        body = dict(PROVIDER_BODIES[i % len(PROVIDER_BODIES)])
        body["prompt"] = f"webhook run {i}" + (" [sim:fail]" if fails else "")
        body["webhook_url"] = receiver.url(f"/{'flaky' if is_flaky else 'ok'}/{i}")
        answer = http.post("/v1/tasks", json=body)
        answer.raise_for_status()
        ids.append(answer.json()["id"])
        if is_flaky:
            flaky.add(answer.json()["id"])
    views = _wait(http, ids, started, timeout, out)
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    task_events = Counter(e["detail"]["id"] for e in events if e["detail-type"] in ("Task Succeeded", "Task Failed"))
    terminal = [v for v in views.values() if v["status"] in ("succeeded", "failed")]
    attempts = {tid: len((v.get("webhook") or {}).get("attempts") or []) for tid, v in views.items()}
    return {
        "tasks": tasks,
        "flaky": len(flaky),
        "terminal": len(terminal),
        "failed": sum(v["status"] == "failed" for v in terminal),
        "deliveries_received": len(receiver.requests),
        "accepted": sum(receiver.accepted.values()),
        "exactly_one_accepted": sum(receiver.accepted[f"msg_{tid}"] == 1 for tid in ids),
        "duplicates_accepted": sum(max(0, n - 1) for n in receiver.accepted.values()),
        "verification_failures": len(receiver.failures),
        "dual_signed_verified_by_each": receiver.dual_signed,
        "webhooks_delivered": sum((v.get("webhook") or {}).get("outcome") == "delivered" for v in views.values()),
        "flaky_with_3_attempts": sum(attempts[tid] == FLAKY_FAILURES + 1 for tid in flaky),
        "others_with_1_attempt": sum(attempts[tid] == 1 for tid in ids if tid not in flaky),
        "refused_urls": len(refused_urls(refused)),
        "refused_urls_422": refused_422,
        "requests_to_refused_receiver": len(refused.requests),
        "events_on_bus": sum(task_events.values()),
        "tasks_with_one_event": sum(task_events[tid] == 1 for tid in ids),
        "seconds": round(time.monotonic() - started),
    }


def _wait(http: httpx.Client, ids: list[str], started: float, timeout: float, out: Any) -> dict[str, dict[str, Any]]:
    """Every task's view once it is terminal and its webhook final (or at the timeout)."""
    views: dict[str, dict[str, Any]] = {}
    pending = list(ids)
    while pending and time.monotonic() - started < timeout:
        still = []
        for task_id in pending:
            view = http.get(f"/v1/tasks/{task_id}").json()
            views[task_id] = view
            outcome = (view.get("webhook") or {}).get("outcome")
            if view["status"] not in ("succeeded", "failed") or outcome in (None, "pending", "retrying"):
                still.append(task_id)
        if len(still) != len(pending):
            out.write(f"  {len(ids) - len(still)}/{len(ids)} told after {time.monotonic() - started:.0f} s\n")
            out.flush()
        pending = still
        if pending:
            time.sleep(1.0)
    return views


def targets_missed(counts: dict[str, int]) -> list[str]:
    """Which targets the counts miss (empty: all met)."""
    missed = []
    tasks = counts["tasks"]
    for name, wanted in (
        ("terminal", tasks),
        ("exactly_one_accepted", tasks),
        ("duplicates_accepted", 0),
        ("verification_failures", 0),
        ("requests_to_refused_receiver", 0),
        ("refused_urls_422", counts["refused_urls"]),
        ("tasks_with_one_event", tasks),
        ("events_on_bus", counts["terminal"]),
        ("flaky_with_3_attempts", counts["flaky"]),
    ):
        if counts[name] != wanted:
            missed.append(f"{name} is {counts[name]}, wanted {wanted}")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks (default 100)")
    parser.add_argument("--flaky-share", type=float, default=0.3, help="share whose first 2 attempts fail (0.3)")
    parser.add_argument("--failed-share", type=float, default=0.1, help="share of tasks that fail (0.1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up (600)")
    args = parser.parse_args(argv)
    receiver, refused = Receiver().start(), Receiver().start()
    events_file = Path(tempfile.mkdtemp(prefix="reelay-webhooks-")) / "events.jsonl"
    events_file.touch()
    try:
        with (
            local_stack(environment(receiver, events_file)) as env,
            httpx.Client(base_url=env.stack.api_url, timeout=30) as http,
        ):
            print(f"webhooks: {args.tasks} tasks, flaky share {args.flaky_share}; events in {events_file}")
            counts = run(
                http,
                receiver,
                refused,
                events_file,
                tasks=args.tasks,
                flaky_share=args.flaky_share,
                failed_share=args.failed_share,
                timeout=args.timeout,
            )
    finally:
        receiver.stop()
        refused.stop()
    width = max(len(k) for k in counts)
    for name, value in counts.items():
        print(f"  {name:<{width}}  {value}")
    missed = targets_missed(counts)
    for line in missed:
        print(f"MISSED: {line}")
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
