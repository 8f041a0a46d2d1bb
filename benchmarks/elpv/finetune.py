"""The fine-tuned elpv classifier: EfficientNet-Lite0 trained end to end, dihedral views.

Solar cells look the same under every flip and quarter turn, so training draws a random element
of the dihedral group per image (finetune's flips plus a random transpose) with mild
brightness/contrast; early stopping watches a stratified validation part carved from the
TRAINING split only, so the test split is never seen. The exported softmax graph is then
wrapped so that it averages its probabilities over `views` dihedral views in one session.run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.elpv.data import Split, stratified_split
from benchmarks.elpv.views import wrap_classifier_views
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import InputSpec, load_manifest, write_manifest
from cellinspect.training import finetune
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, Stage


@dataclass(frozen=True, slots=True)
class ElpvFinetuneParams:
    epochs: int = 12
    patience: int = 3
    batch_size: int = 32
    brightness: float = 0.1
    contrast: float = 0.1
    val_fraction: float = 0.15
    views: int = 1  # 8 views: 30.5 ms/image FP32, over the 25 ms budget, no gain
    seed: int = 0
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    schedule: str = "constant"
    warmup_epochs: float = 1.0
    image_size: int | None = None
    soft_labels: bool = False  # train on the defect probability, not only on p >= 0.5
    balance_classes: bool = True
    train_batchnorm: bool = False  # on elpv, training them cost 7.6 points (README)
    ema_decay: float | None = None  # validate and export a moving average of the weights
    pooling: str = "mean"  # or "gem": generalised mean with a learned exponent
    # Fine-tunes with seeds seed .. seed + fits - 1 (each carving its own validation part),
    # merged into one graph that averages their probabilities (eval-elpv).
    fits: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dihedral_augment(
    batch: torch.Tensor,
    spec: InputSpec,
    params: finetune.FinetuneParams,
    gen: torch.Generator,
) -> torch.Tensor:
    """finetune's flips and brightness/contrast, then a random transpose: all 8 dihedral views."""
    flipped = finetune.augment(batch, spec, params, gen)
    transpose = torch.rand(flipped.shape[0], generator=gen) < 0.5
    return torch.where(transpose.view(-1, 1, 1, 1), flipped.transpose(2, 3), flipped)


def _dataset(root: Path, split: Split, part: str) -> Dataset:
    items = split.train if part == "train" else split.test
    return Dataset(root, [LabelledImage(root / i.file, i.label) for i in items])


def _soft_targets(root: Path, split: Split) -> finetune.SoftTarget:
    """(good, defective) = (1 - p, p) from the experts' defect probability p of each cell."""
    probability = {root / i.file: i.probability for i in split.train}

    def target(item: LabelledImage) -> tuple[float, float]:
        p = probability[item.path]
        return (1.0 - p, p)

    return target


def finetune_elpv_classifier(
    split: Split,
    root: Path,
    backbone_path: Path,
    out_dir: Path,
    params: ElpvFinetuneParams,
    provenance: dict[str, Any],
    stage: Stage,
) -> tuple[Path, finetune.FinetuneReport]:
    """Fine-tune on split.train (minus a validation part), write the view-averaging model."""
    inner = stratified_split(list(split.train), params.val_fraction, params.seed + 1)
    if not inner.test:
        raise ModelError(f"validation part of {len(split.train)} training images is empty")
    tune = finetune.FinetuneParams(
        epochs=params.epochs,
        batch_size=params.batch_size,
        patience=params.patience,
        max_rotation_deg=0.0,
        brightness=params.brightness,
        contrast=params.contrast,
        vertical_flip=True,
        seed=params.seed,
        lr_backbone=params.lr_backbone,
        lr_head=params.lr_head,
        schedule=params.schedule,
        warmup_epochs=params.warmup_epochs,
        image_size=params.image_size,
        balance_classes=params.balance_classes,
        train_batchnorm=params.train_batchnorm,
        ema_decay=params.ema_decay,
        pooling=params.pooling,
    )
    report = finetune.finetune_classifier(
        _dataset(root, inner, "train"),
        _dataset(root, inner, "test"),
        RoiReader(None),
        backbone_path,
        out_dir,
        "elpv-finetune",
        out_dir.name,
        tune,
        stage,
        provenance,
        augment_fn=dihedral_augment,
        soft_target=_soft_targets(root, split) if params.soft_labels else None,
    )
    if report.skipped:
        raise ModelError(f"{len(report.skipped)} elpv image(s) unreadable: {report.skipped[:3]}")
    single = load_manifest(report.model_path)
    model_path = wrap_classifier_views(report.model_path, params.views, report.model_path)
    manifest = single.model_copy(
        update={
            "provenance": {
                **single.provenance,
                # finetune's own text (batch-norm, weight average, learned GeM exponent)
                # stays; the wrapper only adds what it changed.
                "method": (
                    f"{single.provenance['method']}; dihedral + brightness/contrast "
                    f"augmentation, softmax averaged over {params.views} dihedral views in "
                    "the graph"
                ),
                "elpv_finetune": params.as_dict(),
                "validation": f"{len(inner.test)} images carved from the training split",
            }
        }
    )
    write_manifest(manifest, model_path)
    return model_path, report
