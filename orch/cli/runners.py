"""The runners from the terminal: `orch test-run` (CI), `orch doctor`, `orch demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orch.cli.context import AppContext
from orch.errors import Interrupted


def test_run(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(
        metavar="PATH", help="The tree to test (default: the current directory, or the "
        "task's worktree with --task).", show_default=False)] = None,
    target: Annotated[str | None, typer.Option(
        "--target", metavar="T", help="Tests to run, appended to the command (replaces the "
        "repo's `target`; '' for none).")] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", metavar="S", help="Kill the whole test process tree after S seconds "
        "(default: the repo's timeout_s, else 900).")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE", help="Write the test report (13-test-report.md format) "
        "here (default: none; with --task, the task's report).")] = None,
    task: Annotated[int | None, typer.Option(
        "--task", metavar="ID", help="Test this task's worktree with its repo's `test` "
        "section, as the pipeline's testing stage does.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the report's front matter as one JSON object.")] = False,
) -> None:
    """Run the tests as the pipeline's testing stage does: exit 0 PASS, 1 FAIL, 75 DEFER.

    With --task, or a home whose orch.yaml names the repo at PATH, the repo's `test`
    section applies; otherwise the defaults (`python -m pytest -q`), and no home is needed.

    Example: orch test-run . --target tests/unit --timeout 600 --report test-report.md
    """
    from orch.engine.commands.testrun import TestRunRequest, run_test_run

    obj: AppContext = ctx.obj
    request = TestRunRequest(path=path, target=target, timeout_s=timeout, report=report,
                             task_id=task)
    try:
        result = run_test_run(obj.settings, request)
    except KeyboardInterrupt:
        raise Interrupted("the test run stopped: its whole process tree was killed and no "
                          "verdict was written (no report, no test exit status)") from None
    if as_json:
        from orch.cli.render import emit_json

        emit_json(result.as_dict())
    else:
        from orch.cli.render import testrun_summary

        plan = result.plan
        testrun_summary(result.outcome.meta, result.outcome.body, workdir=plan.workdir,
                         source=plan.source, report=plan.report)
    raise typer.Exit(result.exit_status)


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"checks": [{"name", "status", "detail"}]}.')] = False,
) -> None:
    """Check that this home can work; exit 1 when any check fails.

    The config, the database (integrity, schema version), each repo, the agent and test
    commands on PATH, each staging channel (`ssh HOST true`) and the last tick's age.

    Example: orch --home ~/orch doctor
    """
    from orch.engine.commands.doctor import run_doctor

    obj: AppContext = ctx.obj
    report = run_doctor(obj.home)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(report.as_dict())
    else:
        from orch.cli.render import doctor_checks

        doctor_checks([check.as_dict() for check in report.checks])
    raise typer.Exit(report.exit_status)


def demo(
    ctx: typer.Context,
    keep: Annotated[bool, typer.Option(
        "--keep", help="Keep the temporary home afterwards, to look around in it.")] = False,
) -> None:
    """Watch one task go from analysis to merged on a small example, no LLM needed.

    Makes a home (a temporary one unless the global --home is given: it must be new or
    empty), a git repository with a pytest suite and demo agents, then ticks a task to
    done. Exit 0 when the task is done and merged, 1 otherwise.

    Example: orch --home /tmp/orch-demo demo
    """
    from orch.cli.render import demo_step, demo_summary, task_detail
    from orch.engine.commands.demo import run_demo

    obj: AppContext = ctx.obj
    result = run_demo(obj.home_option, keep=keep, progress=demo_step)
    task_detail(result.detail)
    demo_summary(result)
    raise typer.Exit(result.exit_status)


def register(app: typer.Typer) -> None:
    app.command("test-run")(test_run)
    app.command("doctor")(doctor)
    app.command("demo")(demo)
