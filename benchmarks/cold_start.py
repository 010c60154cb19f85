"""Cold start of the built artifact: each handler's import plus its first call's wiring, against
``import boto3``, paired run by run.

The layout is what ``sam build`` makes and Lambda loads: the function's code, then the core layer
as ``make build`` makes it (``layers/core/build_layer.py``, into ``.reelay/bench-sam-layer``,
with this machine's wheels instead of arm64's so that pydantic-core loads here), then the
runtime's own packages (boto3, botocore and their dependencies, copied from this venv and
precompiled, as the runtime's are). Each measurement is a fresh, isolated python3.13
(``-I -S``) whose environment is a Lambda's: ``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_EXECUTION_ENV``, ``LAMBDA_TASK_ROOT``, ``_X_AMZN_TRACE_ID`` and the rest, so Powertools
and the X-Ray SDK take their Lambda paths (tracing on, its patches applied), plus the
function's own environment as template.yaml gives it (Globals and the function's variables,
resolved with placeholder names and URLs; the three providers configured).

A run measures ``import app`` and then the wiring the handler's first request builds, no
network (``WIRING``): the container services it touches, the provider it calls (its HTTP
client), and for the API the route's request validation, which Powertools builds on a route's
first request. Each run of a handler is paired with an ``import boto3`` run just before it,
and the ratio is taken per pair, so a busy machine slows both sides alike. The medians are
printed; the target is a ratio of at most 2.0.

Not measured: the secrets' reads (one Secrets Manager call each, on first use, cached by
Powertools Parameters): the provider keys are read when a provider is first called, after
the wiring; the callback secret (``CALLBACK_SECRET_ARN``) is replaced by a value here.

``--floor`` measures the libraries alone, the same way: boto3 with a DynamoDB resource, then
pydantic with one model, then Powertools' Logger, Tracer and Metrics, each on top of the last.

    .venv/bin/python benchmarks/cold_start.py [--runs 9] [--only api,submit] [--floor]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(p.name for p in (REPO / "functions").iterdir() if (p / "app.py").exists())
SAM_BUILD = REPO / ".aws-sam" / "build"
BENCH_LAYER = REPO / ".reelay" / "bench-sam-layer"
RUNTIME = REPO / ".reelay" / "bench-runtime"
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
TARGET_RATIO = 2.0

# What each handler's first request builds (functions/<name>/app.py and the services it calls),
# without calling anything: the container services it touches and the clients its calls make
# (boto3 and httpx clients made on first use are touched here, where the first request uses
# them). ``route`` (PROBE) is an HTTP route's request validation, built by Powertools on the
# route's first request; ``provider`` the adapter of a task's provider (``.client``: its HTTP
# client, for a request that calls the provider).
WIRING = {
    # POST /v1/tasks: the task service, the requested provider (validate, no call), the route's
    # body model; the task is written (DynamoDB) and queued (SQS).
    "api": "app.container.tasks; provider(app.container); route(app.app, 'create_task')",
    # One GetItem of the key's hash.
    "authorizer": "app.container.authorizer",
    # A manifest's arrival (an S3 event through EventBridge): the runner heads and splits it.
    "batch": "app.container.batch_runner",
    # The token, then the provider's status call, then the tracker's transition.
    "callback": "app.container.callbacks; provider(app.container).client",
    # The copy (the fetcher's and the bucket's clients), the task's provider (result headers).
    "ingest": "app.container.ingest; app.container.ingest_queue; provider(app.container); "
    "app.container.guard._client; app.container.bucket._s3",
    # The event (EventBridge), then the task's webhook (the sender's fetcher).
    "notify": "app.container.notifier; app.container.notify_queue; app.container.notifier._sender._fetcher._client",
    # A polled provider's status call, the tracker.
    "poll": "app.container.poller; provider(app.container, 'sorahk').client",
    # A run: its overdue tasks' looks at their provider.
    "reconcile": "app.container.reconciler; provider(app.container).client",
    # The paid create: the submitter (every provider), the record budget, the provider's client.
    "submit": "app.container.submitter; app.container.submit_queue; app.container.settings.submit_record_seconds; "
    "provider(app.container).client",
}
# The template's parameters that the bench sets: every provider configured (placeholder URLs).
PARAMETERS = {"GenerateTaskBaseUrl": "https://gt.example", "OpenaiVideosBaseUrl": "https://ov.example/sora"}
# Placeholder physical values of the resources a function's environment names, by type.
ACCOUNT = "123456789012"
PHYSICAL = {
    "AWS::SQS::Queue": lambda logical: f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/reelay-{logical}",
    "AWS::SecretsManager::Secret": lambda logical: f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{logical}",
    "AWS::StepFunctions::StateMachine": lambda logical: f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{logical}",
}

LAMBDA_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "_AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1",
    "_AWS_XRAY_DAEMON_PORT": "2000",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
    "LANG": "en_US.UTF-8",
    "TZ": ":UTC",
}
PROBE = """
import sys, time, json


