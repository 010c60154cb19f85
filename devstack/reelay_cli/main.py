"""``reelay``: the command line of reelay.

Commands are thin: they turn options into one call of :class:`~reelay_cli.api_client.ReelayClient`
(or of the local stack) and hand the answer to :mod:`reelay_cli.output`. Their dependencies
(HTTP transport, sleep, the local stack, S3, the browser, the web page's server) come from one
:class:`Wiring`, given to :func:`create_app`; tests give fakes.

Output: rich tables on a terminal; plain tab-separated lines, untruncated, when stdout is not a
terminal; ``--json`` (before or after the command) prints the API's contract models — one object,
or JSON Lines for ``list``, ``providers`` and ``download``.
"""

from __future__ import annotations

import functools
import os
import re
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from reelay.contract import TaskView
from reelay_cli import output
from reelay_cli.api_client import CLI_VERSION, DEFAULT_API_URL, DEFAULT_PORT, CliError, ReelayClient, TokenSource
from reelay_cli.batches import batch_progress, file_digest, manifest_name, render_batch
from reelay_cli.demo import DEFAULT_PROVIDERS, local_s3_client, run_demo
from reelay_cli.dev import (
    DevEnvironmentLike,
    EnvironmentFactory,
    block_until_interrupted,
    find_repo_root,
    open_environment,
    running,
)
from reelay_cli.keys import key_admin
from reelay_cli.ui_server import DEFAULT_UI_PORT, UiServer, serve_ui

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CODES = """Exit codes: 0 success; 1 an API error, a failed task (`watch`, `--watch`), a failed demo;
2 usage errors, an unreachable API or stack; 3 `watch --timeout` ran out; 130 Ctrl-C."""


class Orientation(StrEnum):
    portrait = "portrait"
    landscape = "landscape"


class Resolution(StrEnum):
    p720 = "720p"
    p1080 = "1080p"


class Status(StrEnum):
    queued = "queued"
    submitted = "submitted"
    running = "running"
    ingesting = "ingesting"
    succeeded = "succeeded"
    failed = "failed"


class ClientAuth(StrEnum):
    none = "none"
    jwt = "jwt"
    apikey = "apikey"


UiFactory = Callable[[Callable[[], ReelayClient], int], UiServer]


@dataclass(frozen=True)
class Wiring:
    """Everything the commands depend on outside themselves; tests replace what they need.

    ``tty`` forces the terminal/plain choice (None: ask stdout); ``open_browser`` is
    ``webbrowser.open`` (False when no browser could be started).
    """

    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    environment: EnvironmentFactory = open_environment
    s3: Callable[[DevEnvironmentLike], Any] = local_s3_client
    wait_for_interrupt: Callable[[], None] = block_until_interrupted
    open_browser: Callable[[str], bool] = webbrowser.open
    tty: bool | None = None
    ui: UiFactory = serve_ui


