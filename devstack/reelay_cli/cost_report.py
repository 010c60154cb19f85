"""``reelay cost``: what tasks cost, per task, per batch and per period, from the API's task costs.

Each task's ``cost`` comes from ``GET /v1/tasks/{id}`` (the provider's charge and reelay's own
AWS operations, counted by the code as they happen; ``reelay.costs``); totals are
``reelay.costs.sum_costs`` over the tasks of a group. Plain lines (not a terminal) are
tab-separated: scope (``task``, ``batch``, ``period``, ``total``), key, tasks, provider cents,
AWS USD, AWS USD per 1,000 tasks, generation seconds, then the AWS USD of each price line as
``line=usd``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rich.console import Console
from rich.table import Table

from reelay.contract import TaskView
from reelay.costs import CostTotals, sum_costs
from reelay_cli.output import plain_line, print_json_lines

Period = Literal["hour", "day", "month"]
_FORMATS: dict[str, str] = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d", "month": "%Y-%m"}


@dataclass(frozen=True)
class CostRow:
    """One line of the report: a task, a batch, a period or the total, and its summed costs."""

    scope: Literal["task", "batch", "period", "total"]
    key: str
    totals: CostTotals

    @property
    def aws_usd_per_1000(self) -> float:
        return self.totals.aws_usd / self.totals.tasks * 1000 if self.totals.tasks else 0.0


def period_key(when: datetime, period: Period) -> str:
    return when.strftime(_FORMATS[period])


def cost_rows(tasks: Sequence[TaskView], *, period: Period = "day", per_task: bool = False) -> list[CostRow]:
    """Rows per task (if asked), per batch (tasks with a batch), per period of creation, and the total."""
    priced = [t for t in tasks if t.cost is not None]
    rows: list[CostRow] = []
    if per_task:
        rows += [CostRow("task", t.id, sum_costs([t.cost])) for t in priced if t.cost is not None]
    batches: dict[str, list[TaskView]] = defaultdict(list)
    periods: dict[str, list[TaskView]] = defaultdict(list)
    for task in priced:
        if task.batch_id:
            batches[task.batch_id].append(task)
        periods[period_key(task.created_at, period)].append(task)
    rows += [CostRow("batch", key, _total(group)) for key, group in sorted(batches.items())]
    rows += [CostRow("period", key, _total(group)) for key, group in sorted(periods.items())]
    rows.append(CostRow("total", "all", _total(priced)))
    return rows


def _total(tasks: Iterable[TaskView]) -> CostTotals:
    return sum_costs(t.cost for t in tasks if t.cost is not None)


def render_cost_rows(console: Console, rows: Sequence[CostRow], *, as_json: bool = False) -> None:
    """A table on a terminal, tab-separated lines otherwise, JSON Lines with ``--json``."""
    if as_json:
        print_json_lines(
            {"scope": r.scope, "key": r.key, "aws_usd_per_1000": r.aws_usd_per_1000, **r.totals.model_dump()}
            for r in rows
        )
        return
    if not console.is_terminal:
        for r in rows:
            t = r.totals
            plain_line(
                console,
                r.scope,
                r.key,
                t.tasks,
                t.provider_cents,
                f"{t.aws_usd:.10f}",
                f"{r.aws_usd_per_1000:.6f}",
                f"{t.generation_seconds:g}",
                " ".join(f"{name}={usd:.10f}" for name, usd in t.aws_lines.items()),
            )
        return
    table = Table(expand=False)
    for column in ("scope", "key", "tasks", "provider ¢", "AWS $", "AWS $ / 1,000", "biggest AWS items"):
        table.add_column(
            column, justify="right" if column in ("tasks", "provider ¢", "AWS $", "AWS $ / 1,000") else "left"
        )
    for r in rows:
        t = r.totals
        biggest = sorted(t.aws_lines.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            r.scope,
            r.key,
            str(t.tasks),
            str(t.provider_cents),
            f"{t.aws_usd:.6f}",
            f"{r.aws_usd_per_1000:.4f}",
            ", ".join(f"{name} {usd:.6f}" for name, usd in biggest),
        )
    console.print(table)
