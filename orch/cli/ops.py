"""Day-to-day operation: tick, queue, logs, and the operator actions on tasks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orch.cli.context import AppContext

IDS = Annotated[list[int], typer.Argument(metavar="ID...", help="One or more task ids.")]


def _report(results: list) -> None:
    """Print each id's outcome; exit with the highest status among them."""
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
    from orch.engine import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.pause(obj.db, i, reason)))


def resume(ctx: typer.Context, ids: IDS) -> None:
    """Clear a pause (and turn needs_input back to active).

    Example: orch resume 42
    """
    from orch.engine import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.resume(obj.db, i)))


def retry(ctx: typer.Context, ids: IDS) -> None:
    """Return held tasks to work with fresh attempts.

    Example: orch retry 42
    """
    from orch.engine import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.retry(obj.db, i)))


def cancel(ctx: typer.Context, ids: IDS) -> None:
    """End tasks; a running job's process group is terminated.

    Example: orch cancel 42
    """
    from orch.engine import actions

    obj: AppContext = ctx.obj
    _report(actions.apply_each(ids, lambda i: actions.cancel(obj.settings, obj.db, i)))


def _freeze(ctx: typer.Context, repos: list[str] | None, every: bool, frozen: bool) -> None:
    from orch.engine import actions
    from orch.errors import UsageError

    obj: AppContext = ctx.obj
    if every == bool(repos):
        raise UsageError("name one or more repos, or --all")
    names = sorted(obj.settings.repos) if every else list(repos or [])
    for name in names:
        obj.settings.repo(name)
    actions.freeze(obj.db, names, frozen)
    for name in names:
        print(f"{name}: {'frozen' if frozen else 'unfrozen'}")


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


def register(app: typer.Typer) -> None:
    for command in (pause, resume, retry, cancel, freeze, unfreeze):
        app.command(command.__name__)(command)
