"""Body of `cellinspect export`, so the CLI stays a thin typer wrapper."""

from __future__ import annotations

from pathlib import Path

from cellinspect.export.dataset import ExportReport, ManifestFormat, export_dataset
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store


def run_export(
    settings: StationSettings,
    out_dir: Path,
    include_unreviewed_above: float | None = None,
    overwrite: bool = False,
    manifest_format: ManifestFormat = ManifestFormat.CSV,
) -> ExportReport:
    """Open the station's store, export, close; raises ExportError / StoreError / ConfigError."""
    store = open_store(settings)
    try:
        return export_dataset(
            store,
            out_dir,
            include_unreviewed_above,
            overwrite=overwrite,
            manifest_format=manifest_format,
            good_label=settings.good_label,
        )
    finally:
        store.close()


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
    return "\n".join(lines)
