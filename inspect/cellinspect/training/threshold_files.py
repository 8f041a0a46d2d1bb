"""Put calibrated thresholds where the station reads them: the manifest or a recipe.

The manifest is rewritten with `write_manifest` (the .onnx is untouched, so its sha256 stays
valid) and the calibration recorded in provenance. A recipe is not edited in place: PyYAML
would drop its comments, so a copy with `decision.thresholds.<model>` set is written beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cellinspect.config import ClassThreshold, load_recipe
from cellinspect.entities import Task
from cellinspect.errors import ConfigError
from cellinspect.inference.manifest import Manifest, Thresholds, load_manifest, write_manifest
from cellinspect.training.thresholds import ThresholdChoice


def manifest_thresholds(manifest: Manifest, choice: ThresholdChoice) -> Thresholds:
    if manifest.task is Task.CLASSIFICATION:
        cls = ClassThreshold(review_at=choice.review_at, fail_at=choice.fail_at)
        return Thresholds(default_class=cls)  # per-class entries would override: dropped
    return Thresholds(review_at=choice.review_at, fail_at=choice.fail_at)


def write_to_manifest(model_path: Path, choice: ThresholdChoice, data: dict[str, Any]) -> Path:
    """Replace the manifest's thresholds; provenance.thresholds records how they were set."""
    manifest = load_manifest(model_path)
    provenance = dict(manifest.provenance)
    provenance["thresholds"] = {**choice.to_dict(), "data": data}
    updated = manifest.model_copy(
        update={"thresholds": manifest_thresholds(manifest, choice), "provenance": provenance}
    )
    return write_manifest(updated, model_path)


def _recipe_model_name(recipe_path: Path, model_path: Path, manifest: Manifest) -> str:
    recipe = load_recipe(recipe_path)
    target = model_path.resolve()
    for model in recipe.models:
        if model.path.resolve() == target:
            return model.name
    names = [m.name for m in recipe.models]
    if manifest.name in names:
        return manifest.name
    raise ConfigError(
        f"{recipe_path}: no model with path {model_path} or name '{manifest.name}' "
        f"(models: {names})"
    )


def write_to_recipe(
    recipe_path: Path, model_path: Path, choice: ThresholdChoice, out_path: Path | None = None
) -> Path:
    """Write a copy of the recipe with decision.thresholds.<model> set; returns its path."""
    manifest = load_manifest(model_path)
    name = _recipe_model_name(recipe_path, model_path, manifest)
    data = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{recipe_path}: not a recipe mapping")
    decision = data.setdefault("decision", {}) or {}
    data["decision"] = decision
    table = decision.setdefault("thresholds", {}) or {}
    decision["thresholds"] = table
    if manifest.task is Task.CLASSIFICATION:
        pair = {"review_at": choice.review_at, "fail_at": choice.fail_at}
        defects = [lbl for lbl in manifest.labels if lbl not in manifest.good_labels]
        table[name] = {"classes": {lbl: dict(pair) for lbl in defects}}
    else:
        table[name] = {"review_at": choice.review_at, "fail_at": choice.fail_at}
    out = out_path or recipe_path.with_name(f"{recipe_path.stem}-calibrated{recipe_path.suffix}")
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    load_recipe(out)  # refuse to leave a recipe the station cannot load
    return out
