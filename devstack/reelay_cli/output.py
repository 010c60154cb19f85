"""How the CLI shows things: rich tables and panels for people, plain JSON for ``--json``.

Nothing here prints a credential or a presigned URL's signature: URLs are shown through
:func:`~reelay_cli.api_client.shorten_url` (``--json`` prints the API's answer unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from reelay_cli.api_client import (
    ApiError,
    CliError,
    DownloadedFile,
    ProviderView,
    TaskView,
    shorten_url,
)
from reelay_cli.demo import DemoResult
from reelay_cli.dev import StackInfo

STATUS_STYLES = {
    "queued": "dim",
    "submitted": "cyan",
    "running": "blue",
    "ingesting": "magenta",
    "succeeded": "bold green",
    "failed": "bold red",
}


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLES.get(status, ""))


def human_bytes(size: int | None) -> str:
    """``1536`` → ``1.5 KiB``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def short_hash(sha256: str | None) -> str:
    return f"{sha256[:12]}…" if sha256 else "-"


def print_json(data: Any) -> None:
    """Raw JSON on stdout, unstyled and unwrapped (dataclasses become objects), for scripts and ``jq``."""
    if is_dataclass(data) and not isinstance(data, type):
        data = asdict(data)
    print(json.dumps(data, indent=2, default=str))


def render_error(console: Console, error: CliError) -> None:
    """One clear error, with the server's field details and a hint when there is one."""
    if isinstance(error, ApiError):
        console.print(
            f"[bold red]error:[/] {escape(error.message)} [dim]({error.code}, HTTP {error.status})[/]", soft_wrap=True
        )
        for detail in error.details:
            field = str(detail.get("field") or "")
            message = str(detail.get("message") or "")
            line = f"  • [bold]{escape(field)}[/]: {escape(message)}" if field else f"  • {escape(message)}"
            console.print(line, soft_wrap=True)
    else:
        console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if error.hint:
        console.print(f"[dim]hint: {escape(error.hint)}[/]", soft_wrap=True)