@dataclass
class Session:
    """The global options of one invocation, and the way to a client built from them."""

    api_url: str
    token: str | None
    sign: bool
    as_json: bool
    wiring: Wiring

    def __post_init__(self) -> None:
        # force_terminal=None asks the stream; rich then also honours NO_COLOR / TERM=dumb.
        self.out = Console(force_terminal=self.wiring.tty, soft_wrap=False)
        self.err = Console(stderr=True, force_terminal=self.wiring.tty)

    @property
    def on_terminal(self) -> bool:
        return self.out.is_terminal

    def json_wanted(self, local: bool) -> bool:
        """``--json`` given before the command or after it."""
        self.as_json = self.as_json or local
        return self.as_json

    def client(self, *, api_url: str | None = None, token: TokenSource | None = None) -> ReelayClient:
        return ReelayClient(
            api_url or self.api_url,
            token=token if token is not None else self.token,
            sign=self.sign,
            transport=self.wiring.transport,
            sleep=self.wiring.sleep,
        )


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A :class:`CliError` becomes its message on stderr and its exit code; Ctrl-C exits 130."""

    @functools.wraps(command)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            output.render_error(Console(stderr=True), exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("[dim]interrupted[/]")
            raise typer.Exit(130) from None

    return guarded


def _session(ctx: typer.Context) -> Session:
    session = ctx.find_object(Session)
    if session is None:  # only when a command is invoked without the app's callback
        raise CliError("internal: no session")
    return session


# --- shared option types ----------------------------------------------------------------------

TaskIdArg = Annotated[str, typer.Argument(help="Task id (tsk_...).", show_default=False)]
Interval = Annotated[
    float,
    typer.Option(min=0, help="First pause between polls (s); each next one 1.5 times longer, up to --max-interval."),
]
MaxInterval = Annotated[float, typer.Option(min=0, help="Longest pause between polls (s).")]
WatchTimeout = Annotated[
    float | None, typer.Option("--timeout", min=0, help="Give up after this many seconds (exit 3).", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON (see `reelay --help`).")]
RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo", help="The reelay checkout (default: the one this CLI is installed from).", show_default=False
    ),
]


# --- commands ---------------------------------------------------------------------------------


def submit(
    ctx: typer.Context,
    provider: Annotated[
        str,
        typer.Option(
            help="Configured provider, e.g. generate_task; or auto: the first capable provider by priority, "
            "free capacity and price, failing over before any paid call.",
            show_default=False,
        ),
    ],
    prompt: Annotated[str, typer.Option(help="What the video shows.", show_default=False)],
    image_url: Annotated[str | None, typer.Option(help="Reference image (image-to-video).")] = None,
    duration: Annotated[int | None, typer.Option(min=1, help="Seconds; see `reelay providers`.")] = None,
    orientation: Annotated[Orientation | None, typer.Option(help="portrait or landscape.")] = None,
    resolution: Annotated[Resolution | None, typer.Option(help="720p or 1080p, where offered.")] = None,
    model: Annotated[str | None, typer.Option(help="Provider model string, where the protocol has one.")] = None,
    pro: Annotated[bool, typer.Option("--pro", help="Use the provider's pro model.")] = False,
    watermark: Annotated[
        bool | None,
        typer.Option("--watermark/--no-watermark", help="Keep the provider's watermark.", show_default=False),
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="Notified with a signed webhook when the task ends.")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata as key=value; repeatable.", show_default=False)
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Makes a retry safe: the same key and body give the same task.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the task until it ends.")] = False,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Request a video."""
    session = _session(ctx)
    session.json_wanted(as_json)
    request = {
        "provider": provider,
        "prompt": prompt,
        "image_url": image_url,
        "duration": duration,
        "orientation": orientation.value if orientation else None,
        "resolution": resolution.value if resolution else None,
        "model": model,
        "pro": pro or None,
        "watermark": watermark,
        "webhook_url": webhook_url,
        "metadata": _parse_meta(meta or []) or None,
    }
    with session.client() as client:
        created = client.create_task(request, idempotency_key=idempotency_key)
        if watch:
            _follow(session, client, created.task.id, interval, max_interval, None)
    _show_task(session, created.task, replayed=created.replayed)


def status(ctx: typer.Context, task_id: TaskIdArg, as_json: JsonOption = False) -> None:
    """Show a task: its prompt, status, age, error and outputs (with their full download URLs)."""
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        _show_task(session, client.get_task(task_id))


