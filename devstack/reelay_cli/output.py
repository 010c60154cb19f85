"""How the CLI shows things: rich tables for a person at a terminal, plain lines for pipes, JSON.

Three forms, chosen once per invocation:

- **a terminal** (stdout is a TTY): rich tables and panels, colours, live progress bars;
- **a pipe or a file** (not a TTY): plain text, one record per line, fields separated by a tab,
  nothing truncated or wrapped, no colour — ``reelay list | grep succeeded`` and
  ``cut -f1`` work. The columns of each record are listed in the README and in ``--help``;
- **``--json``**: the contract models of ``reelay.contract`` as JSON — one object for a command
  about one thing (``status``, ``submit``, ``remix``, ``images``, ``dev``, ``demo``, ``open``,
  ``token``), JSON Lines (one object per line) for commands that list (``list``, ``providers``,
  ``download``).

Presigned URLs are shown whole (the issue of the user's own output; ``open`` and ``status`` exist
to hand it over); error messages name S3 objects, never their presigned URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from reelay.contract import ProviderView, TaskView
from reelay_cli.api_client import ApiError, CliError, DownloadedFile
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

TASK_LINE_FIELDS = ("id", "status", "progress", "provider", "kind", "created_at", "age", "prompt")
"""The tab-separated fields of one task in ``reelay list`` when stdout is not a terminal."""
PROVIDER_LINE_FIELDS = (
    "name", "protocol", "modes", "durations", "orientations", "resolutions_or_sizes", "pro", "callbacks", "balance",
)  # fmt: skip
"""The tab-separated fields of one provider in ``reelay providers`` when stdout is not a terminal."""


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


def relative_age(when: datetime, now: datetime | None = None) -> str:
    """``2 min ago``: how long ago ``when`` was, in the largest unit that fits."""
    now = now or datetime.now(UTC)
    if when.tzinfo is None:  # the API's times are UTC; a naive one is read as such
        when = when.replace(tzinfo=UTC)
    seconds = int((now - when).total_seconds())
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _field(value: object) -> str:
    """One field of a plain line: never a tab or a line break inside it, ``-`` when empty."""
    text = "" if value is None else str(value)
    return " ".join(text.split()) if text.strip() else "-"


def plain_line(console: Console, *fields: object) -> None:
    """One record as a tab-separated line, written as is (no wrap, no markup, no colour)."""
    console.file.write("\t".join(_field(f) for f in fields) + "\n")


# --- JSON ---------------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """One JSON document on stdout: a contract model as the API would send it, a dataclass as an object."""
    if isinstance(data, BaseModel):
        print(data.model_dump_json(indent=2))
        return
    if is_dataclass(data) and not isinstance(data, type):
        data = asdict(data)
    print(json.dumps(data, indent=2, default=str))


def print_json_lines(items: Iterable[Any]) -> None:
    """JSON Lines on stdout: one compact object per line (models as the API sends them)."""
    for item in items:
        if isinstance(item, BaseModel):
            print(item.model_dump_json())
        else:
            if is_dataclass(item) and not isinstance(item, type):
                item = asdict(item)
            print(json.dumps(item, default=str, separators=(",", ":")))


# --- errors -------------------------------------------------------------------------------------


def render_error(console: Console, error: CliError) -> None:
    """One clear error, with the server's field details and a hint when there is one."""
    if isinstance(error, ApiError):
        console.print(
            f"[bold red]error:[/] {escape(error.message)} [dim]({error.code}, HTTP {error.status})[/]", soft_wrap=True
        )
        for detail in error.details:
            field = str(detail.get("field") or detail.get("loc") or "")
            message = str(detail.get("message") or detail.get("msg") or "")
            line = f"  • [bold]{escape(field)}[/]: {escape(message)}" if field else f"  • {escape(message)}"
            console.print(line, soft_wrap=True)
    else:
        console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if error.hint:
        console.print(f"[dim]hint: {escape(error.hint)}[/]", soft_wrap=True)


# --- tasks --------------------------------------------------------------------------------------


