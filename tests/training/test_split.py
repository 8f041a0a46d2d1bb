"""The recorded split: stratified, seeded, written and read back, refused for another dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.training.dataset import Dataset, DatasetError, LabelledImage
from cellinspect.training.split import load_split, make_split, save_split, split_sha256


def _dataset(root: Path, counts: dict[str, int]) -> Dataset:
    items = [
        LabelledImage(root / lbl / f"{i:03d}.png", lbl)
        for lbl, n in counts.items()
        for i in range(n)
    ]
    return Dataset(root, items)


@pytest.mark.parametrize(
    ("counts", "test_counts"),
    [
        ({"good": 10, "dent": 5}, {"good": 2, "dent": 1}),
        ({"good": 3, "dent": 3}, {"good": 1, "dent": 1}),
        ({"good": 1, "dent": 2}, {"dent": 0}),
    ],
)
def test_stratified_and_every_class_tested(
    tmp_path: Path, counts: dict[str, int], test_counts: dict[str, int]
) -> None:
    split = make_split(_dataset(tmp_path, counts), seed=1)
    got = split.counts()
    for lbl, n in counts.items():
        assert sum(got[s].get(lbl, 0) for s in got) == n
    for lbl, n in test_counts.items():
        assert got["test"].get(lbl, 0) >= n


def test_same_seed_same_split_and_roundtrip(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, {"good": 12, "scratch": 8})
    first, second = make_split(ds, seed=3), make_split(ds, seed=3)
    assert first.assignment == second.assignment
    assert make_split(ds, seed=4).assignment != first.assignment
    digest = save_split(first, tmp_path / "split.json")
    assert digest == split_sha256(tmp_path / "split.json")
    loaded = load_split(tmp_path / "split.json")
    assert loaded.assignment == first.assignment
    test = loaded.subset(ds, "test")
    train = loaded.subset(ds, "train")
    assert not {i.path for i in test.items} & {i.path for i in train.items}


def test_split_of_another_dataset_is_refused(tmp_path: Path) -> None:
    split = make_split(_dataset(tmp_path / "a", {"good": 5, "dent": 5}))
    with pytest.raises(DatasetError, match="none of its 10 images"):
        split.subset(_dataset(tmp_path / "a", {"ok": 5, "bad": 5}), "test")
    with pytest.raises(DatasetError, match="subset must be one of"):
        split.subset(_dataset(tmp_path / "a", {"good": 5, "dent": 5}), "holdout")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot read split"),
        ("{}", "not a split file"),
        (
            '{"seed": 0, "fractions": [1,0,0], '
            '"items": [{"file": "a", "label": "g", "subset": "x"}]}',
            "subset 'x'",
        ),
    ],
)
def test_broken_split_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_split(path)
    with pytest.raises(DatasetError, match="not found"):
        load_split(tmp_path / "missing.json")


def test_bad_fractions(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="fractions"):
        make_split(_dataset(tmp_path, {"good": 3}), fractions=(0.5, 0.5, 0.5))