def list_tasks(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option(help="Only tasks in this status.")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's tasks.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Tasks per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Start from this page (next_cursor of the last one).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow cursors through every page.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List tasks, newest first.

    Not on a terminal: one line per task, tab-separated: id, status, progress, provider, kind,
    created_at, age, prompt. With --json: JSON Lines, one task per line. Either way the next
    page's cursor, if any, goes to stderr.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    status_value = status.value if status else None
    with session.client() as client:
        if all_pages:
            tasks = list(client.iter_tasks(status=status_value, provider=provider, limit=limit))
            next_cursor = None
        else:
            page = client.list_tasks(status=status_value, provider=provider, limit=limit, cursor=cursor)
            tasks, next_cursor = page.tasks, page.next_cursor
    if session.as_json:
        output.print_json_lines(tasks)
        if next_cursor:
            session.err.print(f"more: --all, or --cursor {escape(next_cursor)}", soft_wrap=True)
    else:
        output.render_task_list(session.out, tasks, next_cursor)


def watch(
    ctx: typer.Context,
    task_id: TaskIdArg,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 10.0,
    timeout: WatchTimeout = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a task with a progress bar until it ends; exit 0 if it succeeded, 1 if it failed."""
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        _follow(session, client, task_id, interval, max_interval, timeout)


def download(
    ctx: typer.Context,
    task_id: TaskIdArg,
    out: Annotated[Path, typer.Option("--out", help="Directory to write to.", file_okay=False)] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Download a task's outputs, each verified against its recorded SHA-256.

    A progress bar (size, speed) is drawn on stderr when it is a terminal. Not on a terminal:
    one line per file: path, bytes, sha256, s3_uri. With --json: JSON Lines.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        task = client.get_task(task_id)
        if session.err.is_terminal:
            with output.DownloadBars(session.err) as bars:
                files = client.download(task, out, progress=bars)
        else:
            files = client.download(task, out)
    if session.as_json:
        output.print_json_lines({**vars(f), "path": str(f.path)} for f in files)
    else:
        output.render_downloads(session.out, files)


def open_output(
    ctx: typer.Context,
    task_id: TaskIdArg,
    index: Annotated[int, typer.Option("--output", min=0, help="Which output, for a task with several.")] = 0,
    print_only: Annotated[bool, typer.Option("--print", help="Print the URL instead of opening a browser.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Open a finished task's output in the browser (its presigned URL), or print the full URL.

    The URL is printed instead when stdout is not a terminal, with --print or --json, or when no
    browser can be started. It is short-lived (the API's PRESIGN_TTL_SECONDS).
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        task = client.get_task(task_id)
    if not task.outputs:
        raise CliError(f"task {task.id} is {task.status} and has no outputs to open")
    if index >= len(task.outputs):
        raise CliError(f"task {task.id} has {len(task.outputs)} output(s); --output {index} is not one", exit_code=2)
    url = task.outputs[index].url
    if not url:
        raise CliError(f"the API gave no download URL for {task.outputs[index].s3_uri}")
    if session.as_json:
        output.print_json({"task_id": task.id, "s3_uri": task.outputs[index].s3_uri, "url": url})
        return
    if not print_only and session.on_terminal and session.wiring.open_browser(url):
        session.err.print(f"[dim]opened {escape(task.outputs[index].s3_uri)} in the browser[/]")
        return
    print(url)


def providers(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The configured providers: capabilities and live balance (with --json, also pricing).

    Not on a terminal: one line per provider, tab-separated: name, protocol, modes, durations,
    orientations, resolutions or sizes, pro, callbacks, balance. With --json: JSON Lines.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        found = client.providers()
    if session.as_json:
        output.print_json_lines(found)
    else:
        output.render_providers(session.out, found)


def remix(
    ctx: typer.Context,
    task_id: TaskIdArg,
    prompt: Annotated[str, typer.Option(help="What to change.", show_default=False)],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the new task until it ends.")] = False,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Make a new video from a finished one."""
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        task = client.remix(task_id, prompt)
        if watch:
            _follow(session, client, task.id, interval, max_interval, None)
    _show_task(session, task)


def images(
    ctx: typer.Context,
    provider: Annotated[str, typer.Option(help="Configured provider.", show_default=False)],
    prompt: Annotated[str, typer.Option(help="What the images show.", show_default=False)],
    n: Annotated[int | None, typer.Option("--n", min=1, max=4, help="How many images.")] = None,
    size: Annotated[str | None, typer.Option(help="WxH, e.g. 1024x1536.")] = None,
    image_url: Annotated[
        list[str] | None, typer.Option("--image-url", help="Image to edit, by URL; repeatable.", show_default=False)
    ] = None,
    image_key: Annotated[
        list[str] | None,
        typer.Option(
            "--image-key", help="Image to edit, by key in the results bucket; repeatable.", show_default=False
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the task until it ends.")] = False,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Generate (or edit) images."""
    if image_url and image_key:
        raise typer.BadParameter("give --image-url or --image-key, not both", param_hint="--image-url/--image-key")
    if size is not None and not re.fullmatch(r"[1-9]\d{1,4}x[1-9]\d{1,4}", size):
        raise typer.BadParameter(f"{size!r} is not WxH (e.g. 1024x1536)", param_hint="--size")
    session = _session(ctx)
    session.json_wanted(as_json)
    request = {
        "provider": provider,
        "prompt": prompt,
        "n": n,
        "size": size,
        "image_urls": image_url or None,
        "image_keys": image_key or None,
    }
    with session.client() as client:
        task = client.create_images(request)
        if watch:
            _follow(session, client, task.id, interval, max_interval, None)
    _show_task(session, task)


def token(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="The JWT's `sub`: who the token speaks for.", show_default=False)],
    ttl: Annotated[int | None, typer.Option("--ttl", min=1, max=86400, help="Lifetime in seconds (default 1 h).")] = (
        None
    ),
    as_json: JsonOption = False,
) -> None:
    """Print a bare JWT for SUBJECT from a running `reelay dev --client-auth jwt` (at --api-url).

    Use it as `--token` / `REELAY_TOKEN`, or as `Authorization: Bearer <jwt>` with curl.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client(token="") as client:  # the issuer needs no credential: it is loopback-only
        jwt = client.local_token(subject, ttl_seconds=ttl)
    if session.as_json:
        output.print_json({"token": jwt, "subject": subject})
    else:
        print(jwt)


TableOption = Annotated[
    str | None, typer.Option("--table", help="A deployed stack's ApiKeyTable (its physical name).", show_default=False)
]
StackOption = Annotated[
    str | None,
    typer.Option("--stack", help="A deployed stack: its ApiKeyTableName output names the table.", show_default=False),
]


def _keys(session: Session, table: str | None, stack: str | None) -> Any:
    return key_admin(session.api_url, table=table, stack=stack, client=lambda: session.client(token=""))


def keys_create(
    ctx: typer.Context,
    owner: Annotated[str, typer.Option("--owner", help="Who the key's tasks belong to.", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="What the key is for (shown by `keys list`).")] = None,
    table: TableOption = None,
    stack: StackOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make an API key for OWNER and print the bare key (shown this once; only its hash is kept).

    For the `reelay dev` at --api-url, or a deployed stack's key table (--stack / --table), written
    with your AWS credentials: the API itself has no route that makes keys.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    admin = _keys(session, table, stack)
    made = admin.create_key(owner, name)
    if session.as_json:
        output.print_json(made)
    else:
        print(made.key)


def keys_list(
    ctx: typer.Context,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's keys.")] = None,
    table: TableOption = None,
    stack: StackOption = None,
    as_json: JsonOption = False,
) -> None:
    """List API keys (id, owner, name, made, revoked), newest first; never the keys themselves."""
    session = _session(ctx)
    session.json_wanted(as_json)
    found = _keys(session, table, stack).list_keys(owner=owner)
    if session.as_json:
        output.print_json_lines(found)
        return
    for key in found:
        revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
        print(f"{key.key_id}\t{key.owner}\t{key.name}\t{key.created_at.isoformat()}\t{revoked}")


def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), from `keys list`.", show_default=False)],
    table: TableOption = None,
    stack: StackOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key: refused from then on, at the latest after the authorizer's cache lifetime."""
    session = _session(ctx)
    session.json_wanted(as_json)
    revoked = _keys(session, table, stack).revoke_key(key_id)
    if session.as_json:
        output.print_json(revoked)
    else:
        print(f"{revoked.key_id}\trevoked\t{revoked.revoked_at.isoformat() if revoked.revoked_at else ''}")


def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Serve the page on 127.0.0.1:PORT (0: any).")] = (
        DEFAULT_UI_PORT
    ),
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in the browser.")] = True,
) -> None:
    """Serve the web page on localhost against --api-url (local or deployed) until Ctrl-C.

    The page never sees AWS credentials: it talks to this process, which forwards each /v1/
    request to the API signed with SigV4 (IAM), with --token as Bearer, or as is (loopback).
    """
    session = _session(ctx)
    server = session.wiring.ui(session.client, port)
    try:
        session.out.print(f"[bold green]reelay web page[/] {server.url}  [dim]→ {escape(session.api_url)}[/]")
        if open_browser and session.on_terminal:
            session.wiring.open_browser(server.url)
        session.out.print("[dim]Ctrl-C to stop[/]")
        try:
            session.wiring.wait_for_interrupt()
        except KeyboardInterrupt:
            session.out.print("[dim]stopping…[/]")
    finally:
        server.stop()


def dev(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Serve the API on 127.0.0.1:PORT.")] = DEFAULT_PORT,
    client_auth: Annotated[
        ClientAuth,
        typer.Option(
            "--client-auth",
            help="jwt: the /v1/ routes want a Bearer JWT from the local issuer (`reelay token SUBJECT`), "
            "as the HTTP API's JWT authorizer does; apikey: they want a reelay API key (`reelay keys create "
            "--owner NAME`), checked by the template's Lambda authorizer with its cache lifetime; "
            "none: no client auth, one local owner.",
        ),
    ] = ClientAuth.none,
    ui_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Serve the web page on 127.0.0.1:PORT (0: any free port).")
    ] = DEFAULT_UI_PORT,
    repo: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the embedded local stack (moto, simulator, API) and the web page until Ctrl-C."""
    session = _session(ctx)
    session.json_wanted(as_json)
    env = session.wiring.environment(find_repo_root(repo), port, client_auth.value)
    with running(env):
        api_url = env.stack.api_url
        # The page of `reelay dev` speaks for one local user; with JWT auth it gets a fresh token
        # from the local issuer for each request, so it never expires under it.
        page_token: TokenSource | None = None
        if client_auth is ClientAuth.jwt and not session.token:
            page_token = functools.partial(env.issue_token, "local-ui")
        server = session.wiring.ui(lambda: session.client(api_url=api_url, token=page_token), ui_port)
        try:
            simulator_url = env.sim.url if env.sim is not None else None
            if session.as_json:
                output.print_json(
                    {
                        "api_url": api_url,
                        "aws_endpoint": env.stack.aws_endpoint,
                        "bucket": env.stack.bucket,
                        "simulator_url": simulator_url,
                        "ui_url": server.url,
                        "client_auth": client_auth.value,
                    }
                )
            else:
                session.out.print("[bold green]reelay local stack is running[/]")
                output.render_stack(session.out, env.stack, simulator_url, server.url)
                if client_auth is ClientAuth.jwt:
                    session.out.print("[dim]client auth: JWT — `reelay token SUBJECT` prints one[/]")
                if client_auth is ClientAuth.apikey:
                    session.out.print("[dim]client auth: API keys — `reelay keys create --owner NAME` prints one[/]")
                if api_url.rstrip("/") != DEFAULT_API_URL:
                    session.out.print(f"[dim]export REELAY_API_URL={escape(api_url)}[/]")
                session.out.print("[dim]Ctrl-C to stop[/]")
            try:
                session.wiring.wait_for_interrupt()
            except KeyboardInterrupt:
                if not session.as_json:
                    session.out.print("[dim]stopping…[/]")
        finally:
            server.stop()


def demo(
    ctx: typer.Context,
    providers: Annotated[str, typer.Option("--providers", help="Comma-separated providers to run.")] = ",".join(
        DEFAULT_PROVIDERS
    ),
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port (default: the stack's own).", show_default=False)
    ] = None,
    repo: RepoOption = None,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 10.0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up on tasks after this many seconds.")] = 600.0,
    as_json: JsonOption = False,
) -> None:
    """Start a local stack, make one video per provider, verify every result in S3, stop."""
    session = _session(ctx)
    session.json_wanted(as_json)
    chosen = [p.strip() for p in providers.split(",") if p.strip()]
    if not chosen:
        raise typer.BadParameter("name at least one provider", param_hint="--providers")
    # The functions' own INFO logs would bury the demo's report; REELAY_LOG_LEVEL=INFO shows them.
    os.environ.setdefault("REELAY_LOG_LEVEL", "WARNING")
    env = session.wiring.environment(find_repo_root(repo), port, ClientAuth.none.value)
    with running(env):
        if not session.as_json:
            output.render_stack(session.out, env.stack, env.sim.url if env.sim is not None else None)

        def progress(provider: str, task: TaskView) -> None:
            if not session.as_json:
                line = Text.assemble(f"{provider:<14} {task.id}  ", output.status_text(task.status))
                session.out.print(line + Text(f" {task.progress}%", "dim"))

        with ReelayClient(
            env.stack.api_url, sign=False, transport=session.wiring.transport, sleep=session.wiring.sleep
        ) as client:
            result = run_demo(
                env,
                client,
                providers=chosen,
                s3=session.wiring.s3(env),
                interval=interval,
                max_interval=max_interval,
                timeout=timeout,
                sleep=session.wiring.sleep,
                on_update=progress,
            )
    if session.as_json:
        output.print_json(result.as_dict())
    else:
        output.render_demo(session.out, result)
    raise typer.Exit(0 if result.ok else 1)


# --- helpers ----------------------------------------------------------------------------------


def batch(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="A JSON Lines manifest: one POST /v1/tasks body per line, plus an optional id.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            help="The batch's name (default: the file's stem); its report: reports/<name>.jsonl.", show_default=False
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Follow the batch to its end.")] = True,
    interval: Interval = 1.0,
    max_interval: MaxInterval = 5.0,
    timeout: WatchTimeout = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a JSONL manifest into your inbox and follow the batch: done, failed, running, ETA.

    Exit 0 when every line's task succeeded, 1 when any failed or a line was invalid (the
    report, reports/<name>.jsonl in the results bucket, says which and why). With --json: the
    final BatchView (with --no-follow: the upload's BatchTicket). Not on a terminal: progress
    lines on stderr (batch, status, succeeded, failed, running, invalid), then name<TAB>value lines.
    """
    session = _session(ctx)
    session.json_wanted(as_json)
    size, md5 = file_digest(file)
    with session.client() as client:
        ticket = client.create_batch(name or manifest_name(file), size=size, md5=md5)
        client.upload_manifest(ticket, file)
        if not follow:
            if session.as_json:
                output.print_json(ticket)
            else:
                for name, value in (("batch", ticket.batch_id), ("key", ticket.key), ("report", ticket.report_key)):
                    output.plain_line(session.out, name, value)
            return
        if session.as_json:
            view = client.wait_batch(ticket.batch_id, interval=interval, max_interval=max_interval, timeout=timeout)
        else:
            with batch_progress(session.out, ticket.batch_id) as update:
                view = client.wait_batch(
                    ticket.batch_id, interval=interval, max_interval=max_interval, timeout=timeout, on_update=update
                )
    if session.as_json:
        output.print_json(view)
    else:
        render_batch(session.out, view)
    raise typer.Exit(0 if view.failed == 0 and view.invalid == 0 else 1)


def _show_task(session: Session, task: TaskView, *, replayed: bool = False) -> None:
    if session.as_json:
        output.print_json(task)
    else:
        output.render_task(session.out, task, replayed=replayed)


def _follow(
    session: Session, client: ReelayClient, task_id: str, interval: float, max_interval: float, timeout: float | None
) -> NoReturn:
    """Watch a task to its end, show it, and exit 0 (succeeded) or 1 (failed)."""
    if session.as_json:
        task = client.wait(task_id, interval=interval, max_interval=max_interval, timeout=timeout)
    else:
        with output.task_progress(session.out, task_id) as update:
            task = client.wait(task_id, interval=interval, max_interval=max_interval, timeout=timeout, on_update=update)
    _show_task(session, task)
    raise typer.Exit(0 if task.status == "succeeded" else 1)


def _parse_meta(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--meta")
        metadata[key.strip()] = value
    return metadata


def _print_version(value: bool) -> None:
    if value:
        print(f"reelay {CLI_VERSION}")
        raise typer.Exit(0)


# --- the app ----------------------------------------------------------------------------------

class CostPeriod(StrEnum):
    hour = "hour"
    day = "day"
    month = "month"


def cost(
    ctx: typer.Context,
    task_ids: Annotated[
        list[str] | None, typer.Argument(help="Tasks to price (default: every task).", show_default=False)
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Only the tasks of this batch (batch_id).")] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider's tasks.")] = None,
    status: Annotated[Status | None, typer.Option(help="Only tasks in this status.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only tasks created at or after this time (ISO 8601, UTC).")
    ] = None,
    period: Annotated[CostPeriod, typer.Option(help="The periods totals are grouped by.")] = CostPeriod.day,
    per_task: Annotated[bool, typer.Option("--tasks", help="A line per task too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """What tasks cost: provider cents and reelay's own AWS USD, per task, per batch, per period, in total.

    Not on a terminal: one line per row, tab-separated: scope (task, batch, period, total), key,
    tasks, provider cents, AWS USD, AWS USD per 1,000 tasks, generation seconds, price lines.
    """
    from reelay_cli.cost_report import cost_rows, render_cost_rows

    session = _session(ctx)
    session.json_wanted(as_json)
    with session.client() as client:
        if task_ids:
            ids = list(task_ids)
        else:
            status_value = status.value if status else None
            ids = [
                t.id
                for t in client.iter_tasks(status=status_value, provider=provider, limit=100)
                if since is None or t.created_at >= (since if since.tzinfo else since.replace(tzinfo=UTC))
            ]
        tasks = [client.get_task(task_id) for task_id in ids]
    if batch:
        tasks = [t for t in tasks if t.batch_id == batch]
    rows = cost_rows(tasks, period=period.value, per_task=per_task or bool(task_ids))
    render_cost_rows(session.out, rows, as_json=session.as_json)


COMMANDS: dict[str, Callable[..., None]] = {
    "dev": dev,
    "demo": demo,
    "ui": ui,
    "token": token,
    "submit": submit,
    "status": status,
    "list": list_tasks,
    "watch": watch,
    "download": download,
    "open": open_output,
    "providers": providers,
    "remix": remix,
    "images": images,
    "cost": cost,
    "batch": batch,
}


KEY_COMMANDS: dict[str, Callable[..., None]] = {"create": keys_create, "list": keys_list, "revoke": keys_revoke}


def create_app(wiring: Wiring | None = None) -> typer.Typer:
    """The ``reelay`` command, its dependencies taken from ``wiring`` (real ones by default)."""
    wired = wiring or Wiring()
    app = typer.Typer(
        name="reelay",
        help="reelay: AI video generation whose results land in your S3 bucket.\n\n"
        "Output: tables on a terminal; tab-separated lines, never truncated, in a pipe; --json: the API's "
        "models, one object or JSON Lines (list, providers, download).\n\n" + EXIT_CODES,
        no_args_is_help=True,
        add_completion=False,
        # Locals could hold a token; an unexpected bug still shows where it happened.
        pretty_exceptions_show_locals=False,
    )

    @app.callback()
    def options(
        ctx: typer.Context,
        api_url: Annotated[
            str,
            typer.Option("--api-url", envvar="REELAY_API_URL", help="The reelay API (default: a local `reelay dev`)."),
        ] = DEFAULT_API_URL,
        as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON models.")] = False,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar=["REELAY_TOKEN", "REELAY_API_TOKEN"],
                help="Bearer token (a JWT) sent with every request, instead of SigV4.",
                show_default=False,
            ),
        ] = None,
        no_sign: Annotated[
            bool, typer.Option("--no-sign", help="Do not SigV4-sign requests to a non-loopback API.")
        ] = False,
        version: Annotated[
            bool,
            typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
        ] = False,
    ) -> None:
        ctx.obj = Session(api_url=api_url, token=token or None, sign=not no_sign, as_json=as_json, wiring=wired)

    for name, command in COMMANDS.items():
        app.command(name, epilog=EXIT_CODES)(_reports_errors(command))
    keys = typer.Typer(name="keys", help="API keys (ClientAuth=APIKEY): create, list, revoke.", no_args_is_help=True)
    for name, command in KEY_COMMANDS.items():
        keys.command(name, epilog=EXIT_CODES)(_reports_errors(command))
    app.add_typer(keys)
    return app


def main() -> None:
    """Console-script entry point."""
    create_app()()
