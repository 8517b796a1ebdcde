"""`orch task ...`: add, import, list, show, move."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orch.errors import UsageError

task_app = typer.Typer(help="Add, import, list and show tasks.", no_args_is_help=True)


@task_app.command("add")
def add(
    ctx: typer.Context,
    repo: Annotated[str, typer.Option("--repo", help="The repo the task belongs to.")],
    title: Annotated[str, typer.Option("--title", help="A one-line title.")],
    body: Annotated[str | None, typer.Option("--body", help="The task's description.")] = None,
    body_file: Annotated[Path | None, typer.Option(
        "--body-file", help="Read the description from a file.")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the task object.")] = False,
) -> None:
    """Add a task; it waits at the first stage for the serial gate.

    Example: orch task add --repo app --title "Add a health endpoint" --priority 5
    """
    from orch.engine.commands.tasks import NewTask, add_task
    from orch.engine.kick import kick

    if body is not None and body_file is not None:
        raise UsageError("--body and --body-file exclude each other")
    if body_file is not None:
        try:
            body = body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--body-file {body_file}: cannot read: {exc}") from exc
    obj = ctx.obj
    first_stage = obj.pipeline.first.name  # a bad config or pipeline stops us before the db
    task = add_task(obj.settings, obj.db, NewTask(repo, title, body or "", priority),
                    first_stage)
    kick(obj.settings, "orch task add", obj.db)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(task.as_dict())
    else:
        print(task.id)


@task_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A .yaml/.yml list or a .jsonl file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the new ids as JSON.")] = False,
) -> None:
    """Add many tasks in one transaction: all of them, or none.

    Each record has repo and title, and optionally body and priority.
    Example: orch task import backlog.yaml
    """
    from orch.engine.commands.tasks import import_tasks
    from orch.engine.kick import kick

    obj = ctx.obj
    first_stage = obj.pipeline.first.name  # a bad config or pipeline stops us before the db
    ids = import_tasks(obj.settings, obj.db, file, first_stage)
    if ids:
        kick(obj.settings, "orch task import", obj.db)
    if as_json:
        from orch.cli.render import emit_json

        emit_json({"ids": ids})
    else:
        print(f"imported {len(ids)} task(s): {' '.join(map(str, ids))}".rstrip(": "))


@task_app.command("list")
def list_(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Include closed tasks.")] = False,
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repo.")] = None,
    state: Annotated[str | None, typer.Option(
        "--state", metavar="STATE", help="Only tasks in this state: waiting, active, "
        "needs_input, held or closed.")] = None,
    stage: Annotated[str | None, typer.Option(
        "--stage", metavar="STAGE", help="Only tasks at this stage (done, failed and "
        "cancelled are the stages of closed tasks).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List open tasks (with --all or --state closed, closed ones too); the text says how
    many closed tasks it leaves out.

    Example: orch task list --repo app --state held --json
    """
    from orch.engine.commands.tasks import list_tasks

    obj = ctx.obj
    if repo is not None:
        obj.settings.repo(repo)
    found = list_tasks(obj.db, include_closed=show_all, repo=repo, state=state, stage=stage)
    rows = [task.as_dict() for task in found.tasks]
    if as_json:
        from orch.cli.render import emit_json

        emit_json(rows)
    else:
        from orch.cli.render import task_rows

        filtered = state is not None or stage is not None or repo is not None
        what = "tasks" if show_all or state == "closed" else "open tasks"
        task_rows(rows, hidden=found.hidden_closed,
                  what=f"{what} match" if filtered else what)


@task_app.command("show")
def show(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", help="The task id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print task, jobs, runs, events, "
                                          "artifacts as one object.")] = False,
) -> None:
    """Show a task: its jobs and runs, its artifacts and its events as a timeline.

    Example: orch task show 42
    """
    from orch.engine.commands.tasks import task_detail

    obj = ctx.obj
    detail = task_detail(obj.settings, obj.db, task_id)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(detail)
    else:
        from orch.cli.render import task_detail as render_detail

        render_detail(detail)


@task_app.command("move")
def move(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", help="The task id.")],
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="The host to pin the task to.")],
) -> None:
    """Pin a task to another host of the shared state (exit 1 while a job of it runs).

    Example: orch task move 42 --host build-2
    """
    from orch.engine.commands.tasks import move_task

    print(move_task(ctx.obj.db, task_id, host))


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")