def render_task(console: Console, task: TaskView, *, replayed: bool = False) -> None:
    """A task's details and its outputs."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("task", Text(task["id"]) + (Text("  (existing task: idempotent replay)", "dim") if replayed else ""))
    grid.add_row("provider", f"{task['provider']}  [dim]{task.get('kind', '')}[/]")
    grid.add_row("status", status_text(task["status"]) + Text(f"  {task.get('progress', 0)}%", "dim"))
    if task.get("provider_task_id"):
        grid.add_row("provider task", task["provider_task_id"] or "")
    if task.get("parent_task_id"):
        grid.add_row("remix of", task["parent_task_id"] or "")
    grid.add_row("created", task.get("created_at", ""))
    grid.add_row("updated", task.get("updated_at", ""))
    if task.get("cost_cents") is not None:
        grid.add_row("cost", f"{task['cost_cents']} cents")
    if task.get("metadata"):
        grid.add_row("metadata", ", ".join(f"{k}={v}" for k, v in task["metadata"].items()))
    error = task.get("error")
    if error:
        grid.add_row("error", Text(f"{error['code']}: {error['message']}", style="red"))
    console.print(grid)
    if task.get("outputs"):
        render_outputs(console, task)


def render_outputs(console: Console, task: TaskView) -> None:
    table = Table(title="outputs", title_justify="left", expand=False)
    table.add_column("s3 uri", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("sha256")
    table.add_column("type")
    table.add_column("download", overflow="fold")
    for output in task["outputs"]:
        table.add_row(
            output["s3_uri"],
            human_bytes(output.get("bytes")),
            short_hash(output.get("sha256")),
            output.get("content_type", ""),
            shorten_url(output["url"]) if output.get("url") else "-",
        )
    console.print(table)


def render_task_list(console: Console, tasks: Sequence[TaskView], next_cursor: str | None) -> None:
    table = Table(expand=False)
    table.add_column("task", no_wrap=True)
    table.add_column("provider")
    table.add_column("kind")
    table.add_column("status")
    table.add_column("progress", justify="right")
    table.add_column("created")
    table.add_column("outputs", justify="right")
    for task in tasks:
        table.add_row(
            task["id"],
            task["provider"],
            task.get("kind", ""),
            status_text(task["status"]),
            f"{task.get('progress', 0)}%",
            task.get("created_at", ""),
            str(len(task.get("outputs") or [])),
        )
    console.print(table)
    console.print(f"[dim]{len(tasks)} task(s)[/]")
    if next_cursor:
        console.print(f"[dim]more: --all, or --cursor {escape(next_cursor)}[/]")


def render_providers(console: Console, providers: Iterable[ProviderView]) -> None:
    table = Table(expand=False)
    for name in ("provider", "protocol", "modes", "durations (s)", "orientations", "resolutions", "pro", "callbacks"):
        table.add_column(name)
    table.add_column("balance", justify="right")
    notes: list[tuple[str, str]] = []
    for provider in providers:
        caps = provider.get("capabilities") or {}
        default = caps.get("default_duration")
        durations = ", ".join(f"{d}*" if d == default else str(d) for d in caps.get("durations") or [])
        table.add_row(
            provider["name"],
            provider["protocol"],
            ", ".join(caps.get("modes") or []),
            durations or "-",
            ", ".join(caps.get("orientations") or []) or "-",
            ", ".join(caps.get("resolutions") or caps.get("sizes") or []) or "-",
            _yes_no(caps.get("pro")),
            _yes_no(caps.get("callbacks")),
            _balance(provider.get("account")),
        )
        raw_notes = caps.get("notes")
        if raw_notes:
            text = raw_notes if isinstance(raw_notes, str) else "; ".join(str(n) for n in raw_notes)
            notes.append((provider["name"], text))
    console.print(table)
    console.print("[dim]* default duration[/]")
    for name, text in notes:
        console.print(f"[bold]{escape(name)}[/]: {escape(text)}")


def render_downloads(console: Console, files: Sequence[DownloadedFile]) -> None:
    for file in files:
        console.print(
            f"[green]✓[/] {escape(str(file.path))}  {human_bytes(file.bytes)}  sha256 {file.sha256}  "
            f"[dim]({escape(file.s3_uri)})[/]"
        )


def render_stack(console: Console, stack: StackInfo, simulator_url: str | None) -> None:
    """Where a local stack serves, in a form to copy into a shell."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("API", stack.api_url)
    grid.add_row("AWS endpoint (moto)", stack.aws_endpoint)
    grid.add_row("results bucket", stack.bucket)
    if simulator_url:
        grid.add_row("provider simulator", simulator_url)
    console.print(grid)


def render_demo(console: Console, result: DemoResult) -> None:
    """One block per task: it reads the same in a narrow CI log as in a wide terminal."""
    for run in result.runs:
        console.print(f"[bold]{run.provider}[/]  {run.task_id or '-'}  ", status_text(run.status), sep="")
        if not run.outputs:
            console.print(Text(f"  {run.error or 'no output'}", "red"))
        for output in run.outputs:
            console.print(f"  {output.s3_uri}", soft_wrap=True)
            console.print(f"  {human_bytes(output.bytes)}  sha256 {output.recorded_sha256}", soft_wrap=True)
            if not output.ok:
                check = Text(f"  ✗ {output.problem or 'check failed'}", "red")
            elif output.simulator_sha256 is None:
                check = Text("  ✓ S3 object = recorded sha256 (no simulator)", "green")
            else:
                check = Text("  ✓ S3 object = recorded sha256 = simulator's video", "green")
            console.print(check)
    verdict = "[bold green]demo passed[/]" if result.ok else "[bold red]demo failed[/]"
    console.print(f"{verdict} [dim]in {result.elapsed_seconds:.1f} s[/]")


@contextmanager
def task_progress(console: Console, task_id: str) -> Iterator[Any]:
    """A live progress bar for one task; yields ``update(task)`` to feed it each poll's answer."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bar = progress.add_task(f"{task_id} [dim]…[/]", total=100)

    def update(task: TaskView) -> None:
        style = STATUS_STYLES.get(task["status"], "")
        completed = 100 if task["status"] == "succeeded" else task.get("progress", 0)
        progress.update(bar, completed=completed, description=f"{task_id} [{style}]{task['status']}[/]")

    with progress:
        yield update


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _balance(account: Any) -> str:
    if not account or account.get("balance_cents") is None:
        return "-"
    return f"{account['balance_cents'] / 100:.2f} {account.get('currency') or ''}".strip()