def render_task(console: Console, task: TaskView, *, replayed: bool = False) -> None:
    """A task's details and its outputs: a grid on a terminal, ``field<TAB>value`` lines otherwise."""
    rows: list[tuple[str, str]] = [
        ("task", task.id + ("  (existing task: idempotent replay)" if replayed else "")),
        ("provider", task.provider),
        ("kind", str(task.kind)),
        ("status", str(task.status)),
        ("progress", f"{task.progress}%"),
    ]
    if task.prompt is not None:
        rows.append(("prompt", task.prompt))
    if task.provider_task_id:
        rows.append(("provider task", task.provider_task_id))
    if task.parent_task_id:
        rows.append(("remix of", task.parent_task_id))
    rows.append(("created", f"{task.created_at.isoformat()} ({relative_age(task.created_at)})"))
    rows.append(("updated", f"{task.updated_at.isoformat()} ({relative_age(task.updated_at)})"))
    if task.cost_cents is not None:
        rows.append(("cost", f"{task.cost_cents} cents"))
    if task.metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in task.metadata.items())))
    if task.error:
        rows.append(("error", f"{task.error.code}: {task.error.message}"))
    if task.routing is not None:
        rows.append(("routing", task.routing.reason))
        rows.extend(("refused by", f"{f.provider}: {f.code}: {f.message}") for f in task.routing.failovers)
    if not console.is_terminal:
        for name, value in rows:
            plain_line(console, name, value)
        for output in task.outputs:
            plain_line(console, "output", output.s3_uri, output.bytes, output.sha256, output.content_type, output.url)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in rows:
        if name == "status":
            grid.add_row(name, status_text(value))
        elif name == "error":
            grid.add_row(name, Text(value, style="red"))
        else:
            grid.add_row(name, Text(value))
    console.print(grid)
    if task.outputs:
        render_outputs(console, task)


