"""Progress when stderr is not a terminal: plain lines a log keeps, not a bar drawn at the end."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app, support
from cellinspect.cli.progress import LogProgress
from tests.conftest import build_brightness_anomaly_model


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_start_every_interval_and_at_the_end() -> None:
    lines: list[str] = []
    clock = FakeClock()
    with LogProgress(lines.append, interval=5.0, clock=clock, heartbeat=False) as progress:
        task = progress.add_task("fine-tune", total=4)
        clock.now += 1
        progress.update(task, completed=1)  # within the interval: no line
        clock.now += 5
        progress.update(task, completed=2)
        clock.now += 1
        progress.advance(task, 2)  # done: always a line
        other = progress.add_task("reading", total=None)
        progress.update(other, completed=7)
    assert lines == [
        "fine-tune: 0/4 (0%), elapsed 0:00:00",
        "fine-tune: 2/4 (50%), elapsed 0:00:06, eta 0:00:06",
        "fine-tune: 4/4 (100%), elapsed 0:00:07",
        "reading: 0, elapsed 0:00:00",
        "reading: 7, elapsed 0:00:00",  # where it stopped, written on leaving
    ]


def test_a_step_without_updates_still_shows_it_is_running() -> None:
    lines: list[str] = []
    seen = threading.Event()

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            seen.set()

    with LogProgress(write, interval=0.02) as progress:
        task = progress.add_task("epoch 1", total=10)
        progress.update(task, completed=3)
        assert seen.wait(30), lines  # heartbeat lines came without any further update
    assert all(line.startswith("epoch 1: 3/10 (30%), elapsed") for line in lines[1:3])
    assert "eta" in lines[2]


@pytest.fixture
def fast_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "PROGRESS_INTERVAL_S", 0.0)


def _grey_images(root: Path, labels: tuple[str, ...] = ("good",), count: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(count):
            level = 128 if label == "good" else 40
            image = np.clip(rng.normal(level, 8.0, (16, 16, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / label / f"{i}.png"), image)
    return root


@pytest.mark.usefixtures("fast_lines")
def test_inspect_writes_progress_lines_to_a_log(tmp_path: Path) -> None:
    model = build_brightness_anomaly_model(tmp_path / "models" / "brightness" / "1")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: grey\nmodels:\n  - {{name: brightness, path: {model}}}\n")
    images = _grey_images(tmp_path / "images", count=5)
    result = CliRunner().invoke(app, ["inspect", str(images), "-r", str(recipe), "--recursive"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    for done in range(1, 6):
        assert any(line.startswith(f"inspecting: {done}/5 (") for line in lines), lines
    assert "inspecting: 5/5 (100%), elapsed" in result.stderr


@pytest.mark.usefixtures("fast_lines")
def test_evaluate_writes_a_line_per_stage_step(tmp_path: Path) -> None:
    model = build_brightness_anomaly_model(tmp_path / "models" / "brightness" / "1")
    data = _grey_images(tmp_path / "data", ("good", "scratch"), count=3)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(data)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "read: 6/6 (100%)" in result.stderr and "score: 6/6 (100%)" in result.stderr
    assert any(line.startswith("read: 0/6") for line in lines)
