"""An elpv anomaly detector taught on functional cells only, with defects drawn onto them.

PatchCore on frozen ImageNet features cannot tell a crack from the grain of a polycrystalline
cell. Here EfficientNet-Lite0 is fine-tuned to tell each functional training cell from the same
cell with a drawn EL defect (synthetic_defects: cracks, isolated dark areas, dashes, dark
patches), fresh every epoch. No defective or doubtful cell is ever seen, so it is an anomaly
detector in the same sense as PatchCore; its score is the probability of 'defective'.
Needs the `train` extra (torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.elpv.data import ElpvItem, Split
from benchmarks.elpv.finetune import dihedral_augment
from benchmarks.elpv.synthetic_defects import KIND_WEIGHTS, KINDS, draw_defect
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_manifest, write_manifest
from cellinspect.training import finetune
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, Stage

DRAWN_LABEL = "defective"


@dataclass(frozen=True, slots=True)
class SyntheticParams:
    epochs: int = 8
    patience: int = 8
    batch_size: int = 32
    val_fraction: float = 0.15
    image_size: int | None = None  # None: the backbone's 224
    lr_backbone: float = 2e-4
    schedule: str = "cosine"
    train_batchnorm: bool = False
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_on_defective(item: LabelledImage, image: ImageU8, rng: np.random.Generator) -> ImageU8:
    """Items listed under the drawn label get a fresh synthetic defect; good ones stay as read."""
    return draw_defect(image, rng) if item.label == DRAWN_LABEL else image


def _twice(root: Path, items: list[ElpvItem]) -> Dataset:
    """Every functional cell once as itself and once as the canvas of a drawn defect."""
    listed = [LabelledImage(root / i.file, label) for i in items for label in ("good", DRAWN_LABEL)]
    return Dataset(root, listed)


def fit_elpv_synthetic(
    split: Split,
    root: Path,
    backbone_path: Path,
    out_dir: Path,
    params: SyntheticParams,
    provenance: dict[str, Any],
    stage: Stage,
) -> tuple[Path, finetune.FinetuneReport]:
    """Fine-tune on the functional cells of split.train (a seeded part held out for validation)."""
    functional = sorted((i for i in split.train if i.functional), key=lambda i: i.file)
    if len(functional) < 10:
        raise ModelError(f"{len(functional)} functional training cells; at least 10 are needed")
    order = np.random.default_rng(params.seed + 1).permutation(len(functional))
    n_val = max(2, round(len(functional) * params.val_fraction))
    val = [functional[i] for i in sorted(order[:n_val])]
    train = [functional[i] for i in sorted(order[n_val:])]
    tune = finetune.FinetuneParams(
        epochs=params.epochs,
        batch_size=params.batch_size,
        patience=params.patience,
        max_rotation_deg=0.0,
        vertical_flip=True,
        seed=params.seed,
        lr_backbone=params.lr_backbone,
        schedule=params.schedule,
        image_size=params.image_size,
        train_batchnorm=params.train_batchnorm,
        balance_classes=False,  # one drawn copy per good cell: balanced by construction
    )
    report = finetune.finetune_classifier(
        _twice(root, train),
        _twice(root, val),
        RoiReader(None),
        backbone_path,
        out_dir,
        "elpv-synthetic",
        out_dir.name,
        tune,
        stage,
        provenance,
        augment_fn=dihedral_augment,
        item_transform=draw_on_defective,
    )
    if report.skipped:
        raise ModelError(f"{len(report.skipped)} elpv image(s) unreadable: {report.skipped[:3]}")
    manifest = load_manifest(report.model_path)
    manifest = manifest.model_copy(
        update={
            "provenance": {
                **manifest.provenance,
                # finetune's own text (batch-norm, weight average) stays, as for elpv_finetune.
                "method": (
                    f"{manifest.provenance['method']}; taught to tell functional cells from the "
                    "same cells with drawn EL defects; no defective cell seen"
                ),
                "taught_on": (
                    f"{len(train)} functional cells (probability 0) of the training split, "
                    f"{len(val)} more for validation"
                ),
                "drawn_defects": dict(zip(KINDS, KIND_WEIGHTS, strict=True)),
                "elpv_synthetic": params.as_dict(),
            }
        }
    )
    write_manifest(manifest, report.model_path)
    return report.model_path, report
