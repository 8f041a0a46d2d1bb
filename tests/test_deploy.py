"""deploy/cellinspect.service: a unit systemd accepts, that restarts and runs as its own user."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "deploy" / "cellinspect.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_unit_restarts_on_failure_as_its_own_user_on_a_station_file() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "cellinspect" and service["Group"] == "cellinspect"
    command = service["ExecStart"].split()
    assert command[0].endswith("/.venv/bin/cellinspect")
    assert command[1:] == ["run", "/etc/cellinspect/station.yaml"]
    assert service["KillSignal"] == "SIGTERM"  # the ordered stop
    assert int(service["TimeoutStopSec"]) >= 30


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "cellinspect.service"
    path.write_text(unit_text, encoding="utf-8")
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # The unit names the install path (/opt/cellinspect); point it at this checkout's
    # executable, which verify checks exists and is executable.
    here = Path(sys.executable).parent / "cellinspect"
    assert here.is_file(), here
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/cellinspect/.venv/bin/cellinspect", str(here)
    )
    checked = _verify(text, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "cellinspect.service" not in checked.stdout + checked.stderr  # no warnings either
    # and verify does catch a broken unit, so the check above can fail
    broken = _verify(text.replace("Restart=on-failure", "Restart=sometimes"), tmp_path)
    assert "restart specifier" in broken.stdout + broken.stderr
