"""The `cellinspect` app: one entry point, one sub-command per job, registered group by group.

User errors (a bad recipe, a missing file, a model that does not match its manifest) print one
clear message and exit 1; only bugs print tracebacks. Global options (-v) work anywhere on the
command line: `cellinspect -v inspect DIR` and `cellinspect inspect DIR -v` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from cellinspect import __version__
from cellinspect.cli import (
    calibrate,
    cell,
    demo,
    hub,
    inspection,
    lifecycle,
    modelling,
    station,
    train,
    users,
    validate,
)
from cellinspect.cli.support import console


def hoist_global_options(params: Sequence[object], args: list[str]) -> list[str]:
    """`args` with the root's own options (and their values) moved to the front, so that they
    count wherever they stand; nothing after `--` moves."""
    flags: set[str] = set()
    valued: set[str] = set()
    for param in params:
        if isinstance(param, TyperOption):
            names = [*param.opts, *param.secondary_opts]
            (flags if param.is_flag or param.count else valued).update(names)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in flags or ("=" in arg and arg.split("=", 1)[0] in valued):
            front.append(arg)
        elif arg in valued and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


class GlobalOptionsGroup(TyperGroup):
    """The root group: its options are taken before or after the sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: click is vendored
        return super().parse_args(ctx, hoist_global_options(self.params, args))


app = typer.Typer(
    cls=GlobalOptionsGroup,
    name="cellinspect",
    help="Vision quality-inspection station for robotic cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_callback(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log details (before or after the command).")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


# The order of registration is the order of `cellinspect --help`.
validate.register(app)
inspection.register(app)
modelling.register(app)
lifecycle.register(modelling.models_app)  # models versions|add|shadow|promote|rollback
cell.register(app)
demo.register(app)
station.register(app)
hub.register(app)
train.register(app)
app.add_typer(calibrate.app, name="calibrate")
app.add_typer(users.app, name="users")


def main() -> None:
    """Console-script entry point."""
    app()
