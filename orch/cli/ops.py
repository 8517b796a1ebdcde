"""Day-to-day operation: tick, queue, logs, and the operator actions on tasks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orch.cli.context import AppContext
from orch.errors import Interrupted, UsageError

IDS = Annotated[list[int], typer.Argument(metavar="ID...", help="One or more task ids.")]


def _report(results: list, obj: AppContext | None = None, verb: str = "") -> None:
    """Print each id's outcome; kick a tick when one changed what may run (`obj` given);
    exit with the highest status among them."""
    if obj is not None and any(not result.exit_code for result in results):
        from orch.engine.kick import kick

        kick(obj.settings, f"orch {verb}", obj.db)
    for result in results:
        if result.exit_code:
            print(f"error: {result.message}", file=sys.stderr)
        else:
            print(result.message)
    worst = max((result.exit_code for result in results), default=0)
    if worst:
        raise typer.Exit(worst)


def pause(
    ctx: typer.Context, ids: IDS,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in orch queue).")]
    = None,
) -> None:
    """Park tasks: state kept, no new job; the slot is released once no job runs.

    Example: orch pause 42 43 --reason "waiting for the API freeze"
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.pause(obj.db, i, reason)), obj, "pause")


def resume(ctx: typer.Context, ids: IDS) -> None:
    """Clear a pause (and turn needs_input back to active).

    Example: orch resume 42
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.resume(obj.db, i)), obj, "resume")


def retry(ctx: typer.Context, ids: IDS) -> None:
    """Return held tasks to work with fresh attempts.

    Example: orch retry 42
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.retry(obj.db, i)), obj, "retry")


def cancel(ctx: typer.Context, ids: IDS) -> None:
    """End tasks; a running job's process group is terminated.

    Example: orch cancel 42
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.cancel(obj.settings, obj.db, i)),
            obj, "cancel")


def _freeze(ctx: typer.Context, repos: list[str] | None, every: bool, frozen: bool) -> None:
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    if every == bool(repos):
        raise UsageError("name one or more repos, or --all")
    names = sorted(obj.settings.repos) if every else list(repos or [])
    for name in names:
        obj.settings.repo(name)
    actions.freeze(obj.db, names, frozen)
    for name in names:
        print(f"{name}: {'frozen' if frozen else 'unfrozen'}")
    if not frozen:  # admissions may go on
        from orch.engine.kick import kick

        kick(obj.settings, "orch unfreeze", obj.db)


def freeze(
    ctx: typer.Context,
    repos: Annotated[list[str] | None, typer.Argument(metavar="REPO...", help="Repos.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every configured repo.")] = False,
) -> None:
    """Stop new admissions for repos (running work goes on).

    Example: orch freeze app
    """
    _freeze(ctx, repos, every, True)


def unfreeze(
    ctx: typer.Context,
    repos: Annotated[list[str] | None, typer.Argument(metavar="REPO...", help="Repos.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every configured repo.")] = False,
) -> None:
    """Allow admissions again for repos.

    Example: orch unfreeze --all
    """
    _freeze(ctx, repos, every, False)


def approve(ctx: typer.Context, ids: IDS) -> None:
    """Approve tasks waiting at a human stage (PASS).

    Example: orch approve 42
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.approve_or_reject(
        obj.settings, obj.pipeline, obj.db, i, True)), obj, "approve")


def reject(
    ctx: typer.Context, ids: IDS,
    reason: Annotated[str, typer.Option("--reason", help="Why; given to the next agent.")],
) -> None:
    """Reject tasks waiting at a human stage (FAIL to its on_fail stage).

    Example: orch reject 42 --reason "the API must stay backwards compatible"
    """
    from orch.engine.commands import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.approve_or_reject(
        obj.settings, obj.pipeline, obj.db, i, False, reason)), obj, "reject")


def tick(
    ctx: typer.Context,
    max_claims: Annotated[int, typer.Option("--max-claims", min=0,
                                            help="Claim at most N jobs.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would happen; "
                                          "write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tick report as JSON "
                                          "(with --every: one line per tick).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing unless something "
                                        "went wrong (for cron).")] = False,
    every: Annotated[float | None, typer.Option(
        "--every", metavar="SECONDS", min=0.1,
        help="Tick again and again at this period in the foreground, for machines without "
             "cron, until SIGTERM or SIGINT (which end it after the tick in progress).")]
    = None,
    kicked: Annotated[str | None, typer.Option("--kicked", hidden=True)] = None,
) -> None:
    """Move every task as far as it may go, repair crashes, claim jobs, exit.

    Run it from cron or a systemd timer every minute, or as `orch tick --every 30` in the
    foreground where there is no cron (a container).
    Example: orch tick --json
    """
    from orch.engine.tick import TickReport, run_tick, run_ticks_every

    obj: AppContext = ctx.obj
    if kicked is not None:  # a kicked tick: clear its pending mark before reading any state
        from orch.engine.kick import clear_pending

        clear_pending(obj.settings, kicked)

    def show(report: TickReport) -> None:
        if as_json:
            from orch.cli.render import emit_json

            emit_json(report.as_dict())
        elif not quiet or report.errors:
            from orch.cli.render import tick_summary

            tick_summary(report.as_dict(), dry_run=dry_run, quiet=quiet)

    if every is None:
        try:
            report = run_tick(obj.settings, obj.pipeline, obj.db, max_claims=max_claims,
                              dry_run=dry_run)
        except KeyboardInterrupt:
            raise Interrupted("the tick stopped where it was: what it had committed stays, "
                              "the agent runs it started go on, and an inline run it was "
                              "carrying out (tests, staging, merge, a command) was stopped; "
                              "the next tick reaps and retries that one") from None
        show(report)
        return

    def one_tick() -> TickReport:  # orch.yaml and the pipeline re-read, as cron's ticks do
        obj.reload()
        return run_tick(obj.settings, obj.pipeline, obj.db, max_claims=max_claims,
                        dry_run=dry_run)

    run_ticks_every(every, one_tick, show)


def supervise(
    ctx: typer.Context,
    job: Annotated[int, typer.Option("--job", help="Job id.")],
    run: Annotated[int, typer.Option("--run", help="Run id.")],
) -> None:
    """Internal: supervise one agent run (started by orch tick with its plan on stdin).

    Example: orch supervise --job 7 --run 12
    """

    from orch.engine.run.plan import AgentPlan
    from orch.engine.run.supervisor import supervise as run_supervisor
    from orch.state import connect

    try:
        plan = AgentPlan.from_json(sys.stdin.read())
    except (ValueError, TypeError) as exc:
        raise UsageError(f"orch supervise reads its plan from the tick on stdin: {exc}") from exc
    if (plan.job_id, plan.run_id) != (job, run):
        raise UsageError(f"the plan on stdin is for job {plan.job_id} run {plan.run_id}")
    db = connect(plan.state)
    try:
        raise typer.Exit(run_supervisor(db, plan))
    finally:
        db.close()


def register(app: typer.Typer) -> None:
    for command in (tick, pause, resume, retry, cancel, approve, reject, freeze, unfreeze):
        app.command(command.__name__)(command)
    app.command("supervise", hidden=True)(supervise)
