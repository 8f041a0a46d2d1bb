"""The wheel works anywhere: built, installed into a fresh venv outside the checkout, and run.

The wheel is built from a copy of the checkout's files (what git tracks or would track, so no
stale build/ and no local data), with this venv's setuptools (no build isolation, no network).
The fresh venv gets this venv's site-packages as a plain path line in a .pth file: the
dependencies resolve without a download, while that folder's own .pth files (the editable
install of this checkout among them) are not processed, so `cellinspect` is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from cellinspect import shipped
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _checkout_files() -> list[str]:
    """Tracked files plus new ones git does not ignore: what a clean checkout would hold."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell source files from local ones")
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> str:
    """Run a command with a plain environment; return stdout + stderr, failing on exit != 0."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CELL"))
    }
    env["COLUMNS"] = "200"  # rich tables on one line each
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in _checkout_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _run(
        *(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"),
        *("--no-index", "-q", "-w", dist),
        cwd=src,
    )
    (built,) = dist.glob("cellinspect-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    assert not venv.is_relative_to(ROOT)
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv)
    ours = sysconfig.get_paths()["purelib"]
    (Path(site.strip()) / "_cellinspect_test_deps.pth").write_text(ours + "\n", encoding="utf-8")
    # pip comes from this venv through the .pth; it installs into the fresh venv's prefix.
    _run(
        *(python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall"),
        *("-q", wheel),
        cwd=venv,
    )
    return bin_dir


def test_wheel_holds_the_shipped_cell_and_no_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"cellinspect/{shipped.PACKAGE_DIR}/{f}" for f in shipped.FILES} <= set(names)
    static = ("review.js", "dashboard.html", "dashboard.js", "vendor/chart.umd.js")
    assert {f"cellinspect/api/static/{f}" for f in static} <= set(names)
    assert "cellinspect/api/static/vendor/chart.js.LICENSE.md" in names
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/"))]
    assert not [n for n in names if "sample_images" in n or n.endswith((".bmp", ".png"))]
    assert wheel.stat().st_size < 25_000_000


def test_installed_wheel_runs_the_shipped_cell_outside_the_checkout(
    venv_bin: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert not work.is_relative_to(ROOT)
    python, cli = venv_bin / "python", venv_bin / "cellinspect"

    where = _run(python, "-c", "import cellinspect; print(cellinspect.__file__)", cwd=work)
    assert Path(where.strip()).is_relative_to(venv_bin.parent), where

    out = _run(cli, "init", "cell", cwd=work)
    assert "wrote 11 shipped files" in out
    assert len(list((work / "cell" / "sample_images").glob("*.bmp"))) == shipped.SAMPLE_COUNT

    out = _run(
        *(cli, "inspect", "cell/sample_images", "--recipe", "cell/recipes/flange.yaml"),
        *("--jsonl", "results.jsonl"),
        cwd=work,
    )
    assert "│ parts              │           40 │" in out
    assert "errors (fail-safe) │            0" in out
    assert len((work / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 40

    # The default recipe is not here: the shipped one, said so.
    one = "cell/sample_images/part_0001_good.bmp"
    out = _run(cli, "inspect", one, cwd=work)
    assert "recipes/flange.yaml not found here: using the one shipped with cellinspect" in out
    assert f"{shipped.PACKAGE_DIR}" in out

    out = _run(cli, "demo", "--parts", "4", "--no-api", cwd=work)
    assert "│ parts " in out and "4 / 4" in out
    assert "every gate action matched its part's verdict" in out
    assert (work / "cellinspect-demo" / "results.db").is_file()
    site = venv_bin.parent
    assert not list(site.rglob("results.db")), "the demo wrote into the installed package"
