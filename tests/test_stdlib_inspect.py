"""The source root is called `inspect/`: it must never shadow the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_inspect_is_stdlib_from_repo_root() -> None:
    code = "import inspect, sys; print(inspect.__file__); print(hasattr(inspect, 'signature'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not out[0].startswith(str(ROOT)), f"inspect resolved to the repo: {out[0]}"
    assert out[1] == "True"


def test_source_root_has_no_init() -> None:
    assert not (ROOT / "inspect" / "__init__.py").exists()
    assert (ROOT / "inspect" / "cellinspect" / "__init__.py").is_file()
