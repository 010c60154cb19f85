"""The demo: one video per provider through a running local stack, each result checked end to end.

For every provider the demo submits a task through the HTTP API, watches it to the end, then reads
the object back from the local S3 and compares three SHA-256 digests: the one reelay recorded on
the task, the one of the bytes actually stored, and the one of the bytes the provider simulator
served. :func:`run_demo` works on an already started environment and returns a
:class:`DemoResult`; starting and stopping the stack is the caller's job
(:func:`reelay_cli.dev.running`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reelay.contract import OutputView, TaskView
from reelay_cli.api_client import TERMINAL_STATUSES, CliError, ReelayClient
from reelay_cli.backoff import poll_delays
from reelay_cli.dev import DevEnvironmentLike

DEFAULT_PROVIDERS: tuple[str, ...] = ("generate_task", "sorahk", "openai_videos")
DEMO_PROMPT = "A paper boat drifts down a rain-soaked street at dusk, neon reflections, slow dolly shot"
NOT_SUBMITTED = "not submitted"
TIMED_OUT = "timed out"


@dataclass(frozen=True)
class OutputCheck:
    """One output of a task and what the demo found when it read it back."""

    s3_uri: str
    bytes: int
    recorded_sha256: str
    stored_sha256: str | None
    """SHA-256 of the object read back from the local S3 (None when it could not be read)."""
    simulator_sha256: str | None
    """SHA-256 of what the simulator served for the provider task (None without a simulator)."""
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ProviderRun:
    """One provider's task in the demo, as it ended."""

    provider: str
    task_id: str | None
    status: str
    error: str | None = None
    provider_task_id: str | None = None
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded" and bool(self.outputs) and all(o.ok for o in self.outputs)


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo did; ``ok`` when every task succeeded and every digest matched."""

    api_url: str
    aws_endpoint: str
    bucket: str
    simulator_url: str | None
    runs: list[ProviderRun]
    elapsed_seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(run.ok for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, with the verdicts (``ok``) at every level."""
        body = asdict(self)
        for run, raw in zip(self.runs, body["runs"], strict=True):
            raw["ok"] = run.ok
            for output, raw_output in zip(run.outputs, raw["outputs"], strict=True):
                raw_output["ok"] = output.ok
        return {"ok": self.ok, **body}


def local_s3_client(env: DevEnvironmentLike) -> Any:
    """A boto3 S3 client for the local stack's moto endpoint.

    Fixed dummy credentials: moto accepts any, and the user's real ones have no business here.
    """
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env.stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="reelay-local",
        aws_secret_access_key="reelay-local",
    )


def run_demo(
    env: DevEnvironmentLike,
    client: ReelayClient,
    *,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    s3: Any | None = None,
    interval: float = 1.0,
    max_interval: float = 10.0,
    timeout: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
    on_update: Callable[[str, TaskView], None] | None = None,
) -> DemoResult:
    """Submit one task per provider on the started ``env``, watch them all, verify their outputs.

    ``client`` talks to ``env.stack.api_url``; ``s3`` reads the results bucket (default:
    :func:`local_s3_client`); ``on_update(provider, task)`` sees every change of status or progress.
    Pauses between rounds of polls grow from ``interval`` to ``max_interval`` with jitter.
    """
    started = time.monotonic()
    s3 = s3 if s3 is not None else local_s3_client(env)
    protocols = _protocols(client)
    runs: dict[str, ProviderRun] = {}
    pending: dict[str, TaskView] = {}

    for provider in providers:
        try:
            created = client.create_task({"provider": provider, "prompt": DEMO_PROMPT}).task
        except CliError as exc:
            runs[provider] = ProviderRun(provider, None, NOT_SUBMITTED, error=exc.message)
            continue
        pending[provider] = created
        if on_update:
            on_update(provider, created)

    deadline = started + timeout
    delays = poll_delays(first=interval, cap=max_interval)
    while pending:
        for provider, previous in list(pending.items()):
            task = client.get_task(previous.id)
            if on_update and (task.status, task.progress) != (previous.status, previous.progress):
                on_update(provider, task)
            pending[provider] = task
            if task.status in TERMINAL_STATUSES:
                runs[provider] = _finished(env, s3, protocols.get(provider, provider), pending.pop(provider))
        if pending and time.monotonic() >= deadline:
            for provider, task in pending.items():
                runs[provider] = ProviderRun(
                    provider,
                    task.id,
                    TIMED_OUT,
                    error=f"still {task.status} after {timeout:g} s",
                    provider_task_id=task.provider_task_id,
                )
            break
        if pending:
            sleep(next(delays))

    return DemoResult(
        api_url=env.stack.api_url,
        aws_endpoint=env.stack.aws_endpoint,
        bucket=env.stack.bucket,
        simulator_url=env.sim.url if env.sim is not None else None,
        runs=[runs[p] for p in providers],
        elapsed_seconds=time.monotonic() - started,
    )


