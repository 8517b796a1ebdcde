"""The only module that imports rich: tables, timelines and JSON output."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from orch.timeutil import age_s, now_iso


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def console(width: int | None = None) -> Any:
    from rich.console import Console

    return Console(width=width, highlight=False, soft_wrap=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]],
          width: int | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=title, title_justify="left", show_edge=False, pad_edge=False,
                 header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*[Text("" if cell is None else str(cell)) for cell in row])  # no markup
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
    out.print(f"task {task['id']} {task['title']}", style="bold", markup=False, soft_wrap=True)
    out.print(f"repo {task['repo']}  stage {task['stage']}  state {task['state']}  "
              f"round {task['round']}  priority {task['priority']}  branch {task['branch'] or '-'}",
              markup=False, soft_wrap=True)
    if task["paused_at"]:
        out.print(f"paused since {task['paused_at']}: {task['pause_reason'] or 'no reason given'}",
                  markup=False, soft_wrap=True)
    if task["hold_reason"]:
        out.print(f"held: {task['hold_reason']}", markup=False, soft_wrap=True)
    if detail["jobs"]:
        rows = [[j["id"], j["stage"], j["runner"], j["status"], j["attempt"], j["defers"],
                 j["verdict"] or "", j["exit_code"] if j["exit_code"] is not None else ""]
                for j in detail["jobs"]]
        table("jobs", ["job", "stage", "runner", "status", "attempt", "defers", "verdict",
                       "exit"], rows, width)
    if detail["runs"]:
        rows = [[r["id"], r["job_id"], r["started_at"], r["outcome"] or "running",
                 r["exit_code"] if r["exit_code"] is not None else "",
                 f"${r['cost_usd']:.2f}" if r["cost_usd"] is not None else "",
                 r.get("denials") or ""]
                for r in detail["runs"]]
        table("runs", ["run", "job", "started", "outcome", "exit", "cost", "denied"], rows,
              width)
    out.print("timeline", style="bold")
    for event in detail["events"]:
        job = f" job {event['job_id']}" if event["job_id"] else ""
        out.print(f"  {event['at'][:19].replace('T', ' ')}  {event['kind']:<12}{job}  "
                  f"{event['detail']}", markup=False, soft_wrap=True)
    names = ", ".join(detail["artifacts"]) or "none"
    out.print(f"artifacts: {names}", markup=False, soft_wrap=True)


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


# --------------------------------------------------------------------------- orch queue

def short_age(seconds: float | None) -> str:
    """12s, 5m, 3h, 2d: an age that fits a narrow column."""
    if seconds is None:
        return "-"
    value = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value // size}{unit}"
    return f"{value}s"


def _gate_lines(name: str, gate: dict[str, Any], *, enabled: bool,
                unavailable: str | None) -> list[Any]:
    """A repo's header: slots, frozen, unavailable; then active / waiting / paused ids."""
    from rich.text import Text

    slots = f"{len(gate['active'])}/{gate['max_active'] if gate['max_active'] else '?'} slots"
    head = Text.assemble((name, "bold"), "  ", slots,
                         "" if enabled else " (serial gate off)")
    if gate["frozen"]:
        head.append("  FROZEN", style="bold yellow")
    lines = [head]
    if unavailable:
        lines.append(Text(f"  {unavailable}", style="bold red"))
    ids = ", ".join
    parts = [f"active: {ids(map(str, gate['active'])) or '-'}",
             f"waiting: {ids(map(str, gate['waiting'])) or '-'}"]
    if gate["paused"]:
        parts.append("paused: " + ids(f"{p['task']} ({p['reason'] or 'no reason'})"
                                      for p in gate["paused"]))
    lines.append(Text("  " + "  ".join(parts), style="dim"))
    return lines


