"""The only module that imports rich: tables, timelines and JSON output."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from orch.timeutil import human, now_iso, parse_iso, span


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def console(width: int | None = None) -> Any:
    from rich.console import Console

    return Console(width=width, highlight=False, soft_wrap=False)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def table(title: str | None, columns: list[str], rows: list[list[Any]],
          width: int | None = None) -> None:
    """A table with a header on every column, wrapped at spaces, never inside a word.

    Each column is at least as wide as its longest word; when the terminal cannot
    hold that (a narrow one), each row becomes a block of `column: value` lines.
    """
    from rich.table import Table
    from rich.text import Text

    out = console(width)
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    minimums = [max([_longest_word(header), *(_longest_word(row[i]) for row in cells)])
                for i, header in enumerate(columns)]
    if sum(minimums) + 2 * (len(columns) - 1) > out.width:
        _records(out, title, columns, cells)
        return
    grid = Table(title=title, title_justify="left", title_style="bold", box=None,
                 show_edge=False, pad_edge=False, header_style="bold", padding=(0, 1))
    for column, minimum in zip(columns, minimums, strict=True):
        grid.add_column(column, min_width=minimum, overflow="fold")
    for row in cells:
        grid.add_row(*[Text(cell) for cell in row])  # Text: no markup in the values
    out.print(grid)


def _records(out: Any, title: str | None, columns: list[str], cells: list[list[str]]) -> None:
    """A table too wide for the terminal, as one block of `column: value` lines per row."""
    from orch.cli.layout import wrap

    if title:
        out.print(title, style="bold", markup=False)
    width = max(out.width, 20)
    for row in cells:
        for index, (column, value) in enumerate(zip(columns, row, strict=True)):
            if value:
                lead = "- " if index == 0 else "  "
                for line in wrap(f"{lead}{column}: {value}", width, style=""):
                    out.print(line.text, markup=False, no_wrap=True, overflow="ignore")


def pipeline_table(stages: list[dict[str, Any]], width: int | None = None) -> None:
    """The stages in order: what runs each (the agent role, else the runner), its gate,
    where a FAIL goes, and what it writes. Fits 80 columns for the default pipeline."""
    rows = [[index + 1, s["name"], s["role"] or s["runner"], s["gate"], s["on_fail"] or "-",
             ", ".join(s["deliverables"]) + (" (questions)" if s["questions"] else "") or "-"]
            for index, s in enumerate(stages)]
    table("pipeline", ["#", "stage", "runs", "gate", "on fail", "writes"], rows, width)


def task_rows(tasks: list[dict[str, Any]], width: int | None = None, *,
              hidden: int = 0, what: str = "tasks") -> None:
    """`orch task list`: one row per task, then how many closed ones are not shown."""
    if tasks:
        rows = [[t["id"], t["repo"], t["stage"], t["state"], t["round"],
                 "yes" if t["paused_at"] else "", t["title"]] for t in tasks]
        table(None, ["id", "repo", "stage", "state", "round", "paused", "title"], rows, width)
    else:
        print(f"no {what}")
    if hidden:
        print(f"{hidden} closed task{'s' if hidden != 1 else ''} not shown (--all shows "
              "them)")


def _duration(run: dict[str, Any]) -> str:
    if not run["finished_at"]:
        return f"{span((parse_iso(now_iso()) - parse_iso(run['started_at'])).total_seconds())}" \
            " so far"
    return span((parse_iso(run["finished_at"]) - parse_iso(run["started_at"])).total_seconds())


def _runs_table(detail: dict[str, Any], width: int | None) -> None:
    stage_of = {job["id"]: job["stage"] for job in detail["jobs"]}
    denied = any(r.get("denials") for r in detail["runs"])  # a column only when it says so
    rows = [[r["id"], r["job_id"], stage_of.get(r["job_id"], "?"), human(r["started_at"]),
             _duration(r), r["outcome"] or "running",
             r["exit_code"] if r["exit_code"] is not None else "",
             f"${r['cost_usd']:.2f}" if r["cost_usd"] is not None else "",
             *([r.get("denials") or ""] if denied else [])]
            for r in detail["runs"]]
    table("runs", ["run", "job", "stage", "started", "took", "outcome", "exit", "cost",
                   *(["denied"] if denied else [])], rows, width)
    costs = [r["cost_usd"] for r in detail["runs"] if r["cost_usd"] is not None]
    total = f"${sum(costs):.2f}" if costs else "none reported"
    print(f"cost of the task: {total} ({len(costs)} of {len(detail['runs'])} runs report one)")


def _say(out: Any, text: str, *, style: str = "", indent: str = "",
         hanging: str | None = None) -> None:
    """Print TEXT wrapped at spaces to the console's width (never inside a word)."""
    from orch.cli.layout import wrap

    for line in wrap(text, out.width, indent, hanging=hanging):
        out.print(line.text, style=style or None, markup=False, no_wrap=True,
                  overflow="ignore", highlight=False)


