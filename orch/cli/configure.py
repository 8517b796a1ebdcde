"""Setting orch up to run: `orch schedule` (cron, systemd) and `orch config show`."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated

import typer

from orch.cli.context import AppContext
from orch.errors import UsageError

config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


def schedule(
    ctx: typer.Context,
    cron: Annotated[bool, typer.Option("--cron", help="Print the crontab line.")] = False,
    systemd: Annotated[bool, typer.Option(
        "--systemd", help="Print the systemd user units (service and timer).")] = False,
    write: Annotated[bool, typer.Option(
        "--write", help="With --systemd: write the units to ~/.config/systemd/user/.")]
    = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --write: replace units that differ.")] = False,
) -> None:
    """Print (or write) what ticks this home every minute, with this install's absolute
    paths: the orch executable, the packaged orch-tick wrapper, the home and your PATH.

    Example: orch --home ~/orch schedule --systemd --write
    """
    from orch.engine.commands import schedule as plan

    if cron == systemd:
        raise UsageError("choose one of --cron and --systemd")
    if write and not systemd:
        raise UsageError("--write goes with --systemd (add the cron line with crontab -e)")
    if force and not write:
        raise UsageError("--force goes with --write")
    obj: AppContext = ctx.obj
    install = plan.install_for(obj.home, os.environ)
    if not (obj.home / "orch.yaml").exists() and not (obj.home / "orch.db").exists():
        print(f"warning: no orch home at {obj.home} yet (run orch init)", file=sys.stderr)
    if cron:
        print(plan.crontab_line(install))
        home = f"--home {shlex.quote(str(obj.home))} " if obj.home_option else ""
        print(f"add it with: (crontab -l 2>/dev/null; orch {home}schedule --cron) | crontab -",
              file=sys.stderr)
        return
    units = plan.systemd_units(install)
    if not write:
        for name, text in units.items():
            print(f"# ---- {plan.user_unit_dir(os.environ) / name}")
            print(text, end="")
        return
    for path in plan.write_units(units, plan.user_unit_dir(os.environ), force=force):
        print(f"wrote {path}")
    print("enable them with:")
    for command in plan.ENABLE_COMMANDS:
        print(f"  {command}")


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option(
        "--json", help='Print {"values": [{"key", "value", "source"}], "warnings": [...]}.')]
    = False,
) -> None:
    """Print every effective setting with where it came from: the default, a line of
    orch.yaml, or an ORCH_* variable; unknown ORCH_* variables are flagged as typos.

    Example: orch config show --json
    """
    from orch.engine.commands.config_show import show_config

    obj: AppContext = ctx.obj
    report = show_config(obj.settings)
    if as_json:
        from orch.cli.render import emit_json

        emit_json(report.as_dict())
        return
    from orch.cli.render import config_values

    config_values(report.as_dict(), str(obj.settings.config_file))


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)
    app.add_typer(config_app, name="config")
