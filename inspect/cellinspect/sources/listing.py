"""Which files in a folder count as inputs, and in which order.

Rules shared by the folder and hot-folder sources, so both see a folder the same way:

- the pattern matches file *names* (not paths), case-insensitively (`*.png` takes `A.PNG`);
- hidden entries (name starts with ".") are skipped, and so are hidden sub-folders;
- files still being written by the usual conventions are never inputs: `~*`, `*.tmp`,
  `*.part`, `*.partial`, `*.crdownload`, `*.swp`;
- with the catch-all pattern "*", obvious sidecars are ignored: `labels.csv`, `*.csv`, `*.md`,
  `*.json`, `*.txt`, `*.yaml`, `*.yml`, `Thumbs.db`, `desktop.ini`. Name a pattern (e.g.
  `*.txt`) to take such files anyway;
- every other matching file is an input; one that is not an image becomes a FrameFailure
  later, so nothing is dropped silently;
- order is natural by relative path ("img2" before "img10"), case-insensitive.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from cellinspect.errors import SourceError

CATCH_ALL = "*"
SIDECAR_NAMES = frozenset({"labels.csv", "thumbs.db", "desktop.ini"})
SIDECAR_SUFFIXES = frozenset({".csv", ".md", ".json", ".txt", ".yaml", ".yml"})
TEMP_SUFFIXES = frozenset({".tmp", ".part", ".partial", ".crdownload", ".swp"})

_DIGITS = re.compile(r"([0-9]+)")

NaturalKey = tuple[tuple[str | int, ...], str]


def natural_key(text: str) -> NaturalKey:
    """Sort key that orders digit runs by value: "img2" < "img10"; ties fall back to the text."""
    parts = _DIGITS.split(text)
    # re.split with a group alternates text, digits, text...: types line up position by position.
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return key, text


def path_key(path: Path, root: Path) -> tuple[NaturalKey, ...]:
    """Natural key of a path relative to `root`, component by component."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return tuple(natural_key(part) for part in rel.parts)


def check_pattern(pattern: str) -> str:
    """A pattern must name files, not paths."""
    if not pattern or "/" in pattern or os.sep in pattern:
        raise SourceError(f"file pattern must be a non-empty file-name glob, got {pattern!r}")
    return pattern


def is_input_name(name: str, pattern: str) -> bool:
    """Whether a file called `name` is an input under `pattern` (see the module rules)."""
    folded = name.casefold()
    suffix = Path(folded).suffix
    if folded.startswith((".", "~")) or suffix in TEMP_SUFFIXES:
        return False
    if not fnmatch.fnmatchcase(folded, pattern.casefold()):
        return False
    return pattern != CATCH_ALL or not (folded in SIDECAR_NAMES or suffix in SIDECAR_SUFFIXES)


def _is_file_like(entry: os.DirEntry[str]) -> bool:
    """Regular files, and broken symlinks (they become a 'file not found' failure, not a gap)."""
    try:
        if entry.is_file():
            return True
        return entry.is_symlink() and not Path(entry.path).exists()
    except OSError:
        return False


def check_folder(root: Path) -> Path:
    """The folder itself must exist and be a folder."""
    if not root.exists():
        raise SourceError(f"folder not found: {root}")
    if not root.is_dir():
        raise SourceError(f"not a folder: {root}")
    return root


def list_folder(root: Path, pattern: str = CATCH_ALL, recursive: bool = False) -> list[Path]:
    """Input files under `root` in natural order; sub-folders only when `recursive`."""
    root = check_folder(Path(root))
    check_pattern(pattern)
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if recursive and entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif _is_file_like(entry) and is_input_name(entry.name, pattern):
                        found.append(Path(entry.path))
        except OSError as err:
            raise SourceError(f"cannot list folder {folder}: {err.strerror or err}") from err
    found.sort(key=lambda p: path_key(p, root))
    return found
