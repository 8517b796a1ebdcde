"""Inspection: `orch queue` (what waits, and why) and `orch logs` (a run's output)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orch.cli.context import AppContext
from orch.errors import Interrupted, UsageError

WATCH_INTERVAL_S = 2.0


def queue(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repo.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (tasks, "
                                          "running, serial_gate, reaper, counters).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw every 2 s until Ctrl-C.")]
    = False,
) -> None:
    """Show every open task with the one line it waits for, the serial gate per repo,
    the running jobs and the reaper's counters.

    Example: orch queue --repo app
    """
    from orch.engine.commands.queue import build_queue

    obj: AppContext = ctx.obj
    if as_json and watch:

        raise UsageError("--json and --watch exclude each other")
    view = build_queue(obj.settings, obj.db, repo, obj.pipeline)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(view.as_dict())
        return
    if not watch:
        from orch.cli.render import queue_print

        queue_print(view.for_display())
        return
    from orch.cli.render import queue_watch

    try:
        queue_watch(lambda: build_queue(obj.settings, obj.db, repo, obj.pipeline)
                    .for_display(), WATCH_INTERVAL_S)
    except KeyboardInterrupt:
        raise Interrupted("stopped watching the queue; it only reads, so nothing was "
                          "changed") from None


def logs(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(metavar="JOB", help="The job id.")],
    run: Annotated[int | None, typer.Option("--run", metavar="RUN_ID",
                                            help="This run (default: the job's newest).")]
    = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what is "
                                         "appended until the run ends (or Ctrl-C).")] = False,
) -> None:
    """Print a run's log: its stdout and stderr (runs.log_path).

    Example: orch logs 31 --follow
    """
    from orch.engine.commands.logs import print_log

    obj: AppContext = ctx.obj

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        print_log(obj.settings, obj.db, job, run, write, follow=follow)
    except KeyboardInterrupt:
        again = f"orch logs {job}" + (f" --run {run}" if run is not None else "") + \
            (" --follow" if follow else "")
        raise Interrupted(f"stopped printing the log of job {job}; the run itself goes on "
                          f"({again} shows it again)") from None


def register(app: typer.Typer) -> None:
    for command in (queue, logs):
        app.command(command.__name__)(command)
