"""A fixed, recorded, stratified train/validation/test split.

Figures are only honest when the images a model is judged on were never seen in training, and
only comparable when the next model is judged on the same images. The split is therefore drawn
once (seeded, per class), written as JSON beside the model, its hash put into the manifest, and
read back by `evaluate` and `calibrate thresholds`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cellinspect.training.dataset import Dataset, DatasetError, LabelledImage

SUBSETS = ("train", "val", "test")
SPLIT_FILE = "split.json"


@dataclass(frozen=True, slots=True)
class Split:
    """Which subset each image (by path relative to the dataset root) belongs to."""

    seed: int
    fractions: tuple[float, float, float]
    assignment: dict[str, tuple[str, str]]  # relative path -> (label, subset)

    def subset(self, dataset: Dataset, name: str) -> Dataset:
        """The images of `dataset` in subset `name`; errors when the split does not fit it."""
        if name not in SUBSETS:
            raise DatasetError(f"split subset must be one of {list(SUBSETS)}, got '{name}'")
        keep: list[LabelledImage] = []
        unknown = 0
        for item in dataset.items:
            entry = self.assignment.get(_key(dataset.root, item.path))
            if entry is None:
                unknown += 1
            elif entry[1] == name:
                keep.append(item)
        if unknown == len(dataset.items):
            raise DatasetError(
                f"{dataset.root}: none of its {unknown} images are in the split "
                "(was the split made for another dataset?)"
            )
        if not keep:
            raise DatasetError(f"{dataset.root}: the split's '{name}' subset has no images here")
        return Dataset(dataset.root, keep, list(dataset.skipped))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {s: {} for s in SUBSETS}
        for label, subset in self.assignment.values():
            out[subset][label] = out[subset].get(label, 0) + 1
        return {s: dict(sorted(c.items())) for s, c in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "fractions": list(self.fractions),
            "counts": self.counts(),
            "items": [
                {"file": f, "label": lbl, "subset": s}
                for f, (lbl, s) in sorted(self.assignment.items())
            ],
        }


def _key(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _allocate(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Per-class counts; every subset gets an image when the class has at least three."""
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(1, n_val) if fractions[1] > 0 else 0, max(1, n_test)
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    return n - n_val - n_test, n_val, n_test


def make_split(
    dataset: Dataset, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> Split:
    """Stratified split: each class is shuffled with `seed` and cut by `fractions`."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(f"split fractions must be three shares summing to 1, got {fractions}")
    by_label: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in dataset.items:
        by_label[item.label].append(item)
    rng = np.random.default_rng(seed)
    assignment: dict[str, tuple[str, str]] = {}
    for label in sorted(by_label):
        items = by_label[label]
        order = rng.permutation(len(items))
        n_train, n_val, _ = _allocate(len(items), fractions)
        for rank, idx in enumerate(order):
            subset = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            assignment[_key(dataset.root, items[idx].path)] = (label, subset)
    return Split(seed, (fractions[0], fractions[1], fractions[2]), assignment)


def save_split(split: Split, path: Path) -> str:
    """Write the split as JSON; returns its sha256 (recorded in the manifest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(split.to_dict(), indent=1) + "\n"
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def load_split(path: Path) -> Split:
    """Read a split written by `save_split`; errors name the file and the broken entry."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: split file not found") from err
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot read split: {err}") from err
    try:
        fr = tuple(float(f) for f in data["fractions"])
        assignment: dict[str, tuple[str, str]] = {}
        for i, row in enumerate(data["items"]):
            if row["subset"] not in SUBSETS:
                raise DatasetError(f"{path}: items[{i}].subset '{row['subset']}' not in {SUBSETS}")
            assignment[str(row["file"])] = (str(row["label"]), str(row["subset"]))
        return Split(int(data["seed"]), (fr[0], fr[1], fr[2]), assignment)
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise DatasetError(f"{path}: not a split file (missing or bad {err})") from err


def split_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CALIBRATION_FRACTION = 0.2  # share of a fitting command's good images kept apart to calibrate


def calibration_split(
    dataset: Dataset, fraction: float = CALIBRATION_FRACTION, seed: int = 0
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """(fit part, calibration part, record): each label shuffled with `seed`, `fraction` of it
    (at least one image) kept apart so thresholds are never set on images the model fitted.

    The record (seed, fraction, counts, sha256 of the sorted file list) goes into the manifest;
    the same files and seed give the same parts.
    """
    if not 0 < fraction < 1:
        raise DatasetError(f"calibration fraction must lie in (0, 1), got {fraction}")
    by_label: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in sorted(dataset.items, key=lambda i: _key(dataset.root, i.path)):
        by_label[item.label].append(item)
    rng = np.random.default_rng(seed)
    fit: list[LabelledImage] = []
    calibrate: list[LabelledImage] = []
    for label in sorted(by_label):
        items = by_label[label]
        n_cal = min(len(items) - 1, max(1, round(len(items) * fraction)))
        order = rng.permutation(len(items))
        calibrate.extend(items[i] for i in sorted(order[:n_cal]))
        fit.extend(items[i] for i in sorted(order[n_cal:]))
    files = "\n".join(sorted(_key(dataset.root, i.path) for i in dataset.items))
    record = {
        "seed": seed,
        "fraction": fraction,
        "fit_images": len(fit),
        "calibration_images": len(calibrate),
        "files_sha256": hashlib.sha256(files.encode()).hexdigest(),
    }
    skipped = list(dataset.skipped)
    return Dataset(dataset.root, fit, skipped), Dataset(dataset.root, calibrate, []), record


I64 = npt.NDArray[np.int64]


def dealt_order(sources: I64, seed: int) -> I64:
    """Unit indices (tiles, or images when each is its own source) with the source images in
    seeded random order and each image's units together: one permutation of the images, so a
    cut anywhere between images keeps every image's tiles on one side. With one unit per
    image it is `default_rng(seed).permutation(n)`, the draw untiled fits have always made."""
    sources = np.asarray(sources, np.int64)
    order = np.random.default_rng(seed).permutation(source_count(sources))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return np.asarray(np.argsort(rank[sources], kind="stable"), np.int64)


def source_count(sources: I64) -> int:
    """How many source images the units come from (sources are 0..n-1)."""
    return int(np.max(sources)) + 1 if len(sources) else 0


def grouped_holdout(sources: I64, n_hold: int, seed: int) -> tuple[I64, I64]:
    """(held-out, kept) unit indices: `n_hold` whole source images drawn with `seed`, every
    tile of an image on its image's side. Overlapping tiles of one image are near-copies: one
    in the bank and another held out would set the score scale on a part the bank has seen."""
    sources = np.asarray(sources, np.int64)
    order = dealt_order(sources, seed)
    n = source_count(sources)
    if not 0 <= n_hold <= n:
        raise DatasetError(f"cannot hold out {n_hold} of {n} source image(s)")
    cut = int(np.searchsorted(source_rank(sources[order]), n_hold))
    return order[:cut], order[cut:]


def source_rank(ordered_sources: I64) -> I64:
    """Per unit: how many distinct source images first appear before its own, in the given
    order: what deals images, not tiles, to cross-fitting folds."""
    ordered_sources = np.asarray(ordered_sources, np.int64)
    if not len(ordered_sources):
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(ordered_sources, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return np.asarray(rank[inverse.reshape(-1)], np.int64)
