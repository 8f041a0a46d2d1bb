"""`cellinspect line` as a real process, several runs in a row: each exits 0, with no C++ abort.

A daemon thread still inside OpenCV or onnxruntime at interpreter exit is unwound through
their C++ frames and the process dies with "terminate called without an active exception"
(exit 134), now and then, after printing its report. The runs keep the store (images written
by the writer thread), the API and the simulated robot, as `cellinspect line` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

RUNS = 3


def _station(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "stations" / "sim.yaml").read_text(encoding="utf-8"))
    data["recipes"] = {
        n: str((ROOT / "stations" / p).resolve()) for n, p in data["recipes"].items()
    }
    data["modbus"]["port"] = 0
    data["api"]["port"] = 0
    data["store"]["data_dir"] = str(tmp_path / "data")
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_line_exits_cleanly_run_after_run(tmp_path: Path) -> None:
    station = _station(tmp_path)
    for run in range(RUNS):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cellinspect",
                "line",
                "--station",
                str(station),
                "--parts",
                "12",
                "--rate",
                "600",
                "--seed",
                str(run),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,  # hang guard only
        )
        assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.returncode == 0, (run, proc.returncode, proc.stderr[-3000:])
