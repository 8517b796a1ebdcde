"""Setting up and inspecting the installation: init, pipeline show."""

from __future__ import annotations

from typing import Annotated

import typer

from orch.cli.context import AppContext
from orch.errors import UsageError

pipeline_app = typer.Typer(help="Inspect the pipeline (the stage machine).", no_args_is_help=True)


def init(
    ctx: typer.Context,
    repo: Annotated[list[str] | None, typer.Option(
        "--repo", metavar="NAME=PATH", help="Add a repo to a new orch.yaml (repeatable).")] = None,
    agents: Annotated[str, typer.Option(
        "--agents", metavar="claude|codex|aider",
        help="Whose presets fill `agents:` in a new orch.yaml (aider: the developer only).")
    ] = "claude",
) -> None:
    """Create the home, a commented orch.yaml and the database (idempotent).

    Example: orch --home ~/orch init --repo app=~/src/app --agents codex
    """
    from orch.engine.commands.init import init_home

    obj: AppContext = ctx.obj
    result = init_home(obj.home, repo or [], agents)
    state = "wrote" if result.config_written else "kept existing"
    print(f"orch home: {result.home} ({state} orch.yaml)")
    for name in result.repos:
        print(f"repo: {name}")


@pipeline_app.command("show")
def pipeline_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print {\"stages\": [...]}.")] = False,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid diagram.")] = False,
) -> None:
    """Print the stage machine as a table, JSON or a Mermaid state diagram.

    Example: orch pipeline show --mermaid
    """

    if as_json and mermaid:
        raise UsageError("--json and --mermaid exclude each other")
    pipeline = ctx.obj.pipeline
    stages = [stage.as_dict() for stage in pipeline.stages]
    if as_json:
        from orch.cli.render import emit_json

        emit_json({"stages": stages})
    elif mermaid:
        print(pipeline.to_mermaid())
    else:
        from orch.cli.render import pipeline_table

        pipeline_table(stages)
        print(f"source: {pipeline.source}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(pipeline_app, name="pipeline")