def _queue_task_table(tasks: list[dict[str, Any]]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    grid = Table(show_edge=False, pad_edge=False, header_style="bold", box=None,
                 padding=(0, 1))
    for column in ("id", "stage", "state", "age", "moved"):
        grid.add_column(column, overflow="fold", no_wrap=False)
    grid.add_column("title / why it waits", overflow="fold", ratio=1)
    for task in tasks:
        stage = task["stage"] + (f" r{task['round']}" if task["round"] else "")
        state = task["state"] + ("\npaused" if task["paused"] else "")
        cell = Group(Text(task["title"], overflow="ellipsis", no_wrap=True),
                     Text(task["reason"], style="cyan", overflow="fold"))
        moved = task.get("moved_age_s")
        grid.add_row(str(task["id"]), stage, state, short_age(task["age_s"]),
                     "-" if moved is None else f"{short_age(moved)} ago", cell)
    return grid


def _running_table(running: list[dict[str, Any]], max_concurrency: int | None) -> Any:
    from rich.table import Table

    limit = "" if max_concurrency is None else f" of max_concurrency {max_concurrency}"
    grid = Table(title=f"running jobs: {len(running)}{limit}", title_justify="left",
                 show_edge=False, pad_edge=False, header_style="bold", box=None,
                 padding=(0, 1))
    for column in ("job", "task", "stage", "runner", "pid", "age", "heartbeat"):
        grid.add_column(column, overflow="fold")
    for job in running:
        beat = job["heartbeat_age_s"]
        grid.add_row(str(job["job"]), str(job["task"]), job["stage"], job["runner"],
                     str(job["pid"] if job["pid"] is not None else "-"),
                     short_age(job["age_s"]), "-" if beat is None else f"{short_age(beat)} ago")
    return grid


def _reaper_line(reaper: dict[str, Any], counters: dict[str, int]) -> Any:
    from rich.text import Text


    last = reaper["last_tick_at"]
    tick = "never" if not last else f"{last[:19].replace('T', ' ')}Z " \
        f"({short_age(age_s(last))} ago)"
    line = (f"reaper: {reaper['reaped_total']} reaped, {reaper['impossible_queued_total']} "
            f"impossible queued sanitized; last tick {tick}")
    others = "  ".join(f"{name} {value}" for name, value in counters.items()
                       if name not in ("reaped_total", "impossible_queued_total"))
    return Text(line + (f"\ncounters: {others}" if others else ""), style="dim")


def queue_renderable(view: dict[str, Any]) -> Any:
    """`orch queue` as one rich renderable: per repo the gate and its tasks, then the
    running jobs and the reaper. `view` is QueueView.for_display()."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    gate = view["serial_gate"]
    unavailable = view.get("unavailable", {})
    for name, repo_gate in gate["repos"].items():
        parts += _gate_lines(name, repo_gate, enabled=gate["enabled"],
                             unavailable=unavailable.get(name))
        tasks = [task for task in view["tasks"] if task["repo"] == name]
        parts.append(_queue_task_table(tasks) if tasks else Text("  no open tasks",
                                                                  style="dim"))
        parts.append(Text(""))
    if not gate["repos"]:
        parts.append(Text("no repos and no open tasks"))
    limit = view.get("max_concurrency")
    if view["running"]:
        parts.append(_running_table(view["running"], limit))
    else:
        parts.append(Text("running jobs: none" + ("" if limit is None else
                                                  f" (max_concurrency {limit})")))
    parts += [Text(""), _reaper_line(view["reaper"], view["counters"])]
    return Group(*parts)


def queue_print(view: dict[str, Any], width: int | None = None) -> None:
    console(width).print(queue_renderable(view))


def queue_watch(fetch: Any, interval_s: float = 2.0) -> None:
    """Redraw `orch queue` in place every interval until Ctrl-C (KeyboardInterrupt)."""

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text


    def frame() -> Any:
        stamp = now_iso()[11:19]
        header = Text(f"orch queue at {stamp}Z, every {interval_s:g} s (Ctrl-C to stop)",
                      style="bold")
        return Group(header, queue_renderable(fetch()))

    with Live(frame(), console=console(), auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval_s)
            live.update(frame(), refresh=True)


# --------------------------------------------------------------------------- gc, snapshot


def gc_summary(report: dict[str, Any]) -> None:
    """One line per collected closed task, then the totals (orch gc)."""
    dry = report["dry_run"]
    for item in report["tasks"]:
        branch = (f"branch {item['branch']} {item['branch_action']}" if item["branch"]
                  else "no branch")
        pruned = (f"{item['events']} event(s), {item['runs']} run(s), {item['logs']} log "
                  f"file(s) {'to prune' if dry else 'pruned'}")
        line = (f"task {item['id']} ({item['repo']}, {item['stage']}): worktree "
                f"{item['worktree']}; {branch}; {pruned}")
        if item["note"]:
            line += f" [{item['note']}]"
        print(line)
        if item["error"]:
            print(f"error: task {item['id']}: {item['error']}", file=sys.stderr)
    totals = report["totals"]
    verb = "would prune" if dry else "pruned"
    print(f"{'dry run, nothing changed: ' if dry else ''}{totals['tasks']} closed task(s) "
          f"older than {report['older_than_days']} day(s); {totals['worktrees']} worktree(s), "
          f"{totals['branches_deleted']} branch(es) {'to delete' if dry else 'deleted'}, "
          f"{totals['branches_kept']} kept; {verb} {totals['events']} event(s), "
          f"{totals['runs']} run(s), {totals['logs']} log file(s)")


def snapshot_summary(result: dict[str, Any]) -> None:
    """What orch snapshot wrote."""
    print(f"snapshot {result['path']}: state (schema {result['schema_version']}) and "
          f"{result['files']} artifact file(s) of {len(result['open_tasks'])} open task(s), "
          f"{result['size']} bytes")


# --- orch test-run, orch doctor, orch demo ---------------------------------------------

DOCTOR_MARKS = {"ok": "[ ok ]", "warn": "[warn]", "fail": "[FAIL]"}
DEMO_QUIET_KINDS = ("created", "enqueued")  # in the final timeline, not worth a progress line


def testrun_summary(meta: dict[str, Any], body: str, *, workdir: Any, source: str,
                     report: Any) -> None:
    """A test run in a few lines; after a FAIL or DEFER, the report's body too."""
    line = f"{meta['result']} ({meta['reason']}): {meta['command']}"
    code = meta.get("exit_code")
    line += f", exit {code}" if code is not None else ", did not start"
    line += f", {meta['duration_s']:.1f} s"
    tests = meta.get("tests")
    if tests:
        line += "; " + ", ".join(f"{count} {name}" for name, count in tests.items())
    print(line)
    print(f"in {workdir} with the settings of {source}")
    if report is not None:
        print(f"report: {report}")
    if meta["result"] != "PASS":  # the failing tests and the output tail, for the CI log
        sections = body.find("\n## ")
        if sections >= 0:
            print(body[sections:].rstrip("\n"))


def doctor_checks(checks: list[dict[str, str]]) -> None:
    """One line per check with its mark, then the counts."""
    width = max((len(check["name"]) for check in checks), default=0)
    for check in checks:
        mark = DOCTOR_MARKS.get(check["status"], check["status"])
        print(f"{mark} {check['name']:<{width}}  {check['detail']}")
    counts = {status: sum(1 for c in checks if c["status"] == status) for status in DOCTOR_MARKS}
    print(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed")


def demo_step(step: Any) -> None:
    """One line of `orch demo` progress (stage transitions stand out)."""
    if step.kind in DEMO_QUIET_KINDS:
        return
    if step.kind == "stage":
        print(f"{step.elapsed_s:6.1f} s  ==> {step.detail.removeprefix('-> ')}", flush=True)
    elif step.kind == "demo":
        print(f"{step.elapsed_s:6.1f} s  {step.detail}", flush=True)
    else:
        job = f"job {step.job_id}: " if step.job_id else ""
        print(f"{step.elapsed_s:6.1f} s      {step.kind:<11} {job}{step.detail}", flush=True)


def demo_summary(result: Any) -> None:
    """How the demo ended, where its home is and how to look around."""
    print()
    if result.done:
        print(f"Task {result.task_id} is done in {result.elapsed_s:.1f} s: merged into main of "
              f"{result.repo_path} at {result.merged_commit[:12]}.")
    elif result.timed_out:
        print(f"Task {result.task_id} did not finish in time (stage {result.stage}, state "
              f"{result.state}).")
    else:
        print(f"Task {result.task_id} stopped at stage {result.stage} (state {result.state}).")
    if result.removed:
        print(f"The temporary home {result.home} was removed; run `orch demo --keep` to keep "
              "it and look around.")
        return
    from shlex import quote

    print(f"The demo home: {result.home}")
    print("Look around:")
    for command in ("queue", f"task show {result.task_id}", "doctor"):
        print(f"  orch --home {quote(str(result.home))} {command}")
    print(f"  git -C {quote(str(result.repo_path))} log --oneline main")