def provider(container, name="generate_task"):
    return container.providers.get(name)


def route(resolver, operation_id):
    found = [r for r in resolver._static_routes + resolver._dynamic_routes if r.operation_id == operation_id]
    return [r.dependant for r in found]


sys.path[:0] = sys.argv[2].split(":")
t0 = time.perf_counter()
exec(sys.argv[1])
print(json.dumps((time.perf_counter() - t0) * 1000))
"""


# ``--floor``: what the libraries every function is built on cost by themselves, each step on top
# of the one before, measured as the handlers are (no reelay module imported).
_FLOOR_STEPS = (
    ("boto3 and a DynamoDB resource", "import boto3\nboto3.resource('dynamodb')"),
    ("+ import pydantic", "import pydantic"),
    ("+ one small pydantic model", "class M(pydantic.BaseModel):\n    a: int\n    b: str | None = None"),
    ("+ Powertools Logger", "from aws_lambda_powertools import Logger\nLogger()"),
    ("+ Tracer (X-Ray, botocore patched)", "import aws_lambda_powertools as pt\npt.Tracer(patch_modules=['botocore'])"),
    ("+ Metrics", "from aws_lambda_powertools import Metrics\nMetrics()"),
)


def python313() -> str:
    for candidate in [*map(str, sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))), "python3.13"]:
        found = shutil.which(candidate)
        if found and subprocess.run([found, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return found
    raise SystemExit("python3.13 (the Lambda runtime's interpreter) is needed")


def layer(python: str) -> Path:
    """The core layer as sam build makes it (this machine's wheels), rebuilt when its sources changed."""
    fingerprint = _layer_fingerprint()
    done = BENCH_LAYER / ".done"
    if not done.exists() or done.read_text() != fingerprint:
        shutil.rmtree(BENCH_LAYER, ignore_errors=True)
        build = [python, str(REPO / "layers/core/build_layer.py"), "--host-platform", str(BENCH_LAYER)]
        subprocess.run(build, check=True)
        done.write_text(fingerprint)
    return BENCH_LAYER / "python"


def _layer_fingerprint() -> str:
    """A hash of what the layer is built from: the reelay package, the pins and the build script."""
    core = REPO / "layers" / "core"
    digest = hashlib.sha256()
    for path in sorted([*(core / "reelay").rglob("*.py"), core / "requirements.txt", core / "build_layer.py"]):
        digest.update(str(path.relative_to(core)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def runtime(python: str) -> Path:
    """The runtime's boto3 and botocore (and their dependencies), precompiled as the runtime's are."""
    if (RUNTIME / ".done").exists():
        return RUNTIME
    shutil.rmtree(RUNTIME, ignore_errors=True)
    RUNTIME.mkdir(parents=True)
    site = Path(str(importlib.metadata.distribution("botocore").locate_file("")))
    for name in RUNTIME_PROVIDED:
        source = site / name
        if source.is_dir():
            shutil.copytree(source, RUNTIME / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(site / f"{name}.py", RUNTIME / f"{name}.py")
    code = (
        "import compileall, py_compile, sys; sys.exit(not compileall.compile_dir(sys.argv[1], quiet=1, workers=0, "
        "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH))"
    )
    subprocess.run([python, "-c", code, str(RUNTIME)], check=True)
    (RUNTIME / ".done").write_text("ok")
    return RUNTIME


def function_dir(name: str) -> Path:
    logical = f"{name.capitalize()}Function"
    built = SAM_BUILD / logical
    return built if (built / "app.py").exists() else REPO / "functions" / name


def template_environments() -> dict[str, dict[str, str]]:
    """Each function's environment as deployed (template.yaml, SAM's Globals merged), by name.

    The callback secret is a value here instead of ``CALLBACK_SECRET_ARN`` (its read is a
    network call, not wiring)."""
    from reelay_local.template import Physical, Resolver, translate

    cloud = translate(REPO / "template.yaml", PARAMETERS, stack_name="reelay")

    def physical(logical: str) -> Physical:
        make = PHYSICAL.get(cloud.resources[logical]["Type"], lambda logical: f"reelay-{logical.lower()}")
        return Physical(make(logical))

    resolver = Resolver(cloud, physical, stack_name="reelay")
    environments = {}
    for logical, function in cloud.of_type("AWS::Lambda::Function"):
        variables = resolver.resolve((function["Properties"].get("Environment") or {}).get("Variables") or {})
        env = {key: str(value) for key, value in variables.items()}
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(function["Properties"].get("MemorySize", 128))
        if env.pop("CALLBACK_SECRET_ARN", None) is not None:
            env["CALLBACK_SECRET"] = "bench-secret-bench-secret-bench!"
        environments[logical.removesuffix("Function").lower()] = env
    return environments


def measure(python: str, code: str, paths: list[Path], env: dict[str, str]) -> float:
    out = subprocess.run(
        [python, "-I", "-S", "-c", PROBE, code, ":".join(map(str, paths))],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"probe failed: {code!r}\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--only", default="", help="comma-separated function names (default: every one)")
    parser.add_argument("--floor", action="store_true", help="the libraries' own cost, without reelay's code")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or FUNCTIONS
    unknown = set(names) - set(FUNCTIONS) or set(FUNCTIONS) - set(WIRING)
    if unknown:
        raise SystemExit(f"no function or no WIRING entry: {', '.join(sorted(unknown))}")
    python = python313()
    environments = template_environments()
    the_layer, the_runtime = layer(python), runtime(python)
    print(f"layer: {the_layer.relative_to(REPO)}   runtime packages: {the_runtime.relative_to(REPO)}")
    if args.floor:
        floor(python, [the_layer, the_runtime], environments[names[0]], args.runs)
        return
    print(f"{'function':11} {'handler+wiring ms':>18} {'import boto3 ms':>16} {'ratio':>7}  (medians of {args.runs})")
    worst = 0.0
    for name in names:
        code_dir = function_dir(name)
        env = {
            **LAMBDA_ENV,
            **environments[name],
            "AWS_LAMBDA_FUNCTION_NAME": f"reelay-{name}",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": "app.lambda_handler",
            "PATH": os.environ.get("PATH", ""),
        }
        paths = [code_dir, the_layer, the_runtime]
        handler_ms, boto_ms, ratios = [], [], []
        for _ in range(args.runs):
            boto = measure(python, "import boto3", [the_runtime], env)
            handler = measure(python, f"import app\n{WIRING[name]}", paths, env)
            boto_ms.append(boto)
            handler_ms.append(handler)
            ratios.append(handler / boto)
        ratio = statistics.median(ratios)
        worst = max(worst, ratio)
        print(
            f"{name:11} {statistics.median(handler_ms):>18.1f} {statistics.median(boto_ms):>16.1f} {ratio:>7.2f}"
            f"{'' if ratio <= TARGET_RATIO else '  over target'}"
        )
    print(f"worst ratio {worst:.2f} (target <= {TARGET_RATIO})")


def floor(python: str, paths: list[Path], function_env: dict[str, str], runs: int) -> None:
    """The ratio of the libraries alone (``_FLOOR_STEPS``, cumulative), paired with ``import boto3``."""
    env = {**LAMBDA_ENV, **function_env, "AWS_LAMBDA_FUNCTION_NAME": "reelay-floor", "LAMBDA_TASK_ROOT": "/var/task"}
    print(f"{'libraries, each step on top of the ones above':45} {'ratio':>7}  (medians of {runs})")
    code = ""
    for label, step in _FLOOR_STEPS:
        code += step + "\n"
        ratios = []
        for _ in range(runs):
            boto = measure(python, "import boto3", [paths[-1]], env)
            ratios.append(measure(python, code, paths, env) / boto)
        print(f"{label:45} {statistics.median(ratios):>7.2f}")


if __name__ == "__main__":
    main()
