"""`export.json`: how each exported image was made, so training can cut it as the station did.

The station keeps each part's frame *after* the recipe's `preprocess` ops (undistorted,
rescaled) and *before* the ROI crop. Such an image cannot go through the recipe again (it
would be undistorted twice), and trained on as it is, the model records no preprocessing and
the recipe refuses it. So the export records, per image, the recipe that prepared it (name and
sha256 of the recipe file, as in the result) and, per recipe, its `preprocess` ops and ROIs
when the exporter was given that recipe file. `training/dataset.py` reads it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cellinspect.config import PreprocessOp, Recipe, Roi
from cellinspect.errors import ConfigError
from cellinspect.inference.preprocess_contract import preprocess_record

EXPORT_FILE = "export.json"

_OPS: TypeAdapter[list[PreprocessOp]] = TypeAdapter(list[PreprocessOp])


class ExportRecordError(ConfigError):
    """An export.json that cannot be read or does not describe its images."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipeRecord(_Strict):
    """A recipe that judged exported parts; `preprocess`/`rois` None when not given at export."""

    name: str
    sha256: str
    preprocess: list[dict[str, Any]] | None = None
    rois: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, recipe: Recipe, sha256: str) -> RecipeRecord:
        return cls(
            name=recipe.name,
            sha256=sha256,
            preprocess=preprocess_record(recipe.preprocess),
            rois=[roi.model_dump(mode="json") for roi in recipe.rois],
        )

    @property
    def known(self) -> bool:
        return self.preprocess is not None and self.rois is not None

    def ops(self) -> list[PreprocessOp]:
        """The recorded ops as recipe ops (what a model fitted on these images records)."""
        return _OPS.validate_python(self.preprocess or [])

    def roi_list(self) -> list[Roi]:
        return [Roi.model_validate(r) for r in self.rois or []]

    @property
    def label(self) -> str:
        return f"recipe '{self.name}' (sha256 {self.sha256[:12]})"


class ImageRecord(_Strict):
    """One exported image: where it is, what it is, and who said so."""

    file: str  # relative to the export folder
    label: str
    label_source: str
    reviewer: str
    result_id: str
    verdict: str
    model_defect_class: str | None = None
    # Set when the result was a fail-safe one: its image may be the frame as it came, if the
    # preprocessing was what failed.
    error: str | None = None
    recipe_sha256: str
    image_sha256: str
    captured_wall: str
    model_version: str


class ExportRecord(_Strict):
    format: Literal["cellinspect-export/1"] = "cellinspect-export/1"
    # The images are frames after the recipe's preprocess ops, before the ROI crop.
    stage: Literal["preprocessed"] = "preprocessed"
    good_label: str = "good"
    recipes: list[RecipeRecord] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list)

    def recipe(self, sha256: str) -> RecipeRecord | None:
        return next((r for r in self.recipes if r.sha256 == sha256), None)

    def unrecorded(self) -> list[RecipeRecord]:
        """Recipes of exported images whose preprocessing and ROIs are not recorded."""
        used = {i.recipe_sha256 for i in self.images}
        return [r for r in self.recipes if r.sha256 in used and not r.known]


def recipe_records(
    images: Sequence[tuple[str, str]], known: Sequence[tuple[Recipe, str]]
) -> list[RecipeRecord]:
    """One record per (name, sha256) the images came from; full where the recipe is known."""
    by_sha = {sha: recipe for recipe, sha in known}
    records: dict[str, RecipeRecord] = {}
    for name, sha in images:
        if sha in records:
            continue
        recipe = by_sha.get(sha)
        records[sha] = (
            RecipeRecord.of(recipe, sha) if recipe else RecipeRecord(name=name, sha256=sha)
        )
    return list(records.values())


def write_export_record(folder: Path, record: ExportRecord) -> Path:
    path = folder / EXPORT_FILE
    path.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def find_export(source: Path) -> tuple[ExportRecord, Path] | None:
    """The export record for a dataset path: the export folder, a class folder inside it, or
    its manifest file; None when `source` is not (inside) an export."""
    start = source if source.is_dir() else source.parent
    for folder in (start, start.parent):
        if (folder / EXPORT_FILE).is_file():
            return read_export_record(folder / EXPORT_FILE), folder
    return None


def read_export_record(path: Path) -> ExportRecord:
    """Parse export.json; errors name the file and the field."""
    try:
        return ExportRecord.model_validate_json(path.read_bytes())
    except OSError as err:
        raise ExportRecordError(f"{path}: cannot read: {err}") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ExportRecordError(
            f"{path}: {where}: {first['msg']} ({err.error_count()} problem(s))"
        ) from err
