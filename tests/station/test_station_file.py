"""The station file: shipped examples validate, every mistake is named by its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.station.config import (
    StationInvalidError,
    TriggerMode,
    is_station_file,
    load_station,
)
from tests.conftest import ROOT

STATIONS = sorted((ROOT / "stations").glob("*.yaml"))


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _minimal() -> dict[str, Any]:
    return {"station_id": "cell-7", "recipes": {1: str(ROOT / "recipes" / "flange.yaml")}}


@pytest.mark.parametrize("path", STATIONS, ids=[p.name for p in STATIONS])
def test_shipped_station_files_validate_with_their_recipes_and_models(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid station" in result.output


def test_shipped_examples_cover_a_hot_folder_line_and_the_simulated_cell() -> None:
    example = load_station(ROOT / "stations" / "example.yaml")
    assert example.source is not None and example.source.type == "hot_folder"
    assert example.modbus.enabled and example.api.enabled
    sim = load_station(ROOT / "stations" / "sim.yaml")
    assert sim.trigger.mode is TriggerMode.PLC and sim.modbus.enabled


def test_relative_paths_resolve_against_the_station_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    recipe = tmp_path / "sub" / "r.yaml"
    recipe.write_text((ROOT / "recipes" / "flange.yaml").read_text(), encoding="utf-8")
    station = load_station(
        _write(tmp_path, {"station_id": "s1", "recipes": {1: "sub/r.yaml"}, "store": {}})
    )
    assert station.recipes[1] == recipe.resolve()
    assert station.store.data_dir == (tmp_path / "cellinspect-data").resolve()
    assert is_station_file(tmp_path / "station.yaml")
    assert not is_station_file(ROOT / "recipes" / "flange.yaml")


@pytest.mark.parametrize(
    ("change", "key_path"),
    [
        ({"modbus": {"enabled": True, "prot": 502}}, "modbus.prot: Extra inputs are not"),
        ({"trigger": {"mode": "sometimes"}}, "trigger.mode:"),
        ({"api": {"port": 70000}}, "api.port:"),
        ({"station_id": "has space"}, "station_id:"),
        ({"robot": {"timeout_s": 0}}, "robot.timeout_s:"),
        ({"active_recipe": 3}, "active_recipe: 3 is not in the catalog [1]"),
        ({"trigger": {"mode": "plc"}}, "trigger.mode: 'plc' needs modbus.enabled: true"),
        ({"recipes": {0: "x.yaml"}}, "recipes: numbers must be 1..65535"),
        (
            {"opcua": {"enabled": True, "security_policies": ["basic256sha256_sign"]}},
            "opcua: Value error, opcua sessions need user authentication by default",
        ),
        (
            {"opcua": {"certificate": "station.pem"}},
            "certificate and private_key go together",
        ),
        ({"modbus": {"host": "not a host!"}}, "modbus.host: 'not a host!'"),
    ],
)
def test_each_mistake_is_reported_with_its_key_path(
    tmp_path: Path, change: dict[str, Any], key_path: str
) -> None:
    path = _write(tmp_path, {**_minimal(), **change})
    with pytest.raises(StationInvalidError) as caught:
        load_station(path)
    text = "\n".join(caught.value.problems)
    assert key_path in text
    assert str(path) in text
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert key_path in result.output


def _recipe_copy(tmp_path: Path) -> dict[str, Any]:
    """The shipped recipe with its relative paths made absolute, to be changed and written."""
    text = (ROOT / "recipes" / "flange.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text.replace("../", f"{ROOT}/"))
    return data


def test_validate_names_the_catalog_entry_of_a_broken_recipe(tmp_path: Path) -> None:
    data = _recipe_copy(tmp_path)
    data["decision"]["fail_safe"] = "maybe"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    recipes = {1: str(ROOT / "recipes" / "flange.yaml"), 4: str(broken)}
    path = _write(tmp_path, {**_minimal(), "recipes": recipes})
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "recipes.4:" in result.output


def test_validate_names_a_missing_model_of_a_catalog_recipe(tmp_path: Path) -> None:
    data = _recipe_copy(tmp_path)
    recipe = tmp_path / "r.yaml"
    data["models"][0]["path"] = str(tmp_path / "gone.onnx")
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    path = _write(tmp_path, {"station_id": "s", "recipes": {2: str(recipe)}, "active_recipe": 2})
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "recipes.2" in result.output and "gone.onnx" in result.output


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("station_id: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code != 0
    assert "station.yaml" in result.output
