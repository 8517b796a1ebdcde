"""Keeping an installation watched and tidy: metrics, gc, snapshot, state migrate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orch.cli.context import AppContext


def metrics(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE",
        help="Write to FILE atomically instead of printing: a .prom file in node_exporter's "
             "textfile collector directory (another name is refused).")] = None,
) -> None:
    """Print the counters, tasks by stage and state, running jobs and the last tick time
    in the Prometheus text format.

    Example: orch metrics --output /var/lib/node_exporter/textfile/orch.prom
    """
    from orch.engine.commands.metrics import (
        check_textfile_name,
        collect,
        render,
        write_textfile,
    )

    if output is not None:
        check_textfile_name(output)  # before the database is opened: a usage error
    obj: AppContext = ctx.obj
    text = render(collect(obj.db, stages=tuple(obj.pipeline.names),
                          repos=tuple(obj.settings.repos),
                          host_timeout_s=obj.settings.host_timeout_s))
    if output is None:
        print(text, end="")
    else:
        write_textfile(output, text)


def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be removed; change nothing.")] = False,
    older_than: Annotated[int | None, typer.Option(
        "--older-than", metavar="DAYS", min=0,
        help="Closed tasks last changed more than DAYS ago (default: retention_days).")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Also delete branches of cancelled tasks that have unmerged "
                        "commits.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
    = False,
) -> None:
    """Remove the worktrees and branches of old closed tasks and prune their events, runs
    and logs.

    Open tasks are never touched; a branch with commits that are not on the default branch
    is kept, unless the task was cancelled and --force is given. Exit 1 when git failed
    for some task (the others are still collected).
    Example: orch gc --dry-run --older-than 30
    """
    from orch.engine.commands.gc import run_gc

    obj: AppContext = ctx.obj
    report = run_gc(obj.settings, obj.db, older_than_days=older_than, force=force,
                    dry_run=dry_run)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(report.as_dict())
    else:
        from orch.cli.render import gc_summary

        gc_summary(report.as_dict())
    if report.errors:
        raise typer.Exit(1)


def snapshot(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="The .tar.gz to write (refused if it exists).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")]
    = False,
) -> None:
    """Pack a consistent copy of the state (SQLite backup API), the artifacts of open
    tasks and a manifest.json into FILE, e.g. for a bug report.

    Example: orch snapshot /tmp/orch-state.tar.gz
    """
    from orch.engine.commands.snapshot import make_snapshot

    obj: AppContext = ctx.obj
    result = make_snapshot(obj.settings, obj.db, file, force=force)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(result.as_dict())
    else:
        from orch.cli.render import snapshot_summary

        snapshot_summary(result.as_dict())


state_app = typer.Typer(help="Move a home's state between SQLite and PostgreSQL.",
                        no_args_is_help=True)


@state_app.command("migrate")
def state_migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option(
        "--to", metavar="URL",
        help="The empty target: postgresql://USER@HOST/DB, or a new SQLite file "
             "(sqlite:///PATH or a path) to come back.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was copied as JSON.")]
    = False,
) -> None:
    """Copy the whole state into an empty database, verify the counts, mark this one as
    moved, and print the `state:` line to put in orch.yaml (exit 1 while a job runs).

    Example: orch state migrate --to postgresql://orch@db.internal/orch
    """
    from orch.engine.commands.migrate import migrate_state

    obj: AppContext = ctx.obj
    result = migrate_state(obj.settings, obj.db, to)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(result.as_dict())
        return
    for table, count in result.counts.items():
        print(f"{table}: {count} rows copied")
    if result.artifact_files:
        print(f"artifacts: {result.artifact_files} files of open tasks stored")
    print(f"copied {result.source} -> {result.target}; counts verified")
    print(f"now put this line in orch.yaml (orch never rewrites it):\n  {result.state_line}")


def register(app: typer.Typer) -> None:
    for command in (metrics, gc, snapshot):
        app.command(command.__name__)(command)
    app.add_typer(state_app, name="state")
