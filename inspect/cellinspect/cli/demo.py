"""The shipped cell anywhere: `demo` runs it from the installed package, `init` copies it out.

Both work without a checkout: the recipes, models, calibration and station files come from
cellinspect.shipped (the package's copy in a wheel, the repository's files in a checkout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellinspect import shipped
from cellinspect.cli.support import console, fail, progress_bar, user_errors

DEMO_DATA_DIR = Path("cellinspect-demo")


def demo(
    parts: Annotated[int, typer.Option(min=1, help="Parts to run through the cell.")] = 20,
    rate: Annotated[float, typer.Option(min=1.0, help="Parts per minute.")] = 120.0,
    seed: Annotated[int, typer.Option(help="Seed of the part sequence.")] = 0,
    defect_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of defective parts.")
    ] = 0.3,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder for the results database and kept images.")
    ] = DEMO_DATA_DIR,
    api_port: Annotated[
        int | None, typer.Option(help="Review page / API port (default: the station file's).")
    ] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not start the API.")] = False,
) -> None:
    """The shipped simulated cell, from the installed package: `line` with nothing to set up."""
    from cellinspect.cli.cell import line

    with user_errors():
        station_file = shipped.sim_station()
    console.print(f"station file: {station_file}\nresults: {data_dir.resolve()}", highlight=False)
    line(
        station_file=station_file,
        parts=parts,
        rate=rate,
        seed=seed,
        defect_rate=defect_rate,
        api_port=api_port,
        no_api=no_api,
        data_dir=data_dir,
    )


def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder for recipes/, models/, calibration/, stations/ ...")
    ],
    sample_images: Annotated[
        bool, typer.Option(help="Render the 40 sample parts into sample_images/.")
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Replace shipped files and sample images already there.")
    ] = False,
) -> None:
    """Copy the shipped cell (recipes, models, calibration, stations, sample parts) into DIRECTORY.

    Paths inside the files are relative and the layout is kept, so the copies work in place:
    `cellinspect inspect DIRECTORY/sample_images --recipe DIRECTORY/recipes/flange.yaml`.
    """
    existing = shipped.existing_targets(directory)
    if existing and not force:
        names = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise fail(f"{directory} already holds {names}; --force replaces them")
    with user_errors():
        written = shipped.copy_cell(directory)
        if sample_images:
            with progress_bar() as progress:
                task = progress.add_task("rendering sample parts", total=shipped.SAMPLE_COUNT)
                shipped.render_sample_images(
                    directory,
                    progress=lambda d, t: progress.update(task, completed=d, total=t),
                    overwrite=force,
                )
    console.print(f"wrote {len(written)} shipped files to {directory}", highlight=False)
    if sample_images:
        console.print(
            f"rendered {shipped.SAMPLE_COUNT} sample parts (with labels.csv) into "
            f"{directory / shipped.SAMPLE_IMAGES_DIR}",
            highlight=False,
        )
    recipe, station = directory / shipped.RECIPE, directory / shipped.SIM_STATION
    console.print(
        "next:\n"
        f"  cellinspect inspect {directory / shipped.SAMPLE_IMAGES_DIR} --recipe {recipe}\n"
        f"  cellinspect line --station {station} --parts 20\n"
        f"  cellinspect run {station}   (and, beside it: cellinspect plc-sim --port 1502)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `demo` and `init` to the main app."""
    app.command("demo")(demo)
    app.command("init")(init)
