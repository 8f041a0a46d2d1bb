"""The `calibrate` sub-commands end to end, and their user-error behaviour."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
from typer.testing import CliRunner

from cellinspect.calibration.camera_file import load_camera_calibration
from cellinspect.calibration.plane import load_plane_calibration
from cellinspect.cli.calibrate import app
from cellinspect.datagen.flange import make_spec, render_part

from .conftest import SHIPPED, imread

runner = CliRunner()


def test_camera_command(view_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal" / "cam.yaml"
    result = runner.invoke(app, ["camera", str(view_dir), "--id", "cli-cam", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "RMS reprojection error" in result.output
    assert load_camera_calibration(out).calibration_id == "cli-cam"
    assert (tmp_path / "cal" / "cam_report.png").is_file()


def test_camera_command_user_errors(view_files: list[Path], tmp_path: Path) -> None:
    for f in view_files[:2]:
        shutil.copy(f, tmp_path)
    result = runner.invoke(app, ["camera", str(tmp_path), "--out", str(tmp_path / "c.yaml")])
    assert result.exit_code == 1
    assert "too few views: 2 usable of 2" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["camera", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
    bad_size = runner.invoke(app, ["camera", str(tmp_path), "--size", "ten"])
    assert bad_size.exit_code == 1 and "COLSxROWS" in bad_size.output


def test_render_then_plane_then_measure(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render-plane", str(tmp_path / "img")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "plane.yaml"
    result = runner.invoke(
        app,
        [
            "plane",
            str(tmp_path / "img/plane.png"),
            "--camera",
            str(SHIPPED / "camera.yaml"),
            "--id",
            "p-cli",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "residual rms" in result.output
    assert load_plane_calibration(out).camera_calibration_id == "virtualcam-320-v1"
    part = tmp_path / "part.png"
    cv2.imwrite(str(part), render_part(replace(make_spec(2, 0, "good"), scale=1.0)))
    result = runner.invoke(
        app,
        [
            "measure",
            str(part),
            "--camera",
            str(SHIPPED / "camera.yaml"),
            "--plane",
            str(out),
            "--part-height",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    match = re.search(r"outer_diameter_mm\W+(\d+\.\d+)", result.output)
    assert match is not None, result.output
    assert abs(float(match.group(1)) - 60.0) < 0.3


def test_plane_command_refuses_a_wrong_camera(tmp_path: Path) -> None:
    img = tmp_path / "big.png"
    cv2.imwrite(str(img), cv2.resize(imread(SHIPPED / "images/plane/plane.png"), (640, 480)))
    result = runner.invoke(
        app,
        [
            "plane",
            str(img),
            "--camera",
            str(SHIPPED / "camera.yaml"),
            "--out",
            str(tmp_path / "p.yaml"),
        ],
    )
    assert result.exit_code == 1
    assert "calibrated for 320x320, but the plane image gives 640x480" in result.output


def test_handeye_command_on_the_shipped_example(tmp_path: Path) -> None:
    out = tmp_path / "he.yaml"
    result = runner.invoke(
        app,
        [
            "handeye",
            str(SHIPPED / "images/handeye/poses.csv"),
            "--camera",
            str(SHIPPED / "camera.yaml"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "camera -> base" in result.output and "consistency" in result.output
    assert out.is_file()


def test_render_views_small(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render-views", str(tmp_path), "--views", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view_00.png", "view_01.png"]
    bad = runner.invoke(app, ["render-views", str(tmp_path), "--views", "0"])
    assert bad.exit_code == 1 and "--views must be >= 1" in bad.output
