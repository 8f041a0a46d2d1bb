"""The elpv solar-cell set (Deitsch et al.): loading from the installed package and the split.

The images are CC BY-NC-SA 4.0, so they are never copied into the repository: they are read
from the installed `elpv-dataset` package at run time. The split is fixed (stratified jointly by
the binary label and the cell type, seeded) and recorded as a CSV with its hash, so every
figure can be traced to the exact images it was measured on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, ConfigError

INSTALL_HINT = "pip install -e '.[eval]'"
DEFECT_AT = 0.5  # defect probability from which a cell counts as defective (the paper's cut)
SPLIT_COLUMNS = ("file", "probability", "type", "label", "split")
LICENCE = "elpv-dataset images: CC BY-NC-SA 4.0 (Deitsch et al., Buerhop-Lutz et al.)"


class ElpvError(ConfigError):
    """elpv-dataset is missing, or its labels or images cannot be read."""


@dataclass(frozen=True, slots=True)
class ElpvItem:
    """One cell image: its file (relative to the data folder), label and type."""

    file: str
    probability: float
    cell_type: str

    @property
    def defective(self) -> bool:
        return self.probability >= DEFECT_AT

    @property
    def functional(self) -> bool:
        """No expert saw a defect (probability 0): what anomaly detectors are taught on."""
        return self.probability == 0.0

    @property
    def label(self) -> str:
        return "defective" if self.defective else "good"


@dataclass(frozen=True, slots=True)
class Split:
    """A fixed train/test split; `items` keeps the order the split CSV records."""

    train: tuple[ElpvItem, ...]
    test: tuple[ElpvItem, ...]
    seed: int
    test_fraction: float

    def csv_text(self) -> str:
        """The recorded split: one row per image, sorted by file name."""
        rows = [(i, "train") for i in self.train] + [(i, "test") for i in self.test]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(SPLIT_COLUMNS)
        for item, part in sorted(rows, key=lambda r: r[0].file):
            writer.writerow([item.file, repr(item.probability), item.cell_type, item.label, part])
        return buf.getvalue()

    def sha256(self) -> str:
        return hashlib.sha256(self.csv_text().encode("utf-8")).hexdigest()

    def write_csv(self, path: Path) -> str:
        """Write the split CSV; returns its sha256."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.csv_text(), encoding="utf-8")
        return self.sha256()


def data_root() -> Path:
    """The installed package's data folder; a clear error says how to install it."""
    try:
        import elpv_dataset
    except ImportError as err:
        raise ElpvError(
            f"the elpv-dataset package is not installed (needed for eval-elpv): {INSTALL_HINT}"
        ) from err
    root = Path(elpv_dataset.__file__).parent / "data"
    if not (root / "labels.csv").is_file():
        raise ElpvError(f"{root}: labels.csv not found in the elpv-dataset package")
    return root


def parse_labels(text: str, source: str) -> list[ElpvItem]:
    """Rows of `file probability type` (whitespace separated), as the package ships them."""
    items: list[ElpvItem] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ElpvError(f"{source}:{line_no}: expected 'file probability type', got {line!r}")
        name, prob_text, cell_type = fields
        try:
            prob = float(prob_text)
        except ValueError as err:
            raise ElpvError(f"{source}:{line_no}: probability {prob_text!r} is no number") from err
        if not 0.0 <= prob <= 1.0 or math.isnan(prob):
            raise ElpvError(f"{source}:{line_no}: probability {prob} outside [0, 1]")
        items.append(ElpvItem(name, prob, cell_type))
    if not items:
        raise ElpvError(f"{source}: no labelled images")
    return items


def load_items(root: Path | None = None) -> list[ElpvItem]:
    folder = root or data_root()
    path = folder / "labels.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ElpvError(f"{path}: cannot read labels: {err}") from err
    return parse_labels(text, str(path))


def stratified_split(
    items: list[ElpvItem],
    test_fraction: float = 0.25,
    seed: int = 0,
    limit: int | None = None,
) -> Split:
    """Seeded split stratified by (label, type); `limit` first draws a stratified subset.

    Each stratum is sorted by file name before the seeded shuffle, so the split depends only on
    the labels, never on the order the files were listed in.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if limit is not None and limit < 4:
        raise ValueError(f"limit must be >= 4 images, got {limit}")
    strata: dict[tuple[str, str], list[ElpvItem]] = defaultdict(list)
    for item in items:
        strata[(item.label, item.cell_type)].append(item)
    rng = np.random.default_rng(seed)
    keep_share = 1.0 if limit is None else min(1.0, limit / max(1, len(items)))
    train: list[ElpvItem] = []
    test: list[ElpvItem] = []
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: i.file)
        order = rng.permutation(len(members))
        kept = [members[i] for i in order[: max(1, round(len(members) * keep_share))]]
        n_test = round(len(kept) * test_fraction)
        test.extend(kept[:n_test])
        train.extend(kept[n_test:])
    return Split(
        train=tuple(sorted(train, key=lambda i: i.file)),
        test=tuple(sorted(test, key=lambda i: i.file)),
        seed=seed,
        test_fraction=test_fraction,
    )


def read_image(root: Path, item: ElpvItem) -> ImageU8:
    """One cell as a BGR uint8 image (the station's frame format)."""
    path = root / item.file
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ElpvError(f"{path}: cannot read image")
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def read_images(root: Path, items: tuple[ElpvItem, ...] | list[ElpvItem]) -> list[ImageU8]:
    try:
        return [read_image(root, i) for i in items]
    except CellInspectError:
        raise
    except cv2.error as err:
        raise ElpvError(f"{root}: OpenCV failed to read an image: {err}") from err
