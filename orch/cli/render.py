"""The only module that imports rich: tables, timelines and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def console(width: int | None = None) -> Any:
    from rich.console import Console

    return Console(width=width, highlight=False, soft_wrap=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]],
          width: int | None = None) -> None:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False,
                 header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*["" if cell is None else str(cell) for cell in row])
    console(width).print(grid)


def pipeline_table(stages: list[dict[str, Any]], width: int | None = None) -> None:
    rows = [[index + 1, s["name"], s["runner"], s["role"] or "", s["gate"], s["on_fail"] or "",
             ", ".join(s["deliverables"]) + (" (questions)" if s["questions"] else "")]
            for index, s in enumerate(stages)]
    table("pipeline", ["#", "stage", "runner", "role", "gate", "on_fail", "deliverables"],
          rows, width)


def task_rows(tasks: list[dict[str, Any]], width: int | None = None) -> None:
    if not tasks:
        print("no tasks")
        return
    rows = [[t["id"], t["repo"], t["stage"], t["state"], t["round"],
             "paused" if t["paused_at"] else "", t["title"]] for t in tasks]
    table(None, ["id", "repo", "stage", "state", "round", "", "title"], rows, width)


def task_detail(detail: dict[str, Any], width: int | None = None) -> None:
    """A task as a person reads it: header, jobs and runs, then the timeline."""
    task = detail["task"]
    out = console(width)
    out.print(f"[bold]task {task['id']}[/bold] {task['title']}")
    out.print(f"repo {task['repo']}  stage {task['stage']}  state {task['state']}  "
              f"round {task['round']}  priority {task['priority']}  branch {task['branch'] or '-'}")
    if task["paused_at"]:
        out.print(f"paused since {task['paused_at']}: {task['pause_reason'] or 'no reason given'}")
    if task["hold_reason"]:
        out.print(f"held: {task['hold_reason']}")
    if detail["jobs"]:
        rows = [[j["id"], j["stage"], j["runner"], j["status"], j["attempt"], j["defers"],
                 j["verdict"] or "", j["exit_code"] if j["exit_code"] is not None else ""]
                for j in detail["jobs"]]
        table("jobs", ["job", "stage", "runner", "status", "attempt", "defers", "verdict",
                       "exit"], rows, width)
    if detail["runs"]:
        rows = [[r["id"], r["job_id"], r["started_at"], r["outcome"] or "running",
                 r["exit_code"] if r["exit_code"] is not None else "",
                 f"${r['cost_usd']:.2f}" if r["cost_usd"] is not None else ""]
                for r in detail["runs"]]
        table("runs", ["run", "job", "started", "outcome", "exit", "cost"], rows, width)
    out.print("[bold]timeline[/bold]")
    for event in detail["events"]:
        job = f" job {event['job_id']}" if event["job_id"] else ""
        out.print(f"  {event['at'][:19].replace('T', ' ')}  {event['kind']:<12}{job}  "
                  f"{event['detail']}", markup=False)
    names = ", ".join(detail["artifacts"]) or "none"
    out.print(f"artifacts: {names}", markup=False)


def tick_summary(report: dict[str, Any], *, dry_run: bool, quiet: bool) -> None:
    """A few lines saying what a tick did (or, dry, would do)."""
    prefix = "would " if dry_run else ""
    lines = []
    if report["sanitized"]:
        lines.append(f"{prefix}sanitize {report['sanitized']} impossible queued job(s)")
    if report["reaped"]:
        lines.append(f"{prefix}reap job(s) {', '.join(map(str, report['reaped']))}")
    for move in report["advanced"]:
        lines.append(f"task {move['task']}: {move['from']} -> {move['to']} ({move['verdict']})")
    if report["admitted"]:
        lines.append(f"{prefix}admit task(s) {', '.join(map(str, report['admitted']))}")
    if report["enqueued"]:
        lines.append(f"{prefix}enqueue job(s) {', '.join(map(str, report['enqueued']))}")
    for claim in report["claimed"]:
        lines.append(f"{prefix}claim job {claim['job']} (task {claim['task']}, "
                     f"{claim['runner']})")
    if not quiet:
        for line in lines or ["nothing to do"]:
            print(line)
    for error in report["errors"]:
        print(f"error: task {error['task']} job {error['job']}: {error['error']}",
              file=sys.stderr)
