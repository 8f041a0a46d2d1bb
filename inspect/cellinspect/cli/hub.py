"""`cellinspect hub`: the plant's API, review page and exports over the central store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cellinspect.cli.support import user_errors


def hub(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLAlchemy URL of the central store; better CELLINSPECT_DB_URL, which keeps "
            "the password off the command line.",
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Images received from stations, users file.")
    ] = Path("cellinspect-hub"),
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a non-loopback address (needs a token).")
    ] = False,
) -> None:
    """The plant hub: results, images and reviews of every station (forwarded to it)."""
    from cellinspect.plant.hub import serve_hub
    from cellinspect.settings import load_settings

    def announce(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    with user_errors():
        overrides: dict[str, object] = {"data_dir": data_dir.resolve()}
        if db is not None:
            overrides["db_url"] = db
        settings = load_settings(None, **overrides)
        serve_hub(settings, host, port, allow_remote=allow_remote, announce=announce)


def register(app: typer.Typer) -> None:
    app.command("hub")(hub)
