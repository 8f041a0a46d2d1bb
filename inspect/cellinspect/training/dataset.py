"""Labelled image sets for fitting and evaluation, read the way the station will see them.

A dataset is either a folder of class sub-folders (`good/`, `scratch/`, ...) or a folder with
a `labels.csv` (columns `file,label`). Images go through the recipe's preprocessing and ROI
crop, so a model is taught on exactly what it will judge on the line. Unreadable images are
reported and skipped, never silently dropped.

A folder written by `cellinspect export` holds images the station had already preprocessed;
its export.json says by which recipe (export/record.py). `RoiReader.for_data` reads such
images with the ROI crop only, and records the recipe's preprocessing for the model, so the
model is accepted by that recipe, with or without `-r`.
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
from cellinspect.config import PreprocessOp, Recipe, Roi
from cellinspect.entities import ImageU8
from cellinspect.errors import CellInspectError, ConfigError
from cellinspect.export.record import (
    EXPORT_FILE,
    ExportRecord,
    RecipeRecord,
    find_export,
    read_export_record,
)
from cellinspect.inference.manifest import Manifest
from cellinspect.inference.preprocess_contract import (
    check_preprocess,
    check_roi_size,
    describe_record,
    preprocess_record,
)
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
    if (folder / EXPORT_FILE).is_file():
        return _from_export(folder)
    csv_path = folder / LABELS_FILE
    dataset = _from_labels_csv(folder, csv_path) if csv_path.is_file() else None
    if dataset is None:
        dataset = _from_class_folders(folder)
    if not dataset.items:
        raise DatasetError(
            f"{folder}: no images found (expected class sub-folders or {LABELS_FILE})"
        )
    return dataset


def _from_export(folder: Path) -> Dataset:
    """The images an export lists, with their labels; listed but missing ones are skipped."""
    record = read_export_record(folder / EXPORT_FILE)
    items = [LabelledImage(folder / i.file, i.label) for i in record.images]
    dataset = Dataset(folder, [i for i in items if i.path.is_file()])
    dataset.skipped.extend(
        (i.path, f"listed in {EXPORT_FILE} but missing") for i in items if not i.path.is_file()
    )
    if not dataset.items:
        raise DatasetError(f"{folder}: {EXPORT_FILE} lists {len(items)} image(s), none on disk")
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


def _pick_roi(rois: Sequence[Roi], roi: str | None, owner: str) -> list[Roi]:
    names = [r.name for r in rois]
    if roi is None and len(names) > 1:
        raise ConfigError(f"{owner} has several ROIs {names}: choose one with --roi")
    if roi is not None and roi not in names:
        raise ConfigError(f"{owner} has no ROI '{roi}' (ROIs: {names})")
    return [r for r in rois if roi is None or r.name == roi]


class RoiReader:
    """Applies a recipe's preprocessing and one ROI crop, as the station does."""

    def __init__(self, recipe: Recipe | None, roi: str | None = None) -> None:
        # What the images go through, for the manifest's record and its check.
        self.ops: tuple[PreprocessOp, ...] = tuple(recipe.preprocess) if recipe else ()
        self.where = f"recipe '{recipe.name}'" if recipe else "reading without a recipe"
        # Exported images (resolved path -> how the station prepared them): crop only.
        self._prepared: dict[Path, RecipeRecord] | None = None
        self._recipe_sha: str | None = None
        if recipe is None:
            self._chain = None
            self._rois: list[Roi] = []
            return
        calibration = load_camera_calibration(recipe.calibration) if recipe.calibration else None
        self._chain = build_chain(recipe.preprocess, calibration)
        self._rois = _pick_roi(recipe.rois, roi, f"recipe '{recipe.name}'")

    @classmethod
    def whole_frame(cls, ops: Sequence[PreprocessOp], where: str) -> RoiReader:
        """`ops` on the whole image, no crop: for image sets that are already cut out."""
        reader = cls(None)
        reader.ops = tuple(ops)
        reader.where = where
        reader._chain = build_chain(reader.ops)
        return reader

    @classmethod
    def for_data(
        cls,
        source: Path | str,
        recipe: Recipe | None,
        roi: str | None = None,
        recipe_sha256: str | None = None,
    ) -> RoiReader:
        """The reader for the data set at `source`: as `RoiReader(recipe, roi)`, except for an
        export (export.json), whose images are already preprocessed and are only cut.

        With `recipe`, images prepared by other ops are refused one by one (named, with why);
        without, the one recipe recorded in the export stands in for it."""
        found = find_export(Path(source))
        if found is None:
            return cls(recipe, roi)
        record, root = found
        if recipe is not None:
            reader = cls(recipe, roi)
            reader._recipe_sha = recipe_sha256
        else:
            base = _recorded_recipe(record, root)
            reader = cls(None)
            reader.ops = tuple(base.ops())
            reader.where = f"{base.label} as recorded in {root / EXPORT_FILE}"
            reader._rois = _pick_roi(base.roi_list(), roi, reader.where)
        reader._chain = None
        reader._prepared = {}
        for image in record.images:
            how = record.recipe(image.recipe_sha256) or RecipeRecord(
                name="?", sha256=image.recipe_sha256
            )
            reader._prepared[(root / image.file).resolve()] = how
        return reader

    @property
    def roi_size(self) -> list[int] | None:
        """[width, height] of the one ROI crop, or None when whole images are read."""
        if not self._rois:
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
        if self._prepared is not None:
            return [f"{describe_record(preprocess_record(self.ops))} (applied at the station)"]
        return self._chain.describe() if self._chain is not None else []

    def __call__(self, image: ImageU8) -> ImageU8:
        if self._chain is None:
            return self._crop(image) if self._prepared is not None else image
        return self._crop(self._chain(image))

    def _crop(self, prepared: ImageU8) -> ImageU8:
        if not self._rois:
            return prepared
        return roi_crops(prepared, self._rois)[0][1]

    def read(self, path: Path) -> ImageU8:
        """Decode `path` and prepare it; an exported image is checked against its record."""
        image = decode_image_file(path)
        if self._prepared is None:
            return self(image)
        how = self._prepared.get(path.resolve())
        if how is None:
            raise DatasetError(
                f"{path}: not listed in the export's {EXPORT_FILE}, so how it was prepared "
                "is unknown"
            )
        applied = preprocess_record(self.ops)
        if how.preprocess is None and how.sha256 != self._recipe_sha:
            raise DatasetError(
                f"{path}: prepared at the station by {how.label}, whose preprocessing "
                f"the export does not record: train with -r <that recipe file>, or export "
                "again with --recipe <that recipe file>"
            )
        if how.preprocess is not None and how.preprocess != applied:
            raise DatasetError(
                f"{path}: prepared at the station by {how.label} with "
                f"{describe_record(how.preprocess)}, but {self.where} applies "
                f"{describe_record(applied)}: train it through that recipe"
            )
        return self._crop(image)


