"""Labelled samples for retraining: `<out>/<label>/<result_id>.<ext>` plus a manifest.

Labels come from QA reviews (`label_source=review`): a confirmed defect goes to its class
folder, a false reject to the good folder. Optionally, unreviewed results the model was sure
about are added (`label_source=model`): a FAIL with a defect class whose class score is at
least the threshold, or a PASS whose `:<good_label>` score is. REVIEW results are never
labelled by the model (the model asked). Images are de-duplicated by the sha256 of the stored
file: a reviewed label wins over a model label, then the older capture.

Beside the manifest, `export.json` (export/record.py) records the recipe that prepared each
image and, for the recipe files the exporter was given, their preprocessing and ROIs: the
kept images are already preprocessed, so training needs that record to cut them as the station
did and to produce a model the recipe accepts.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cellinspect.config import Recipe
from cellinspect.entities import InspectionResult, Verdict
from cellinspect.errors import CellInspectError
from cellinspect.export.record import (
    EXPORT_FILE,
    ExportRecord,
    ImageRecord,
    RecipeRecord,
    recipe_records,
    write_export_record,
)
from cellinspect.storage.errors import ResultNotFoundError
from cellinspect.storage.images import safe_name
from cellinspect.storage.protocols import ResultStore
from cellinspect.storage.records import ExportCandidate, ImageKind, ReviewLabel

MANIFEST_COLUMNS = (
    "result_id",
    "label",
    "label_source",
    "reviewer",
    "model_version",
    "captured_wall",
    "image_sha256",
    "file",
    "verdict",
    "recipe_name",
    "recipe_sha256",
)


class ExportError(CellInspectError):
    """The export cannot be written (target not empty, nothing to export, ...)."""


class ManifestFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class LabelSource(enum.StrEnum):
    REVIEW = "review"
    MODEL = "model"


@dataclass(frozen=True, slots=True)
class ExportReport:
    out_dir: Path
    manifest: Path
    written: int
    by_label: dict[str, int]
    duplicates: int = 0
    label_conflicts: int = 0
    missing_image: int = 0
    below_confidence: int = 0
    corrupt_image: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # Recipes of exported images whose preprocessing and ROIs are not recorded (not given).
    unrecorded: list[RecipeRecord] = field(default_factory=list)

    @property
    def record(self) -> Path:
        return self.out_dir / EXPORT_FILE


@dataclass(frozen=True, slots=True)
class _Entry:
    result: InspectionResult
    label: str
    source: LabelSource
    reviewer: str
    sha256: str


def model_confidence(result: InspectionResult, label: str) -> float | None:
    """The highest ROI score named `<model>:<label>`, or None when no model gave one."""
    values = [v for r in result.rois for k, v in r.scores.items() if k.endswith(f":{label}")]
    return max(values) if values else None


def _label_of(
    cand: ExportCandidate, include_unreviewed_above: float | None, good_label: str
) -> tuple[str, LabelSource, str] | None:
    review = cand.review
    if review is not None:
        if review.label is ReviewLabel.GOOD:
            return good_label, LabelSource.REVIEW, review.reviewer
        return review.defect_class or "unclassified", LabelSource.REVIEW, review.reviewer
    if include_unreviewed_above is None:
        return None
    result = cand.result
    if result.verdict is Verdict.FAIL and result.defect_class:
        label = result.defect_class
    elif result.verdict is Verdict.PASS:
        label = good_label
    else:
        return None
    confidence = model_confidence(result, label)
    if confidence is None or confidence < include_unreviewed_above:
        return None
    return label, LabelSource.MODEL, ""


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ExportError(f"{out_dir}: folder is not empty; choose another or pass --overwrite")
    if not any((out_dir / f"manifest.{fmt.value}").is_file() for fmt in ManifestFormat):
        raise ExportError(
            f"{out_dir}: not empty and holds no manifest.csv/manifest.jsonl of an earlier "
            "export; refusing to overwrite a folder this tool did not write"
        )


def export_dataset(
    store: ResultStore,
    out_dir: Path,
    include_unreviewed_above: float | None = None,
    *,
    overwrite: bool = False,
    manifest_format: ManifestFormat = ManifestFormat.CSV,
    good_label: str = "good",
    recipes: Sequence[tuple[Recipe, str]] = (),
) -> ExportReport:
    """Write reviewed (and optionally confident unreviewed) results as a class-folder dataset.

    `recipes` are (recipe, sha256 of its file) pairs: the images of results judged by one of
    them get its preprocessing and ROIs recorded in export.json."""
    if include_unreviewed_above is not None and not 0.0 <= include_unreviewed_above <= 1.0:
        raise ExportError(
            f"include_unreviewed_above must be in [0, 1], got {include_unreviewed_above}"
        )
    _check_target(out_dir, overwrite)
    skipped: Counter[str] = Counter()
    chosen: dict[str, _Entry] = {}
    for cand in store.export_candidates(include_unreviewed=include_unreviewed_above is not None):
        labelled = _label_of(cand, include_unreviewed_above, good_label)
        if labelled is None:
            skipped["below_confidence"] += 1
            continue
        if cand.image is None:
            skipped["missing_image"] += 1
            continue
        label, source, reviewer = labelled
        entry = _Entry(cand.result, label, source, reviewer, cand.image.sha256)
        earlier = chosen.get(entry.sha256)
        if earlier is None:
            chosen[entry.sha256] = entry
            continue
        skipped["duplicates"] += 1
        if earlier.label != entry.label:
            skipped["label_conflicts"] += 1
        if earlier.source is LabelSource.MODEL and source is LabelSource.REVIEW:
            chosen[entry.sha256] = entry
    if not chosen:
        what = "reviewed results" if include_unreviewed_above is None else "labelled results"
        raise ExportError(
            f"nothing to export: no {what} with a kept image (skipped: {dict(skipped) or 'none'})"
        )
    record = ExportRecord(good_label=good_label)
    target = _Target(out_dir, manifest_format, record, recipes)
    return _write(store, target, list(chosen.values()), skipped)


@dataclass(frozen=True, slots=True)
class _Target:
    out_dir: Path
    manifest_format: ManifestFormat
    record: ExportRecord
    recipes: Sequence[tuple[Recipe, str]]


def _write(
    store: ResultStore, target: _Target, entries: list[_Entry], skipped: Counter[str]
) -> ExportReport:
    out_dir, manifest_format = target.out_dir, target.manifest_format
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    rows: list[dict[str, str]] = []
    images: list[tuple[dict[str, str], InspectionResult]] = []
    by_label: Counter[str] = Counter()
    try:
        for entry in sorted(entries, key=lambda e: (e.result.captured_wall, e.result.result_id)):
            try:
                src, record = store.image_file(entry.result.result_id, ImageKind.IMAGE)
                data = src.read_bytes()
            except (ResultNotFoundError, OSError):
                skipped["missing_image"] += 1
                continue
            if hashlib.sha256(data).hexdigest() != record.sha256:
                skipped["corrupt_image"] += 1
                continue
            label_dir = safe_name(entry.label)
            rel = f"{label_dir}/{safe_name(entry.result.result_id)}{src.suffix}"
            (staging / label_dir).mkdir(exist_ok=True)
            (staging / rel).write_bytes(data)
            by_label[entry.label] += 1
            rows.append(
                {
                    "result_id": entry.result.result_id,
                    "label": entry.label,
                    "label_source": entry.source.value,
                    "reviewer": entry.reviewer,
                    "model_version": ";".join(f"{m.name}@{m.version}" for m in entry.result.models),
                    "captured_wall": entry.result.captured_wall.isoformat(),
                    "image_sha256": entry.sha256,
                    "file": rel,
                    "verdict": entry.result.verdict.value,
                    "recipe_name": entry.result.recipe_name,
                    "recipe_sha256": entry.result.recipe_sha256,
                }
            )
            images.append((rows[-1], entry.result))
        if not rows:
            raise ExportError(
                f"nothing to export: every image was missing or corrupt ({dict(skipped)})"
            )
        manifest = staging / f"manifest.{manifest_format.value}"
        _write_manifest(manifest, rows, manifest_format)
        written = _record(target, images)
        write_export_record(staging, written)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(
        out_dir=out_dir,
        manifest=out_dir / manifest.name,
        written=len(rows),
        by_label=dict(sorted(by_label.items())),
        duplicates=skipped["duplicates"],
        label_conflicts=skipped["label_conflicts"],
        missing_image=skipped["missing_image"],
        below_confidence=skipped["below_confidence"],
        corrupt_image=skipped["corrupt_image"],
        skipped=dict(skipped),
        unrecorded=written.unrecorded(),
    )


def _record(target: _Target, images: list[tuple[dict[str, str], InspectionResult]]) -> ExportRecord:
    """export.json for the written rows: each image with its recipe, each recipe's ops."""
    pairs = [(row["recipe_name"], row["recipe_sha256"]) for row, _ in images]
    return target.record.model_copy(
        update={
            "recipes": recipe_records(pairs, target.recipes),
            "images": [
                ImageRecord(
                    file=row["file"],
                    label=row["label"],
                    label_source=row["label_source"],
                    reviewer=row["reviewer"],
                    result_id=row["result_id"],
                    verdict=row["verdict"],
                    model_defect_class=result.defect_class,
                    error=result.error,
                    recipe_sha256=row["recipe_sha256"],
                    image_sha256=row["image_sha256"],
                    captured_wall=row["captured_wall"],
                    model_version=row["model_version"],
                )
                for row, result in images
            ],
        }
    )


def _write_manifest(path: Path, rows: list[dict[str, str]], fmt: ManifestFormat) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            if fmt is ManifestFormat.CSV:
                writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            else:
                fh.writelines(json.dumps(r, sort_keys=False) + "\n" for r in rows)
    except OSError as err:
        raise ExportError(f"{path}: cannot write manifest: {err}") from err


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a manifest written by export_dataset (CSV or JSON Lines by extension)."""
    try:
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: cannot read manifest: {err}") from err
