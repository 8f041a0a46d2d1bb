"""Labelled image sets for fitting and evaluation, read the way the station will see them.

A dataset is either a folder of class sub-folders (`good/`, `scratch/`, ...) or a folder with
a `labels.csv` (columns `file,label`). Images go through the recipe's preprocessing and ROI
crop, so a model is taught on exactly what it will judge on the line. Unreadable images are
reported and skipped, never silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cellinspect.calibration.camera_file import load_camera_calibration
from cellinspect.config import PreprocessOp, Recipe
from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, ConfigError
from cellinspect.inference.manifest import Manifest
from cellinspect.inference.preprocess_contract import check_preprocess, check_roi_size
from cellinspect.preprocess.chain import build_chain, roi_crops
from cellinspect.sources.decode import IMAGE_SUFFIXES, decode_image_file

LABELS_FILE = "labels.csv"

Progress = Callable[[int, int], None]
Stage = Callable[[str, int, int], None]


def no_stage(what: str, done: int, total: int) -> None:
    """The default progress callback of long jobs: report nothing."""


class DatasetError(ConfigError):
    """A dataset folder is missing, empty, or labelled in a way that cannot be used."""


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    label: str


@dataclass
class Dataset:
    """Items in a stable order plus where they came from."""

    root: Path
    items: list[LabelledImage]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return sorted({i.label for i in self.items})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.label for i in self.items).items()))

    def with_labels(self, labels: Sequence[str]) -> Dataset:
        keep = set(labels)
        return Dataset(self.root, [i for i in self.items if i.label in keep], list(self.skipped))

    def fingerprint(self) -> str:
        """sha256 over (relative path, label, file hash): what the model was taught on."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.path.name}\t{item.label}\t".encode())
            digest.update(hashlib.sha256(item.path.read_bytes()).digest())
        return digest.hexdigest()


def _from_labels_csv(root: Path, csv_path: Path) -> Dataset:
    items: list[LabelledImage] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        if not {"file", "label"} <= fields:
            raise DatasetError(
                f"{csv_path}: needs columns 'file' and 'label', has {sorted(fields)}"
            )
        for line_no, row in enumerate(reader, start=2):
            name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if not name or not label:
                raise DatasetError(f"{csv_path}:{line_no}: empty 'file' or 'label'")
            items.append(LabelledImage(root / name, label))
    return Dataset(root, items)


def _from_class_folders(root: Path) -> Dataset:
    items: list[LabelledImage] = []
    empty: list[str] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            empty.append(folder.name)
        items.extend(LabelledImage(p, folder.name) for p in files)
    if empty:
        raise DatasetError(f"{root}: class folder(s) without images: {empty}")
    return Dataset(root, items)


def load_dataset(root: Path | str) -> Dataset:
    """Read a class-folder dataset or a folder with labels.csv; errors name the folder."""
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    csv_path = folder / LABELS_FILE
    dataset = _from_labels_csv(folder, csv_path) if csv_path.is_file() else None
    if dataset is None:
        dataset = _from_class_folders(folder)
    if not dataset.items:
        raise DatasetError(
            f"{folder}: no images found (expected class sub-folders or {LABELS_FILE})"
        )
    return dataset


def good_images(root: Path | str) -> Dataset:
    """A folder of good images only (any layout): every image file below it counts as good."""
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder of good images not found")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DatasetError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return Dataset(folder, [LabelledImage(p, "good") for p in files])