def task_detail(detail: dict[str, Any], width: int | None = None) -> None:
    """A task as a person reads it: header, jobs and runs, then the timeline (times UTC)."""
    task = detail["task"]
    out = console(width)
    _say(out, f"task {task['id']} {task['title']}", style="bold")
    _say(out, f"repo {task['repo']}  stage {task['stage']}  state {task['state']}  "
              f"round {task['round']}  priority {task['priority']}  branch {task['branch'] or '-'}")
    _say(out, f"created {human(task['created_at'])}, last changed {human(task['updated_at'])} "
              "(all times UTC)")
    if task["paused_at"]:
        _say(out, f"paused since {human(task['paused_at'])}: "
                  f"{task['pause_reason'] or 'no reason given'}")
    if task["hold_reason"]:
        _say(out, f"held: {task['hold_reason']}")
    if detail["jobs"]:
        rows = [[j["id"], j["stage"], j["runner"], j["status"], j["attempt"], j["defers"],
                 j["verdict"] or "", j["exit_code"] if j["exit_code"] is not None else ""]
                for j in detail["jobs"]]
        table("jobs", ["job", "stage", "runner", "status", "attempt", "defers", "verdict",
                       "exit"], rows, width)
    if detail["runs"]:
        _runs_table(detail, width)
    out.print("timeline", style="bold")
    for event in detail["events"]:
        job = f" job {event['job_id']}" if event["job_id"] else ""
        _say(out, f"{human(event['at'])}  {event['kind']:<12}{job}  {event['detail']}",
             indent="  ", hanging=" " * 23)
    _say(out, f"artifacts: {', '.join(detail['artifacts']) or 'none'}")


def config_values(report: dict[str, Any], file: str, width: int | None = None) -> None:
    """`orch config show`: `key = value  (source)` per setting, wrapped at spaces, then the
    warnings about ORCH_* variables that set nothing."""
    out = console(width)
    _say(out, f"the effective configuration of {file}, each value with its source: default, "
              "a line of that file, or an ORCH_* variable", style="bold")
    for value in report["values"]:
        _say(out, f"{value['key']} = {json.dumps(value['value'])}  ({value['source']})",
             hanging="    ")
    for warning in report["warnings"]:
        _say(out, f"warning: {warning}", hanging="    ")


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


def _lines_renderable(lines: list[Any]) -> Any:
    """Layout lines (orch.cli.layout.Line) as one rich renderable."""
    from rich.console import Group
    from rich.text import Text

    return Group(*(Text(line.text, style=line.style, no_wrap=True, overflow="ignore")
                   for line in lines))


def queue_renderable(view: dict[str, Any], width: int = 80, height: int | None = None) -> Any:
    """`orch queue` as one rich renderable (orch.cli.layout.queue_lines: per repo a summary
    and its tasks, same reasons folded; then the running jobs and the reaper).
    `view` is QueueView.for_display()."""
    from orch.cli.layout import queue_lines

    return _lines_renderable(queue_lines(view, width, height))


def queue_print(view: dict[str, Any], width: int | None = None) -> None:
    out = console(width)
    out.print(queue_renderable(view, out.width))


def queue_watch(fetch: Any, interval_s: float = 2.0) -> None:
    """Redraw `orch queue` in place every interval, fitted to the terminal's size, until
    Ctrl-C (KeyboardInterrupt, which the caller turns into its exit line)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    out = console()

    def frame() -> Any:
        width, height = out.size
        header = Text(f"orch queue at {human(now_iso())} UTC, every {interval_s:g} s "
                      "(Ctrl-C to stop)", style="bold", no_wrap=True, overflow="ellipsis")
        return Group(header, queue_renderable(fetch(), width, max(8, height - 1)))

    with Live(frame(), console=out, auto_refresh=False, screen=False,
              vertical_overflow="crop") as live:
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
    _say(console(), f"{'dry run, nothing changed: ' if dry else ''}{totals['tasks']} closed "
         f"task(s) older than {report['older_than_days']} day(s); {totals['worktrees']} "
         f"worktree(s), {totals['branches_deleted']} branch(es) "
         f"{'to delete' if dry else 'deleted'}, {totals['branches_kept']} kept; {verb} "
         f"{totals['events']} event(s), {totals['runs']} run(s), {totals['logs']} log file(s)")


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


def doctor_checks(checks: list[dict[str, str]], width: int | None = None) -> None:
    """One check per line with its mark, wrapped at spaces to the terminal's width under
    its detail column, then the counts."""
    out = console(width)
    names = max((len(check["name"]) for check in checks), default=0)
    for check in checks:
        mark = DOCTOR_MARKS.get(check["status"], check["status"])
        lead = f"{mark} {check['name']:<{names}}  "
        hanging = " " * (len(lead) if len(lead) <= out.width // 2 else 4)
        _say(out, lead + check["detail"], hanging=hanging)
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
