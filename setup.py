"""Build step of the wheel and sdist: the shipped cell goes into the package.

Everything else is in pyproject.toml. The recipes, models, calibration and station files that
`cellinspect.shipped.FILES` lists live once, at the top of the repository; building copies them
into the wheel as cellinspect/shipped_cell/ (same layout, so their relative paths resolve), and
into the sdist at their own paths (so a wheel built from the sdist gets them too). An editable
install copies nothing: cellinspect.shipped reads them from the checkout.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
SHIPPED_MODULE = HERE / "inspect" / "cellinspect" / "shipped.py"


def _literal(name: str) -> object:
    """A module-level constant of cellinspect/shipped.py, read without importing the package."""
    tree = ast.parse(SHIPPED_MODULE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return ast.literal_eval(node.value)
    raise RuntimeError(f"{SHIPPED_MODULE}: no constant {name}")


_files = _literal("FILES")
assert isinstance(_files, tuple) and all(isinstance(f, str) for f in _files), _files
FILES: tuple[str, ...] = _files
PACKAGE_DIR = str(_literal("PACKAGE_DIR"))


def _missing() -> list[str]:
    return [name for name in FILES if not (HERE / name).is_file()]


class BuildPyWithShippedCell(build_py):
    """build_py, then the shipped files into build_lib/cellinspect/shipped_cell/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if missing := _missing():
            raise RuntimeError(f"shipped files missing from {HERE}: {missing}")
        target = Path(self.build_lib) / "cellinspect" / PACKAGE_DIR
        shutil.rmtree(target, ignore_errors=True)  # no stale file from an earlier build
        for name in FILES:
            self.mkpath(str((target / name).parent))
            self.copy_file(str(HERE / name), str(target / name))


class SdistWithShippedCell(sdist):
    """sdist with the shipped files at their repository paths."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        if missing := _missing():
            raise RuntimeError(f"shipped files missing from {HERE}: {missing}")
        super().make_release_tree(base_dir, sorted({*files, *FILES}))


setup(cmdclass={"build_py": BuildPyWithShippedCell, "sdist": SdistWithShippedCell})
