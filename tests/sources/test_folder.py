"""FolderSource and the listing rules: natural order, patterns, recursion, what is ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.entities import Frame, FrameFailure
from cellinspect.errors import SourceError
from cellinspect.sources.folder import FolderSource
from cellinspect.sources.listing import list_folder, natural_key

from .helpers import write_bytes, write_image


def _names(paths: tuple[Path, ...] | list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], []),
        (["img10.png", "img2.png", "img1.png"], ["img1.png", "img2.png", "img10.png"]),
        (["B.png", "a.png", "C.png"], ["a.png", "B.png", "C.png"]),
        (["p1_10.png", "p1_9.png", "p0_99.png"], ["p0_99.png", "p1_9.png", "p1_10.png"]),
        (["x007.png", "x7.png", "x06.png"], ["x06.png", "x007.png", "x7.png"]),
    ],
)
def test_natural_order(tmp_path: Path, names: list[str], expected: list[str]) -> None:
    for name in names:
        write_image(tmp_path / name)
    assert _names(FolderSource(tmp_path).paths, tmp_path) == expected


def test_natural_key_never_compares_text_with_numbers() -> None:
    names = ["10", "a", "1a", "a1", "", "a10b2", "a10b10", "²"]
    assert sorted(names, key=natural_key)[:3] == ["", "1a", "10"]


FOLDER_FILES = [
    "part2.png",
    "part10.PNG",
    "part1.jpg",
    "junk.bin",
    "labels.csv",
    "README.md",
    "meta.json",
    "notes.txt",
    "recipe.yaml",
    ".hidden.png",
    "upload.png.part",
    "~lock.png",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["junk.bin", "part1.jpg", "part2.png", "part10.PNG"]),
        ("*.png", ["part2.png", "part10.PNG"]),
        ("part*", ["part1.jpg", "part2.png", "part10.PNG"]),
        ("*.txt", ["notes.txt"]),
        ("*.md", ["README.md"]),
        ("*.gif", []),
    ],
)
def test_pattern_and_ignored_files(tmp_path: Path, pattern: str, expected: list[str]) -> None:
    for name in FOLDER_FILES:
        if name.lower().endswith((".png", ".jpg")):
            write_image(tmp_path / name)
        else:
            write_bytes(tmp_path / name, b"x")
    (tmp_path / "subdir.png").mkdir()
    assert _names(FolderSource(tmp_path, pattern=pattern).paths, tmp_path) == expected


def test_non_images_become_failures_not_gaps(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    write_image(tmp_path / "c.png")
    items = list(FolderSource(tmp_path).frames())
    assert [type(i) for i in items] == [Frame, FrameFailure, Frame]
    assert isinstance(items[1], FrameFailure)
    assert "b.bin" in items[1].reason


def test_recursive(tmp_path: Path) -> None:
    for rel in ["z.png", "sub/b.png", "sub/a10.png", "sub/a2.png", "sub/deep/c.png", ".git/x.png"]:
        write_image(tmp_path / rel)
    assert _names(FolderSource(tmp_path).paths, tmp_path) == ["z.png"]
    assert _names(FolderSource(tmp_path, recursive=True).paths, tmp_path) == [
        "sub/a2.png",
        "sub/a10.png",
        "sub/b.png",
        "sub/deep/c.png",
        "z.png",
    ]
    items = list(FolderSource(tmp_path, recursive=True).frames())
    assert [i.frame_id for i in items] == [0, 1, 2, 3, 4]


def test_broken_symlink_is_a_failure(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "gone.png")
    items = list(FolderSource(tmp_path).frames())
    assert isinstance(items[0], Frame)
    assert isinstance(items[1], FrameFailure)
    assert "file not found" in items[1].reason


def test_listing_is_taken_at_creation(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    source = FolderSource(tmp_path)
    write_image(tmp_path / "b.png")
    assert [i.path for i in source.frames()] == [str(tmp_path / "a.png")]


def test_empty_folder(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    assert list(source.frames()) == []
    assert source.name == f"folder:{tmp_path}"


@pytest.mark.parametrize(
    ("target", "pattern", "message"),
    [
        ("nope", "*", "folder not found: .*nope"),
        ("file.png", "*", "not a folder: .*file.png"),
        (".", "sub/*.png", "file-name glob"),
        (".", "", "file-name glob"),
    ],
)
def test_bad_folder_or_pattern(tmp_path: Path, target: str, pattern: str, message: str) -> None:
    write_image(tmp_path / "file.png")
    with pytest.raises(SourceError, match=message):
        FolderSource(tmp_path / target, pattern=pattern)


def test_list_folder_matches_source(tmp_path: Path) -> None:
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "a.png")
    assert list_folder(tmp_path) == list(FolderSource(tmp_path).paths)
