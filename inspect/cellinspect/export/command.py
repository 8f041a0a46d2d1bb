"""Body of `cellinspect export`, so the CLI stays a thin typer wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cellinspect.config import Recipe, load_recipe, recipe_sha256
from cellinspect.export.dataset import ExportReport, ManifestFormat, export_dataset
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store


def run_export(
    settings: StationSettings,
    out_dir: Path,
    include_unreviewed_above: float | None = None,
    overwrite: bool = False,
    manifest_format: ManifestFormat = ManifestFormat.CSV,
    recipes: Sequence[Path] = (),
) -> ExportReport:
    """Open the station's store, export, close; raises ExportError / StoreError / ConfigError.

    `recipes`: the recipe files that judged the results, so their preprocessing and ROIs are
    recorded in export.json (results match them by the recipe file's sha256)."""
    known = known_recipes(recipes)
    store = open_store(settings)
    try:
        return export_dataset(
            store,
            out_dir,
            include_unreviewed_above,
            overwrite=overwrite,
            manifest_format=manifest_format,
            good_label=settings.good_label,
            recipes=known,
        )
    finally:
        store.close()


def known_recipes(paths: Sequence[Path]) -> list[tuple[Recipe, str]]:
    """(recipe, sha256 of its file) for each path; a bad file is a ConfigError naming it."""
    return [(load_recipe(path), recipe_sha256(path)) for path in paths]


def format_report(report: ExportReport) -> str:
    """A few lines for the terminal: what was written where, and what was left out why."""
    labels = ", ".join(f"{k}: {v}" for k, v in report.by_label.items())
    lines = [
        f"exported {report.written} images to {report.out_dir} ({labels})",
        f"manifest: {report.manifest}",
    ]
    left_out = {k: v for k, v in report.skipped.items() if v}
    if left_out:
        lines.append("left out: " + ", ".join(f"{k} {v}" for k, v in sorted(left_out.items())))
    lines.append(f"how the images were prepared: {report.record}")
    for recipe in report.unrecorded:
        lines.append(
            f"warning: images judged by {recipe.label}: its preprocessing and ROIs are not "
            "recorded (that recipe file was not given with --recipe); train on them with "
            "-r <that recipe file>, or export again with --recipe"
        )
    return "\n".join(lines)