def render_outputs(console: Console, task: TaskView) -> None:
    """A task's outputs as a table; the download URL whole (folded, never cut)."""
    table = Table(title="outputs", title_justify="left", expand=False)
    table.add_column("s3 uri", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("sha256")
    table.add_column("type")
    table.add_column("download", overflow="fold")
    for output in task.outputs:
        table.add_row(
            output.s3_uri, human_bytes(output.bytes), short_hash(output.sha256), output.content_type, output.url or "-"
        )
    console.print(table)
    console.print("[dim]`reelay open TASK` opens it in the browser[/]")


def render_task_list(console: Console, tasks: Sequence[TaskView], next_cursor: str | None) -> None:
    """Tasks newest first: a table on a terminal, one tab-separated line per task otherwise
    (fields: :data:`TASK_LINE_FIELDS`); the next cursor goes to stderr then, to keep stdout rows only."""
    now = datetime.now(UTC)
    if not console.is_terminal:
        for task in tasks:
            plain_line(
                console,
                task.id,
                task.status,
                f"{task.progress}%",
                task.provider,
                task.kind,
                task.created_at.isoformat(),
                relative_age(task.created_at, now),
                task.prompt,
            )
        if next_cursor:
            Console(stderr=True).print(f"more: --all, or --cursor {escape(next_cursor)}", soft_wrap=True)
        return
    table = Table(expand=False)
    table.add_column("task", no_wrap=True)
    table.add_column("status")
    table.add_column("progress", justify="right")
    table.add_column("provider")
    table.add_column("age", no_wrap=True)
    table.add_column("prompt", overflow="ellipsis", max_width=60)
    table.add_column("outputs", justify="right")
    for task in tasks:
        table.add_row(
            task.id,
            status_text(task.status),
            f"{task.progress}%",
            task.provider,
            relative_age(task.created_at, now),
            task.prompt or "",
            str(len(task.outputs)),
        )
    console.print(table)
    console.print(f"[dim]{len(tasks)} task(s)[/]")
    if next_cursor:
        console.print(f"[dim]more: --all, or --cursor {escape(next_cursor)}[/]")


# --- providers, downloads, the stack, the demo ----------------------------------------------------


def render_providers(console: Console, providers: Iterable[ProviderView]) -> None:
    """Capabilities and live balance (pricing, where a protocol has it, is in ``--json``)."""
    rows = []
    notes: list[tuple[str, str]] = []
    for provider in providers:
        caps = provider.capabilities
        durations = ", ".join(f"{d}*" if d == caps.default_duration else str(d) for d in caps.durations)
        rows.append(
            (
                provider.name,
                provider.protocol,
                ", ".join(caps.modes),
                durations or "-",
                ", ".join(caps.orientations) or "-",
                ", ".join(caps.resolutions or caps.sizes) or "-",
                _yes_no(caps.pro),
                _yes_no(caps.callbacks),
                _balance(provider),
            )
        )
        if caps.notes:
            notes.append((provider.name, "; ".join(caps.notes)))
    if not console.is_terminal:
        for row in rows:
            plain_line(console, *row)
        return
    table = Table(expand=False)
    for name in ("provider", "protocol", "modes", "durations (s)", "orientations", "resolutions", "pro", "callbacks"):
        table.add_column(name)
    table.add_column("balance", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("[dim]* default duration[/]")
    for name, text in notes:
        console.print(f"[bold]{escape(name)}[/]: {escape(text)}", soft_wrap=True)


def render_downloads(console: Console, files: Sequence[DownloadedFile]) -> None:
    """Each file written: ``path<TAB>bytes<TAB>sha256<TAB>s3_uri`` when not a terminal."""
    for file in files:
        if not console.is_terminal:
            plain_line(console, file.path, file.bytes, file.sha256, file.s3_uri)
            continue
        console.print(
            f"[green]✓[/] {escape(str(file.path))}  {human_bytes(file.bytes)}  sha256 {file.sha256}  "
            f"[dim]({escape(file.s3_uri)})[/]",
            soft_wrap=True,
        )


def render_stack(console: Console, stack: StackInfo, simulator_url: str | None, ui_url: str | None = None) -> None:
    """Where a local stack serves, in a form to copy into a shell."""
    rows = [("API", stack.api_url), ("AWS endpoint (moto)", stack.aws_endpoint), ("results bucket", stack.bucket)]
    if simulator_url:
        rows.append(("provider simulator", simulator_url))
    if ui_url:
        rows.append(("web page", ui_url))
    if not console.is_terminal:
        for name, value in rows:
            plain_line(console, name, value)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, value)
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


# --- live progress --------------------------------------------------------------------------------


def status_bar(console: Console) -> Progress:
    """The progress bar ``watch`` and ``batch`` follow their work with (spinner, bar, %, elapsed)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@contextmanager
def task_progress(console: Console, task_id: str) -> Iterator[Any]:
    """A live progress bar for one task on a terminal (one line per change otherwise, on stderr);
    yields ``update(task)`` to feed it each poll's answer."""
    if not console.is_terminal:
        seen: list[tuple[str, int]] = []
        log = Console(stderr=True)

        def log_update(task: TaskView) -> None:
            if not seen or seen[-1] != (task.status, task.progress):
                seen.append((task.status, task.progress))
                log.print(f"{task_id} {task.status} {task.progress}%", soft_wrap=True, highlight=False)

        yield log_update
        return
    progress = status_bar(console)
    bar = progress.add_task(f"{task_id} [dim]…[/]", total=100)

    def update(task: TaskView) -> None:
        style = STATUS_STYLES.get(task.status, "")
        completed = 100 if task.status == "succeeded" else task.progress
        progress.update(bar, completed=completed, description=f"{task_id} [{style}]{task.status}[/]")

    with progress:
        yield update


class DownloadBars:
    """A rich progress bar per downloaded file, with size and speed, on stderr.

    Satisfies :class:`reelay_cli.api_client.DownloadProgress`; used only when stderr is a terminal.
    """

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._current: TaskID | None = None

    def __enter__(self) -> DownloadBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, name: str, total_bytes: int) -> None:
        self._current = self._progress.add_task(escape(name), total=total_bytes)

    def advance(self, done_bytes: int) -> None:
        if self._current is not None:
            self._progress.advance(self._current, done_bytes)


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _balance(provider: ProviderView) -> str:
    account = provider.account
    if account is None or account.balance_cents is None:
        return "-"
    return f"{account.balance_cents / 100:.2f} {account.currency or ''}".strip()
