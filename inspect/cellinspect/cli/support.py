"""What every command shares: consoles, progress bars, and turning user errors into exit 1."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cellinspect import shipped
from cellinspect.cli.progress import LogProgress
from cellinspect.errors import CellInspectError

if TYPE_CHECKING:
    from cellinspect.inference.manifest import ResizeMode
    from cellinspect.training.dataset import RoiReader

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_RECIPE = Path("recipes/flange.yaml")


def shipped_if_missing(default: Path, name: str) -> Path:
    """A command's relative default path if it exists here, else the shipped file `name`.

    Only for defaults: a path the user gave stays theirs, and a missing one an error.
    """
    if default.exists():
        return default
    with user_errors():
        found = shipped.path(name)
    err_console.print(
        f"{default} not found here: using the one shipped with cellinspect ({found})",
        highlight=False,
        soft_wrap=True,
    )
    return found


def shipped_default(
    default: Path, name: str
) -> Callable[[typer.Context, typer.CallbackParam, Path | None], Path | None]:
    """An option callback: `default` left as it is, but not here, becomes shipped file `name`."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
        if value != default or ctx.resilient_parsing:
            return value
        source = ctx.get_parameter_source(param.name or "")
        if source is None or source.name != "DEFAULT":  # typer vendors click's ParameterSource
            return value  # given on the command line (or in the environment): never replaced
        return shipped_if_missing(default, name)

    return callback


RecipeOpt = Annotated[
    Path,
    typer.Option(
        "--recipe",
        "-r",
        help="Station recipe (YAML); the shipped one when the default is not here.",
        callback=shipped_default(DEFAULT_RECIPE, shipped.RECIPE),
    ),
]
EmaDecayOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=0.9999,
        help="finetune: validate and export a moving average of the weights with this "
        "per-step decay, e.g. 0.995 (off by default).",
    ),
]
PoolingOpt = Annotated[
    str,
    typer.Option(
        help="finetune: how the backbone's feature map becomes one vector: mean, or gem "
        "(generalised mean with a learned exponent, so that small defects weigh more).",
    ),
]
PositionNormOpt = Annotated[
    bool,
    typer.Option(
        help="anomaly: z-score each patch position against held-out good parts "
        "(for parts held aligned in a fixture; needs >= 20 held-out good images)."
    ),
]
DetectorOpt = Annotated[
    str,
    typer.Option(
        help="anomaly: auto (fit the candidates below and keep the one that best finds "
        "synthetic anomalies drawn on held-back good parts; the choice and why are printed and "
        "recorded), patchcore (nearest neighbour in a coreset bank of good patches) or "
        "gaussian (a Gaussian per patch position, PaDiM-style; for aligned parts)."
    ),
]
GroupsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="anomaly, gaussian: split good parts into this many texture groups (k-means) and "
        "fit each its own Gaussians; every image is routed to its nearest group.",
    ),
]
CrossFitOpt = Annotated[
    bool | None,
    typer.Option(
        help="anomaly, gaussian: hold every good part out once (folds of the holdout "
        "fraction) for the z-scores and scale, and fit the final Gaussians on all of them. "
        "Default: on for gaussian; --no-cross-fit holds out one split instead.",
        show_default=False,
    ),
]
TopKOpt = Annotated[
    int,
    typer.Option(
        min=1, help="anomaly, gaussian: image score = mean of the k highest patch scores."
    ),
]


def _resize_value(value: str) -> str:
    """Checks --resize while the options are parsed, before any image is read."""
    return resize_choice(value).value


ResizeOpt = Annotated[
    str,
    typer.Option(
        "--resize",
        callback=_resize_value,
        help="How images meet the model's square input (recorded in the manifest, applied "
        "alike at the station): letterbox (longer side to the input, the rest padded; keeps "
        "the shape), stretch (both sides to the input, as models fitted before this option), "
        "or tile (anomaly only: overlapping input-size tiles at --tile-scale, for frames much "
        "bigger than the input, so small defects keep their pixels).",
    ),
]
TileScaleOpt = Annotated[
    float,
    typer.Option(
        min=0.05,
        max=8.0,
        help="--resize tile: images are resized by this factor before they are cut "
        "(1 = native pixels; 0.5 = half as many tiles per side).",
    ),
]
AugmentOpt = Annotated[
    str,
    typer.Option(
        help="anomaly: add views of each fitted good part to the bank / Gaussians: flips "
        "(mirrored left-right and top-bottom), shifts (4 shifts by 1/28 of the size), or "
        "flips,shifts. Held-out parts are never augmented. For few good parts.",
    ),
]
BagsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="anomaly: fit on this many draws of bank and held-out parts and average their "
        "scores (steadier; each bag adds a bank search, the backbone runs once).",
    ),
]


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def mask_url_passwords(message: str) -> str:
    """Any password inside a URL (a database URL in an error, say) becomes ***."""
    return _URL_PASSWORD.sub(r"\1***@", message)


def fail(message: str) -> typer.Exit:
    """Print one clear error line; raise the returned Exit (code 1)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn cellinspect's own errors into a message and exit code 1."""
    try:
        yield
    except CellInspectError as err:
        raise fail(mask_url_passwords(str(err))) from err


# Without a terminal on stderr (a log, a pipe), progress is a line per task this often.
PROGRESS_INTERVAL_S = 10.0


def _log_line(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def progress_bar() -> Progress | LogProgress:
    """Live bars on a terminal; lines for a log otherwise (cli/progress.py), so a long job
    written to a file still shows it moving."""
    if not err_console.is_terminal:
        return LogProgress(_log_line, PROGRESS_INTERVAL_S)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def stage_progress(progress: Progress | LogProgress) -> Callable[[str, int, int], None]:
    """A `stage(name, done, total)` callback that keeps one bar per stage name."""
    tasks: dict[str, TaskID] = {}

    def stage(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done, total=total)

    return stage


def resize_choice(value: str) -> ResizeMode:
    """`--resize` as the manifest's mode; a clear error for anything else."""
    from cellinspect.inference.manifest import ResizeMode

    try:
        return ResizeMode(value.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in ResizeMode)
        raise typer.BadParameter(f"--resize must be one of {choices}, got {value!r}") from None


def print_input_notes() -> None:
    """Once per command: how images met each model's input, where it matters (a stretch that
    distorts, a letterbox that pads, tiles): inference/tiling.py counts them as they pass."""
    from cellinspect.inference.tiling import input_notes

    for note in input_notes():
        console.print(f"input: {note}", highlight=False)


def reader_for(recipe: Path | None, roi: str | None, data: Path | None = None) -> RoiReader:
    """Images prepared as `recipe` does (its preprocessing, ROI `roi`); as they are without one.

    With `data` inside a `cellinspect export` folder, its images are only cut: the station
    preprocessed them, and export.json says how (and stands in for a missing `recipe`)."""
    from cellinspect.config import load_recipe, recipe_sha256
    from cellinspect.training.dataset import RoiReader

    loaded = load_recipe(recipe) if recipe else None
    if data is None:
        return RoiReader(loaded, roi)
    sha = recipe_sha256(recipe) if recipe else None
    return RoiReader.for_data(data, loaded, roi, sha)
