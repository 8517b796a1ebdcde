"""The `orch` command: global options, sub-commands, and the one error boundary.

Each command parses its options, calls one core function and renders what it
returns; core errors (OrchError) become one line `error: ...` and the exit
status of SPEC section 10, here and nowhere else.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Annotated, Any

import typer

from orch import __version__
from orch.cli.context import AppContext
from orch.errors import Interrupted, OrchError

app = typer.Typer(
    name="orch",
    help="Carry software tasks through a pipeline of AI coding agents and deterministic runners.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"orch {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[str | None, typer.Option(
        "--home", metavar="DIR",
        help="The orch home (default: $ORCH_HOME, else $XDG_STATE_HOME/orch).")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show tracebacks and more detail on errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Carry software tasks through a pipeline of AI coding agents and deterministic runners.

    Example: orch --home ~/orch init --repo app=~/src/app
    """
    ctx.obj = AppContext(home_option=home, verbose=verbose)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from orch.cli import admin, configure, inspection, maint, ops, runners, tasks

    for module in (admin, tasks, ops, inspection, runners, maint, configure):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map every error to its exit status."""
    try:
        code = run(argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `orch ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:

    usage_error, click_exception = _click_errors()

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args[:_first_command_index(args)] or "-v" in args[
        :_first_command_index(args)]
    command = typer.main.get_command(_app_for(args))
    try:
        result = command.main(args=args, prog_name="orch", standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `orch` or `orch task` alone: help
            print(exc.format_message())
            return 0
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(f"{exc.format_message()}{hint}")
        return 2
    except typer.Abort:  # click's name for a Ctrl-C the command did not handle itself
        _interrupted("the command stopped where it was; what it had committed stays, the "
                     "rest was not done")
        return 130
    except click_exception as exc:
        _error(exc.format_message())
        return exc.exit_code
    except Interrupted as exc:
        _interrupted(str(exc))
        return exc.exit_code
    except OrchError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _interrupted("the command stopped where it was; what it had committed stays, the "
                     "rest was not done")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug or a broken environment: still one line, no traceback
        if verbose:
            import traceback

            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)")
        return 1
    code = int(result) if isinstance(result, int) else 0
    if code == 130:  # typer's own Exit(130) for a Ctrl-C the command did not handle
        _interrupted("the command stopped where it was; what it had committed stays, the "
                     "rest was not done")
    return code


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the command ARGS name (and the global options), else all of it.

    Typer turns every registered command into a click command on each run, which
    costs more than an idle tick's own work once there are a few dozen of them,
    so a run builds only the one it needs. Help without a command, an unknown
    command (for its "did you mean"), and shell completion get the whole app.
    """
    index = _first_command_index(args)
    if index >= len(args) or any(key.endswith("_COMPLETE") for key in os.environ):
        return app
    name = args[index]
    try:
        commands = [info for info in app.registered_commands if _command_name(info) == name]
        groups = [info for info in app.registered_groups
                  if typer.main.solve_typer_info_defaults(info).name == name]
    except (AttributeError, TypeError):  # a typer whose internals moved: build it all
        return app
    if len(commands) + len(groups) != 1:
        return app
    slim = copy.copy(app)
    slim.registered_commands = commands
    slim.registered_groups = groups
    return slim


def _command_name(info: Any) -> str | None:
    if info.name:
        return str(info.name)
    return typer.main.get_command_name(info.callback.__name__) if info.callback else None


def _click_errors() -> tuple[Any, Any]:
    """click's UsageError and ClickException, whether typer vendors click or not."""
    mro = typer.BadParameter.__mro__
    usage = next(c for c in mro if c.__name__ == "UsageError")
    base = next(c for c in mro if c.__name__ == "ClickException")
    return usage, base


def _first_command_index(args: list[str]) -> int:
    for index, arg in enumerate(args):
        if not arg.startswith("-"):
            if index > 0 and args[index - 1] == "--home":
                continue
            return index
    return len(args)


def _interrupted(message: str) -> None:
    """The one line of SPEC section 10 for exit 130: what was left as it was."""
    print(f"interrupted: {' '.join(message.split())}", file=sys.stderr)


def _error(message: str) -> None:
    text = " ".join(message.split("\n")).strip()
    print(f"error: {text}", file=sys.stderr)
