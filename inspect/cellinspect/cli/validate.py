"""`cellinspect validate`: a recipe or a station file, and every model and file they name.

`recipe_file_problems` is the one check of a recipe's files and models, for a recipe file and
for each recipe in a station's catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cellinspect.cli.support import console, err_console, fail, user_errors
from cellinspect.errors import CellInspectError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from cellinspect.config import Recipe


def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe or station file to check.")],
) -> None:
    """Check a recipe or station file: print every error with its key path and exit 1."""
    from cellinspect.config import RecipeInvalidError, load_recipe
    from cellinspect.station.config import is_station_file

    if is_station_file(recipe):
        validate_station(recipe)
        return

    try:
        loaded = load_recipe(recipe)
    except RecipeInvalidError as err:
        for line in err.problems:
            err_console.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from err
    except CellInspectError as err:
        raise fail(str(err)) from err
    problems = recipe_file_problems(loaded)
    if problems:
        for line in problems:
            err_console.print(f"{recipe}: {line}", highlight=False, markup=False)
        raise typer.Exit(code=1)
    console.print(f"{recipe}: valid recipe '{loaded.name}' v{loaded.version}")


def recipe_file_problems(
    recipe: Recipe, trusted_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> list[str]:
    """Missing model or calibration files, then each model's manifest against the recipe."""
    missing = [f"file not found: {m.path}" for m in recipe.models if not m.path.is_file()]
    if recipe.calibration is not None and not recipe.calibration.is_file():
        missing.append(f"file not found: {recipe.calibration}")
    return missing or _model_problems(recipe, trusted_keys)


def _model_problems(
    recipe: Recipe, trusted_keys: Mapping[str, Ed25519PublicKey] | None
) -> list[str]:
    """Each model's hash and seal (what load would refuse), and the preprocessing and ROI
    size it was fitted on."""
    from cellinspect.inference.manifest import load_manifest, seal_problem
    from cellinspect.inference.preprocess_contract import check_recipe_fits

    problems = []
    for index, model in enumerate(recipe.models):
        try:
            manifest = load_manifest(model.path)
            sealed = seal_problem(model.path, manifest, trusted_keys)
            if sealed is not None:
                problems.append(f"models[{index}] ({model.name}): {sealed}")
            check_recipe_fits(manifest, recipe, model.name)
        except CellInspectError as err:
            problems.append(f"models[{index}] ({model.name}): {err}")
    return problems


def validate_station(path: Path) -> None:
    """`cellinspect validate STATION.yaml`: the file, every recipe in its catalog, their models."""
    from cellinspect.station.catalog import RecipeCatalog
    from cellinspect.station.config import StationInvalidError, load_station

    try:
        station = load_station(path)
    except StationInvalidError as err:
        for line in err.problems:
            err_console.print(line, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(code=1) from err
    from cellinspect.inference.manifest import load_public_keys

    with user_errors():
        catalog = RecipeCatalog.load(station.recipes, str(path))
        keys = load_public_keys(station.trusted_model_keys) if station.trusted_model_keys else None
    problems = [
        f"{path}: recipes.{number} ({entry.path}): {line}"
        for number, entry in catalog.entries.items()
        for line in recipe_file_problems(entry.recipe, keys)
    ]
    if problems:
        for line in problems:
            err_console.print(line, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(code=1)
    console.print(
        f"{path}: valid station '{station.station_id}': recipes "
        f"{sorted(station.recipes)} (active {station.active_recipe}), "
        f"trigger {station.trigger.mode.value}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add `validate` to the main app."""
    app.command("validate")(validate)