def _protocols(client: ReelayClient) -> dict[str, str]:
    """Provider name → protocol, from the API; an unanswered call leaves the default (name = protocol)."""
    try:
        return {p.name: p.protocol for p in client.providers()}
    except CliError:
        return {}


def _finished(env: DevEnvironmentLike, s3: Any, protocol: str, task: TaskView) -> ProviderRun:
    error = task.error
    outputs = [_check_output(env, s3, protocol, task, output) for output in task.outputs]
    message = f"{error.code}: {error.message}" if error else None
    if task.status == "succeeded" and not outputs:
        message = "succeeded without any output"
    return ProviderRun(
        provider=task.provider,
        task_id=task.id,
        status=str(task.status),
        error=message,
        provider_task_id=task.provider_task_id,
        outputs=outputs,
    )


def _check_output(env: DevEnvironmentLike, s3: Any, protocol: str, task: TaskView, output: OutputView) -> OutputCheck:
    recorded = output.sha256
    problems: list[str] = []
    location = urlsplit(output.s3_uri)
    if location.scheme != "s3" or location.netloc != env.stack.bucket:
        problems.append(f"not in the results bucket {env.stack.bucket}")
    stored = _stored_sha256(s3, env.stack.bucket, location.path.lstrip("/"), problems)
    if stored is not None and stored != recorded:
        problems.append(f"stored object's sha256 {stored[:12]}… differs from the recorded {recorded[:12]}…")
    simulated = None
    if env.sim is not None:
        simulated = _simulator_sha256(env, protocol, task, problems)
        if simulated is not None and simulated != recorded:
            problems.append(f"simulator served sha256 {simulated[:12]}…, reelay recorded {recorded[:12]}…")
    return OutputCheck(
        s3_uri=output.s3_uri,
        bytes=output.bytes,
        recorded_sha256=recorded,
        stored_sha256=stored,
        simulator_sha256=simulated,
        problem="; ".join(problems) or None,
    )


def _stored_sha256(s3: Any, bucket: str, key: str, problems: list[str]) -> str | None:
    """Hash the object as it streams from S3, never holding it whole."""
    from botocore.exceptions import BotoCoreError, ClientError

    digest = hashlib.sha256()
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(1024 * 1024):
            digest.update(chunk)
    except (BotoCoreError, ClientError) as exc:
        problems.append(f"cannot read s3://{bucket}/{key}: {exc}")
        return None
    return digest.hexdigest()


def _simulator_sha256(env: DevEnvironmentLike, protocol: str, task: TaskView, problems: list[str]) -> str | None:
    provider_task_id = task.provider_task_id
    if env.sim is None or not provider_task_id:
        problems.append("task has no provider task id to ask the simulator about")
        return None
    try:
        return env.sim.video_bytes_sha256(protocol, provider_task_id)
    except (LookupError, ValueError) as exc:
        problems.append(f"simulator does not know {protocol} task {provider_task_id}: {exc}")
        return None
