"""``reelay batch FILE``: upload a JSON Lines manifest into your inbox and follow the batch.

The file goes up through ``POST /v1/batches`` (a presigned PUT with its MD5 signed in, so the
batch id is known before the upload), then ``GET /v1/batches/{id}`` is polled with the usual
back-off. On a terminal a progress bar shows done, failed, running and invalid counts and an ETA;
otherwise one ``batch<TAB>status<TAB>succeeded<TAB>failed<TAB>running<TAB>invalid`` line per
change goes to stderr. The end is the batch's fields as ``name<TAB>value`` lines (a grid on a
terminal), or the ``BatchView`` as one JSON object with ``--json``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reelay.contract import BatchView
from reelay_cli.api_client import CliError
from reelay_cli.output import plain_line, status_bar

BATCH_LINE_FIELDS = ("batch", "status", "succeeded", "failed", "running", "invalid")
"""The tab-separated fields of each progress line ``reelay batch`` writes to stderr off a terminal."""


def manifest_name(path: Path) -> str:
    """The batch name of a local file: its stem, with anything the API refuses made a ``-``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name.removesuffix(".jsonl")).strip("-.") or "batch"
    return name[:200]


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, MD5 hex)`` of a file, read in pieces."""
    digest, size = hashlib.md5(usedforsecurity=False), 0
    try:
        with path.open("rb") as handle:
            for piece in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(piece)
                size += len(piece)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=2) from exc
    if size == 0:
        raise CliError(f"{path} is empty: a manifest has one task request per line", exit_code=2)
    return size, digest.hexdigest()


def eta_seconds(batch: BatchView, elapsed: float) -> float | None:
    """Time left at the rate tasks have ended so far (None until one has, or once none run)."""
    ended = batch.succeeded + batch.failed
    if batch.status == "completed" or ended == 0 or elapsed <= 0:
        return 0.0 if batch.status == "completed" else None
    remaining = batch.running if batch.split_done else max(batch.running, 1)
    return remaining * elapsed / ended


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "ETA …"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"ETA {minutes}:{secs:02d}"


@contextmanager
def batch_progress(console: Console, batch_id: str, clock: Callable[[], float] = time.monotonic) -> Iterator[Any]:
    """A live bar for one batch on a terminal (a line per change on stderr otherwise); yields ``update(view)``."""
    started = clock()
    if not console.is_terminal:
        seen: list[tuple[Any, ...]] = []
        log = Console(stderr=True)

        def log_update(batch: BatchView) -> None:
            row = (batch.id, batch.status, batch.succeeded, batch.failed, batch.running, batch.invalid)
            if not seen or seen[-1] != row:
                seen.append(row)
                plain_line(log, *row)

        yield log_update
        return
    progress = status_bar(console)
    bar = progress.add_task(f"{batch_id} [dim]waiting for the manifest…[/]", total=None)

    def update(batch: BatchView) -> None:
        done = batch.succeeded + batch.failed + batch.invalid
        total = (batch.tasks + batch.invalid) if batch.split_done else None
        text = (
            f"{batch.id} [green]{batch.succeeded} done[/] [red]{batch.failed} failed[/] "
            f"[blue]{batch.running} running[/] [yellow]{batch.invalid} invalid[/] "
            f"{_eta_text(eta_seconds(batch, clock() - started))}"
        )
        progress.update(bar, completed=done, total=total, description=text)

    with progress:
        yield update


def render_batch(console: Console, batch: BatchView) -> None:
    """A batch's counts and report: a grid on a terminal, ``field<TAB>value`` lines otherwise."""
    rows: list[tuple[str, str]] = [
        ("batch", batch.id),
        ("status", batch.status),
        ("manifest", batch.manifest),
        ("lines", "" if batch.lines is None else str(batch.lines)),
        ("tasks", str(batch.tasks)),
        ("succeeded", str(batch.succeeded)),
        ("failed", str(batch.failed)),
        ("running", str(batch.running)),
        ("invalid", str(batch.invalid)),
        ("cost", f"{batch.cost_cents} cents"),
    ]
    rows += [(f"code {code}", str(count)) for code, count in sorted(batch.by_code.items())]
    if batch.report:
        rows.append(("report", batch.report))
    if batch.summary:
        rows.append(("summary", batch.summary))
    if not console.is_terminal:
        for name, value in rows:
            plain_line(console, name, value)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in rows:
        style = {"failed": "red", "invalid": "yellow", "succeeded": "green"}.get(name, "")
        grid.add_row(name, Text(value, style=style if value not in ("0", "") else ""))
    console.print(grid)
