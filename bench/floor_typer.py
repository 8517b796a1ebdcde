"""The framework floor: an empty Typer app that runs a no-op command.

Built like orch's own app (same Typer settings, a root callback with a global
option, one command), so `orch tick` / `orch queue --json` divided by this is
what orch itself adds on top of the CLI framework. Run: `python floor_typer.py noop`.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="floor",
    help="The framework floor of the orch benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root(home: Annotated[str | None, typer.Option("--home", help="Ignored.")] = None) -> None:
    """An app with one global option, like orch's."""


@app.command()
def noop(quiet: Annotated[bool, typer.Option("--quiet", help="Ignored.")] = False) -> None:
    """Do nothing."""


if __name__ == "__main__":
    app()
