"""The shipped cell's file list, the fall-back to it for default paths, and `cellinspect init`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect import shipped
from cellinspect.cli import app
from cellinspect.config import load_recipe
from cellinspect.station.config import load_station
from tests.conftest import ROOT


def _shipped_paths() -> set[Path]:
    return {(ROOT / name).resolve() for name in shipped.FILES}


def test_in_a_checkout_the_shipped_files_are_the_repository_files() -> None:
    assert shipped.root() == ROOT
    assert shipped.recipe() == ROOT / "recipes" / "flange.yaml"
    assert shipped.sim_station() == ROOT / "stations" / "sim.yaml"
    assert not shipped.is_packaged(shipped.sim_station())


def test_every_file_a_shipped_recipe_or_station_uses_is_shipped() -> None:
    files = _shipped_paths()
    for name in shipped.FILES:
        if name.startswith("recipes/"):
            recipe = load_recipe(ROOT / name)
            used = [m.path for m in recipe.models]
            used += [recipe.calibration, recipe.plane_calibration, recipe.handeye_calibration]
            for path in filter(None, used):
                assert path.resolve() in files, f"{name} uses {path}, which is not shipped"
            for model in recipe.models:
                assert model.path.with_name("manifest.json").resolve() in files
        elif name.startswith("stations/"):
            for path in load_station(ROOT / name).recipes.values():
                assert path.resolve() in files, f"{name} uses {path}, which is not shipped"
    # Nothing shipped that nothing uses: every model is one a shipped recipe names.
    shipped_models = {n.split("/")[1] for n in shipped.FILES if n.startswith("models/")}
    named = {
        model.name
        for n in shipped.FILES
        if n.startswith("recipes/")
        for model in load_recipe(ROOT / n).models
    }
    assert shipped_models == named


def test_default_recipe_falls_back_to_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no recipes/ here
    image = ROOT / "sample_images" / "part_0001_good.bmp"
    result = CliRunner().invoke(app, ["inspect", str(image)])
    assert result.exit_code == 0, result.output
    assert "recipes/flange.yaml not found here: using the one shipped with cellinspect" in (
        result.output
    )
    assert str(shipped.recipe()) in result.output


def test_a_given_recipe_that_is_missing_stays_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = ROOT / "sample_images" / "part_0001_good.bmp"
    result = CliRunner().invoke(app, ["inspect", str(image), "--recipe", "recipes/flange.yaml"])
    assert result.exit_code == 1
    assert "recipes/flange.yaml: recipe file not found" in result.output
    assert "shipped" not in result.output


def test_init_copies_a_cell_that_works_in_place(tmp_path: Path) -> None:
    cell = tmp_path / "cell"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(cell), "--no-sample-images"])
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(cell)) for p in cell.rglob("*") if p.is_file()) == sorted(
        shipped.FILES
    )
    recipe = load_recipe(cell / "recipes" / "flange.yaml")
    assert all(m.path.is_relative_to(cell) and m.path.is_file() for m in recipe.models)
    assert recipe.calibration is not None and recipe.calibration.is_relative_to(cell)
    station = load_station(cell / "stations" / "sim.yaml")
    assert station.recipes[1] == (cell / "recipes" / "flange.yaml").resolve()
    assert station.store.data_dir == (cell / "cellinspect-data").resolve()

    again = runner.invoke(app, ["init", str(cell), "--no-sample-images"])
    assert again.exit_code == 1
    assert "already holds" in again.output and "--force" in again.output
    forced = runner.invoke(app, ["init", str(cell), "--no-sample-images", "--force"])
    assert forced.exit_code == 0, forced.output
