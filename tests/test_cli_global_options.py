"""Global options (-v/--verbose) count before or after the sub-command."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer

from cellinspect.cli import app
from cellinspect.cli.root import hoist_global_options
from tests.conftest import ROOT

PART = str(ROOT / "sample_images" / "part_0001_good.bmp")
RECIPE = str(ROOT / "recipes" / "flange.yaml")
INSPECT = ["inspect", PART, "--recipe", RECIPE, "--show", "0"]


def _info_lines(args: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "cellinspect", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if " INFO cellinspect." in line]


@pytest.mark.parametrize(
    "args",
    [
        ["-v", *INSPECT],
        [*INSPECT, "-v"],
        ["inspect", "--verbose", PART, "--recipe", RECIPE, "--show", "0"],
    ],
    ids=["before", "after", "between"],
)
def test_verbose_logs_wherever_it_stands(args: list[str]) -> None:
    assert _info_lines(args), "no INFO log lines with -v"


def test_without_verbose_nothing_is_logged() -> None:
    assert _info_lines(INSPECT) == []


def _root_options() -> set[str]:
    group = typer.main.get_group(app)
    return {n for p in group.params for n in [*p.opts, *p.secondary_opts]}


def _commands(command: Any) -> list[Any]:
    found = [command]
    for sub in getattr(command, "commands", {}).values():
        found += _commands(sub)
    return found


def test_no_sub_command_reuses_a_global_option_name() -> None:
    """A sub-command's own -v would be taken by the root instead: none may have one."""
    root = typer.main.get_group(app)
    names = _root_options()
    assert {"-v", "--verbose"} <= names
    for command in _commands(root)[1:]:
        for param in command.params:
            clash = names & {*param.opts, *param.secondary_opts}
            assert not clash, f"{command.name} {clash}"


def test_hoisting_leaves_everything_else_in_order() -> None:
    params = typer.main.get_group(app).params
    args = ["inspect", "a.png", "-v", "--recipe", "r.yaml", "--", "-v"]
    assert hoist_global_options(params, args) == [
        "-v",
        "inspect",
        "a.png",
        "--recipe",
        "r.yaml",
        "--",
        "-v",
    ]
