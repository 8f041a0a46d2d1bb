"""Which images a model was fitted on, recorded in its manifest, so thresholds are never
calibrated on them.

Scores of images a model fitted (or was scaled on) are lower than those of new parts: a
threshold set on them promises fewer false rejects than the line will see. Images are named
by a prefix of the sha256 of their bytes, so a copy of the same picture in another folder (an
export, a renamed data set) is still recognised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import Manifest
from cellinspect.training.dataset import Dataset, LabelledImage

ID_CHARS = 16  # 64 bits of sha256: collisions are not a concern at data-set sizes
RECORD_KEY = "fitted_images"  # provenance key


def image_id(path: Path) -> str:
    """The id of one image file: a prefix of the sha256 of its bytes."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:ID_CHARS]
    except OSError as err:
        raise ModelError(f"{path}: cannot read to record it: {err}") from err


def image_record(dataset: Dataset) -> dict[str, Any]:
    """count, digest and sorted ids of the images of `dataset` (for the manifest)."""
    ids = sorted({image_id(item.path) for item in dataset.items})
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return {"count": len(ids), "sha256": digest, "ids": ids}


def fitted_ids(manifest: Manifest) -> set[str] | None:
    """The ids the manifest records as fitted; None for manifests that record none."""
    record = manifest.provenance.get(RECORD_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("ids"), list):
        return None
    return {str(i) for i in record["ids"]}


def fitted_overlap(manifest: Manifest, dataset: Dataset) -> list[LabelledImage] | None:
    """The images of `dataset` whose bytes the model was fitted on; None when the manifest
    records no fitted images, so the check cannot be made."""
    fitted = fitted_ids(manifest)
    if fitted is None:
        return None
    return [item for item in dataset.items if image_id(item.path) in fitted]


def refuse_fitted_overlap(manifest: Manifest, dataset: Dataset, where: Path) -> bool:
    """Raise when `dataset` holds images the model was fitted on; False when the manifest
    (`where`) records none, so the check could not be made."""
    overlap = fitted_overlap(manifest, dataset)
    if overlap is None:
        return False
    if overlap:
        raise ModelError(
            f"{len(overlap)} of the {len(dataset.items)} calibration images were fitted on by "
            f"{manifest.name}/{manifest.version} (same bytes; e.g. {overlap[0].path}), as "
            f"{where} records: thresholds set on them would promise fewer false rejects than "
            "the line sees. "
            "Calibrate on images it never saw (`--split split.json --subset val`, or new parts)."
        )
    return True
