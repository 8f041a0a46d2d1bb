"""Export of reviewed results as a labelled, de-duplicated dataset for retraining."""

from cellinspect.export.dataset import (
    MANIFEST_COLUMNS,
    ExportError,
    ExportReport,
    LabelSource,
    ManifestFormat,
    export_dataset,
    read_manifest,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "ExportError",
    "ExportReport",
    "LabelSource",
    "ManifestFormat",
    "export_dataset",
    "read_manifest",
]
