"""What ``reelay dev`` prints holds no credential: a run through every provider, webhooks and refusals.

``reelay dev --client-auth apikey`` runs in a subprocess with reelay's logs at DEBUG and
Powertools' development mode on (as ``reelay dev`` always has it), and everything it writes to
stdout and stderr is kept. Meanwhile a caller with an API key reads its webhook secret, makes a
webhook endpoint and one task per provider with a webhook, and a forged key and a forged
callback token are refused. Afterwards none of the secrets that went by is in the output: the
caller's key and the forged one, the owner's webhook secret and the endpoint's, the providers'
API keys, and every callback token the providers were given.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.template_support import REPO

pytestmark = pytest.mark.integration

PROVIDERS = ("generate_task", "sorahk", "openai_videos")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def dev(tmp_path: Path, receiver: str) -> Iterator[tuple[str, Path]]:
    """A running ``reelay dev`` (its API URL) and the file its output goes to."""
    port = _free_port()
    output = tmp_path / "dev.log"
    env = {
        **os.environ,
        "REELAY_LOG_LEVEL": "DEBUG",
        "REELAY_ALLOWED_WEBHOOK_HOSTS": receiver,
        "REELAY_RECONCILE_EVERY_SECONDS": "2",
    }
    command = [str(Path(sys.executable).parent / "reelay"), "dev", "--client-auth", "apikey"]
    command += ["--port", str(port), "--ui-port", "0", "--repo", str(REPO)]
    with output.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        api = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, output.read_text(errors="replace")[-3000:]
                try:
                    httpx.get(f"{api}/v1/providers", timeout=5)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "reelay dev did not start in 120 s"
                    time.sleep(0.5)
            yield api, output
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.timeout(300)
def test_reelay_devs_output_holds_none_of_the_secrets_that_went_by(dev: tuple[str, Path], receiver: str) -> None:
    api, output = dev
    made = httpx.post(f"{api}/_reelay/keys", json={"owner": "alice", "name": "logs"}, timeout=30)
    assert made.status_code in (200, 201), made.text
    key = str(made.json()["key"])
    http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    webhook_url = f"http://{receiver}/hook"

    # Given the owner's webhook secret, a webhook endpoint, and a task per provider with a webhook
    secrets_answer = http.get("/v1/webhook-secret")
    assert secrets_answer.status_code == 200, secrets_answer.text
    webhook_secrets = [str(s) for s in secrets_answer.json()["secrets"]]
    endpoint = http.post(
        "/v1/webhook_endpoints", json={"name": "logs", "url": webhook_url, "event_types": ["video.completed"]}
    )
    assert endpoint.status_code == 200, endpoint.text
    endpoint_secret = str(endpoint.json()["signing_secret"])
    ids = []
    for provider in PROVIDERS:
        answer = http.post(
            "/v1/tasks", json={"provider": provider, "prompt": "a lighthouse", "webhook_url": webhook_url}
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    deadline = time.monotonic() + 120
    for task_id in ids:
        while (status := http.get(f"/v1/tasks/{task_id}").json()["status"]) not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"{task_id} still {status}"
            time.sleep(0.5)
        assert status == "succeeded"
    # And a forged key and a forged callback token, refused
    forged_key = "rk_forged_" + "x" * 40
    assert httpx.get(f"{api}/v1/tasks", headers={"Authorization": f"Bearer {forged_key}"}).status_code == 401
    forged_token = "forged-token-" + "y" * 30
    assert httpx.post(f"{api}/callbacks/generate_task/{ids[0]}?t={forged_token}", content=b"{}").status_code == 401
    sim = re.search(rb"provider simulator\s+(http://\S+)", output.read_bytes())
    assert sim, "reelay dev printed no simulator URL"
    state = httpx.get(f"{sim.group(1).decode()}/_sim/state", timeout=30).json()
    provider_keys = [str(k) for k in state["api_keys"].values()]
    requests = httpx.get(f"{sim.group(1).decode()}/_sim/requests", timeout=30).json()
    tokens = {
        t
        for u in re.findall(r"https?://[^\s\"']+", json.dumps(requests))
        for t in parse_qs(urlsplit(u).query).get("t", [])
    }
    time.sleep(3)  # the last webhook and notify lines

    # Then the output (reelay's DEBUG logs included) names the tasks but none of the secrets
    printed = output.read_text(errors="replace")
    assert all(task_id in printed for task_id in ids), "reelay dev's output shows no task: nothing was logged?"
    assert tokens, "the providers were given no callback token"
    secrets = {
        "the caller's API key": [key],
        "a forged API key": [forged_key],
        "a forged callback token": [forged_token],
        "the owner's webhook secret": webhook_secrets,
        "the endpoint's signing secret": [endpoint_secret],
        "a provider's API key": provider_keys,
        "a callback token": sorted(tokens),
    }
    leaked = {name: n for name, values in secrets.items() if (n := sum(v in printed for v in values))}
    assert leaked == {}, f"secrets in reelay dev's output: {leaked}"