def _recorded_recipe(record: ExportRecord, root: Path) -> RecipeRecord:
    """The one recipe whose preparation an export records, standing in for `-r`."""
    used = {i.recipe_sha256 for i in record.images}
    known = [r for r in record.recipes if r.sha256 in used and r.known]
    where = root / EXPORT_FILE
    if not known:
        names = ", ".join(r.label for r in record.recipes) or "none"
        raise DatasetError(
            f"{where}: records no recipe's preprocessing and ROIs for its images (judged by "
            f"{names}; exported without --recipe): pass -r <recipe file>, or export again "
            "with --recipe"
        )
    kinds = {(str(r.preprocess), str(r.roi_list())) for r in known}
    if len(kinds) > 1:
        names = ", ".join(r.label for r in known)
        raise DatasetError(
            f"{where}: images come from recipes that prepare them differently ({names}): "
            "choose one with -r <recipe file>"
        )
    return known[0]


def read_images(
    dataset: Dataset, reader: RoiReader, progress: Progress | None = None
) -> Iterator[tuple[LabelledImage, ImageU8]]:
    """Decode and crop each image; failures go to `dataset.skipped` with the reason.

    When none of the images can be read, that is an error naming them and why."""
    total = len(dataset.items)
    read = 0
    for i, item in enumerate(dataset.items):
        try:
            image = reader.read(item.path)
        except CellInspectError as err:
            dataset.skipped.append((item.path, str(err)))
        else:
            read += 1
            yield item, image
        if progress is not None:
            progress(i + 1, total)
    if total and not read:
        reasons = "; ".join(f"{path}: {why}" for path, why in dataset.skipped[-3:])
        raise DatasetError(
            f"{dataset.root}: none of its {total} image(s) could be read ({reasons}"
            f"{'; ...' if total > 3 else ''})"
        )


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
