"""The `cellinspect` app: one entry point, one sub-command per job, registered group by group.

User errors (a bad recipe, a missing file, a model that does not match its manifest) print one
clear message and exit 1; only bugs print tracebacks.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cellinspect import __version__
from cellinspect.cli import calibrate, cell, inspection, modelling, station, train, users, validate
from cellinspect.cli.support import console

app = typer.Typer(
    name="cellinspect",
    help="Vision quality-inspection station for robotic cells.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
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
cell.register(app)
station.register(app)
train.register(app)
app.add_typer(calibrate.app, name="calibrate")
app.add_typer(users.app, name="users")


def main() -> None:
    """Console-script entry point."""
    app()