class RoiReader:
    """Applies a recipe's preprocessing and one ROI crop, as the station does."""

    def __init__(self, recipe: Recipe | None, roi: str | None = None) -> None:
        # What the images go through, for the manifest's record and its check.
        self.ops: tuple[PreprocessOp, ...] = tuple(recipe.preprocess) if recipe else ()
        self.where = f"recipe '{recipe.name}'" if recipe else "reading without a recipe"
        if recipe is None:
            self._chain = None
            self._rois = []
            return
        calibration = load_camera_calibration(recipe.calibration) if recipe.calibration else None
        self._chain = build_chain(recipe.preprocess, calibration)
        names = [r.name for r in recipe.rois]
        if roi is None and len(names) > 1:
            raise ConfigError(f"recipe '{recipe.name}' has several ROIs {names}: choose one")
        if roi is not None and roi not in names:
            raise ConfigError(f"recipe '{recipe.name}' has no ROI '{roi}' (ROIs: {names})")
        self._rois = [r for r in recipe.rois if roi is None or r.name == roi]

    @classmethod
    def whole_frame(cls, ops: Sequence[PreprocessOp], where: str) -> RoiReader:
        """`ops` on the whole image, no crop: for image sets that are already cut out."""
        reader = cls(None)
        reader.ops = tuple(ops)
        reader.where = where
        reader._chain = build_chain(reader.ops)
        return reader

    @property
    def roi_size(self) -> list[int] | None:
        """[width, height] of the one ROI crop, or None when whole images are read."""
        if self._chain is None or not self._rois:
            return None
        return [self._rois[0].width, self._rois[0].height]

    def check_fitted_like(self, manifest: Manifest) -> None:
        """Refuse to read images for `manifest`'s model unlike those it was fitted on."""
        check_preprocess(manifest, self.ops, self.where)
        size = self.roi_size
        if size is not None:
            check_roi_size(manifest, size, f"{self.where} ROI '{self._rois[0].name}'")

    def describe(self) -> list[str]:
        """The preprocessing steps by name (none without a recipe), for reports."""
        return self._chain.describe() if self._chain is not None else []

    def __call__(self, image: ImageU8) -> ImageU8:
        if self._chain is None:
            return image
        prepared = self._chain(image)
        if not self._rois:
            return prepared
        return roi_crops(prepared, self._rois)[0][1]


def read_images(
    dataset: Dataset, reader: RoiReader, progress: Progress | None = None
) -> Iterator[tuple[LabelledImage, ImageU8]]:
    """Decode and crop each image; failures go to `dataset.skipped` with the reason."""
    total = len(dataset.items)
    for i, item in enumerate(dataset.items):
        try:
            yield item, reader(decode_image_file(item.path))
        except CellInspectError as err:
            dataset.skipped.append((item.path, str(err)))
        if progress is not None:
            progress(i + 1, total)


def _from_manifest_file(path: Path) -> Dataset:
    """A CSV or JSONL manifest (columns/keys `file`, `label`) as `cellinspect export` writes."""
    root = path.parent
    items: list[LabelledImage] = []
    if path.suffix.lower() == ".csv":
        return _from_labels_csv(root, path)
    if path.suffix.lower() not in {".jsonl", ".ndjson"}:
        raise DatasetError(f"{path}: dataset manifest must be .csv or .jsonl, got '{path.suffix}'")
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{line_no}: not JSON: {err.msg}") from err
        name = str(row.get("file") or "").strip() if isinstance(row, dict) else ""
        label = str(row.get("label") or "").strip() if isinstance(row, dict) else ""
        if not name or not label:
            raise DatasetError(f"{path}:{line_no}: needs non-empty 'file' and 'label'")
        items.append(LabelledImage(root / name, label))
    return Dataset(root, items)


def load_labelled(source: Path | str) -> Dataset:
    """A class-folder dataset, a folder with labels.csv, or a CSV/JSONL manifest file."""
    path = Path(source)
    if path.is_file():
        dataset = _from_manifest_file(path)
        if not dataset.items:
            raise DatasetError(f"{path}: manifest lists no images")
        missing = [str(i.path) for i in dataset.items if not i.path.is_file()]
        if missing:
            raise DatasetError(
                f"{path}: {len(missing)} listed image(s) not found, e.g. {missing[0]}"
            )
        return dataset
    return load_dataset(path)
