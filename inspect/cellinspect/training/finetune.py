"""Fine-tune EfficientNet-Lite0 with a new classification head (needs the `train` extra: torch).

The backbone's batch-norm statistics stay frozen by default (small inspection sets would wreck
them; `train_batchnorm` lets them adapt to images far from ImageNet's); all weights train, the
head faster than the trunk. Augmentation matches what varies on a line: flips, small
rotations, brightness and contrast. Classes are balanced by loss weights, training
stops early on the validation loss, seeds fix every random draw (num_workers=0, no threads of
our own), and tensors are channels_last (about 1.7x faster on CPU). The export is checked
against torch and saved as one ONNX graph (softmax probabilities) with its manifest.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as tf
from torch.optim.swa_utils import AveragedModel

from cellinspect.config import ClassThreshold
from cellinspect.entities import ImageU8
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    InputSpec,
    Layout,
    ResizeMode,
    load_manifest,
    write_manifest,
)
from cellinspect.inference.preprocess_contract import preprocess_record
from cellinspect.inference.tiling import fitted_input
from cellinspect.preprocess.model_input import prepare_batch
from cellinspect.training.convert_backbone import FeatureBackbone, build_backbone, cpu_session
from cellinspect.training.dataset import (
    Dataset,
    LabelledImage,
    RoiReader,
    Stage,
    no_stage,
    read_images,
)
from cellinspect.training.fit_anomaly import backbone_provenance
from cellinspect.training.fit_classifier import PROBS_OUTPUT, classifier_manifest

EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True, slots=True)
class FinetuneParams:
    epochs: int = 15
    batch_size: int = 16
    lr_head: float = 1e-3
    lr_backbone: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 4
    max_rotation_deg: float = 10.0
    brightness: float = 0.15
    contrast: float = 0.15
    vertical_flip: bool = True
    dropout: float = 0.2
    review_at: float = 0.5
    fail_at: float = 0.8
    seed: int = 0
    schedule: str = "constant"  # or "cosine": linear warm-up, then cosine decay to zero
    warmup_epochs: float = 1.0
    image_size: int | None = None  # None: the backbone's own input size
    balance_classes: bool = True  # False: the loss keeps the data's class prior (calibrated p)
    train_batchnorm: bool = False  # True: batch-norm statistics adapt to the new image domain
    # Per-step decay of an exponential moving average of the weights (None: off). When set,
    # the average, not the last step's weights, is validated, early-stopped and exported.
    ema_decay: float | None = None
    # How the head map becomes one vector: "mean" (the backbone's own) or "gem", a
    # generalised mean with a learned exponent that lets small defects outweigh the cell.
    pooling: str = "mean"
    # How images meet the input (manifest input.resize); tiles are refused (tile labels unknown)
    resize: ResizeMode = ResizeMode.LETTERBOX


POOLINGS = ("mean", "gem")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ModelError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


@dataclass
class FinetuneReport:
    model_path: Path
    labels: tuple[str, ...]
    counts: dict[str, int]
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    export_max_abs_diff: float = 0.0
    skipped: tuple[tuple[str, str], ...] = ()


class GeneralisedMeanPool(torch.nn.Module):
    """(mean of x^p over positions)^(1/p) with p learned: p = 1 is the mean, large p the max.

    A thin crack lights one or two of the 49 positions of a 224 px cell's head map; the mean
    dilutes it about 25-fold, the max would learn from one position only. Activations are
    clamped to a small positive floor first, as GeM needs (swish dips below zero).
    """

    def __init__(self, p: float = 3.0, floor: float = 1e-6) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(p))
        self.floor = floor

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        powered = fmap.clamp(min=self.floor).pow(self.p)
        return powered.mean(dim=(2, 3)).pow(1.0 / self.p)


class Classifier(torch.nn.Module):
    """Backbone pooled features -> dropout -> linear; `probabilities` for export."""

    def __init__(
        self, backbone: FeatureBackbone, classes: int, dropout: float, pooling: str = "mean"
    ) -> None:
        super().__init__()
        check_pooling(pooling)
        self.backbone = backbone
        self.pool = GeneralisedMeanPool() if pooling == "gem" else None
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(1280, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.pool is None:
            pooled: torch.Tensor = self.backbone(image)[2]
        else:
            pooled = self.pool(self.backbone.feature_maps(image)[2])
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


class Probabilities(torch.nn.Module):
    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(image), dim=1)


def freeze_batchnorm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


Augment = Callable[[torch.Tensor, InputSpec, "FinetuneParams", torch.Generator], torch.Tensor]


def augment(
    batch: torch.Tensor, spec: InputSpec, params: FinetuneParams, gen: torch.Generator
) -> torch.Tensor:
    """Flips, small rotations, brightness/contrast (in pixel space), on a normalised batch."""
    n = batch.shape[0]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    pixels = batch * std + mean
    flip_h = torch.rand(n, generator=gen) < 0.5
    pixels = torch.where(flip_h.view(-1, 1, 1, 1), pixels.flip(3), pixels)
    if params.vertical_flip:
        flip_v = torch.rand(n, generator=gen) < 0.5
        pixels = torch.where(flip_v.view(-1, 1, 1, 1), pixels.flip(2), pixels)
    if params.max_rotation_deg > 0:
        angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(params.max_rotation_deg)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros(n)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = tf.affine_grid(theta, list(pixels.shape), align_corners=False)
        pixels = tf.grid_sample(pixels, grid, padding_mode="reflection", align_corners=False)
    level = 255.0 * spec.scale
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * params.contrast
    shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * params.brightness * level
    centre = pixels.mean(dim=(1, 2, 3), keepdim=True)
    pixels = ((pixels - centre) * gain + centre + shift).clamp(0, level)
    return (pixels - mean) / std


EMA_WARMUP_STEPS = 10


def weight_average(model: Classifier, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers, or None when off.

    Small inspection sets make single optimiser steps jumpy (elpv's validation accuracy swung
    by up to 10 points between epochs); the average follows the trajectory, not its last
    step. Its decay ramps up as (1 + n) / (EMA_WARMUP_STEPS + n) so the random new head's
    first weights do not linger in it.
    """
    if decay is None:
        return None

    def ema(averaged: Any, current: Any, n_averaged: torch.Tensor | int) -> None:
        if not averaged[0].is_floating_point():  # batch-norm's step counters: copied
            for kept, now in zip(averaged, current, strict=True):
                kept.copy_(now)
            return
        n = int(n_averaged)
        weight_of_current = 1.0 - min(decay, (1 + n) / (EMA_WARMUP_STEPS + n))
        torch._foreach_lerp_(averaged, current, weight_of_current)

    return AveragedModel(model, multi_avg_fn=ema, use_buffers=True)


def square_input(spec: InputSpec, size: int | None) -> InputSpec:
    """`spec` fed at size x size instead (the network is fully convolutional); None: as is.

    Thin defects such as cell cracks survive better at the images' native resolution than
    after shrinking them to the 224 px the backbone was converted at.
    """
    if size is None:
        return spec
    if size < 32:
        raise ModelError(f"image_size must be >= 32 (the network downsamples by 32), got {size}")
    shape = list(spec.shape)
    rows, cols = (2, 3) if spec.layout is Layout.NCHW else (1, 2)
    shape[rows], shape[cols] = size, size
    return spec.model_copy(update={"shape": shape})


def lr_factor(
    params: FinetuneParams, total_steps: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """Learning-rate multiplier per optimiser step for `params.schedule`.

    A cosine decay lets the last epochs settle instead of bouncing at a constant rate; the
    warm-up keeps the first steps of a fresh head from wrecking the pretrained trunk.
    """
    if params.schedule == "constant":
        return lambda step: 1.0
    if params.schedule != "cosine":
        raise ModelError(f"schedule must be 'constant' or 'cosine', got {params.schedule!r}")
    warmup = max(1, round(params.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_optimiser(model: Classifier, params: FinetuneParams) -> torch.optim.AdamW:
    """AdamW with the trunk slower than the new head.

    A GeM exponent learns at the head's pace but free of weight decay, which would pull it
    towards 0: a different pooling altogether.
    """
    groups: list[dict[str, Any]] = [
        {"params": model.backbone.parameters(), "lr": params.lr_backbone},
        {"params": model.head.parameters(), "lr": params.lr_head},
    ]
    if model.pool is not None:
        groups.append(
            {"params": model.pool.parameters(), "lr": params.lr_head, "weight_decay": 0.0}
        )
    return torch.optim.AdamW(groups, weight_decay=params.weight_decay)


SoftTarget = Callable[[LabelledImage], Sequence[float]]
# Changes one image before it is batched, knowing its item (label): for example drawing a
# synthetic defect onto a good image listed under a defect label. Fresh draws every epoch.
ItemTransform = Callable[[LabelledImage, ImageU8, np.random.Generator], ImageU8]


def _targets(
    pairs: Sequence[tuple[LabelledImage, ImageU8]],
    labels: list[str],
    soft_target: SoftTarget | None,
) -> torch.Tensor:
    """Class indices, or (N, classes) probabilities when `soft_target` is given."""
    if soft_target is None:
        return torch.tensor([labels.index(i.label) for i, _ in pairs])
    rows = []
    for item, _ in pairs:
        row = [float(v) for v in soft_target(item)]
        if len(row) != len(labels) or min(row) < 0 or abs(sum(row) - 1.0) > 1e-6:
            raise ModelError(
                f"{item.path}: soft target {row} is not a probability per class of {labels}"
            )
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def _labels_of(pairs: Sequence[tuple[Any, ImageU8]]) -> list[str]:
    seen = sorted({item.label for item, _ in pairs})
    return (["good"] if "good" in seen else []) + [s for s in seen if s != "good"]


def as_tensor(images: Sequence[ImageU8], spec: InputSpec) -> torch.Tensor:
    return torch.from_numpy(prepare_batch(list(images), spec)).contiguous(
        memory_format=torch.channels_last
    )


def evaluate(
    model: Classifier,
    images: list[ImageU8],
    y: torch.Tensor,
    spec: InputSpec,
    loss_fn: torch.nn.Module,
    bs: int,
) -> tuple[float, float]:
    model.eval()
    total, correct = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(images), bs):
            logits = model(as_tensor(images[s : s + bs], spec))
            total += float(loss_fn(logits, y[s : s + bs])) * logits.shape[0]
            truth = y[s : s + bs]
            truth = truth.argmax(1) if truth.dim() == 2 else truth
            correct += int((logits.argmax(1) == truth).sum())
    return total / len(images), correct / len(images)


def export_classifier(
    model: Classifier, spec: InputSpec, out_path: Path, check: torch.Tensor, opset: int = 17
) -> float:
    """Export softmax probabilities, constant-fold with onnxruntime, check vs torch."""
    wrapper = Probabilities(model).eval()
    wrapper = wrapper.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    check = check.contiguous()
    with torch.inference_mode():
        want = wrapper(check).numpy()
    with tempfile.TemporaryDirectory(prefix="finetune-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        dummy = torch.zeros(1, 3, spec.height, spec.width)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(raw),
                input_names=[spec.name],
                output_names=[PROBS_OUTPUT],
                dynamic_axes={spec.name: {0: "batch"}, PROBS_OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        cpu_session(raw, optimised_path=out_path)
    got = cpu_session(out_path).run([PROBS_OUTPUT], {spec.name: check.numpy()})[0]
    diff = float(np.max(np.abs(np.asarray(got) - want)))
    if diff > EXPORT_TOLERANCE:
        raise ModelError(
            f"{out_path}: ONNX differs from torch by {diff:.3g} (> {EXPORT_TOLERANCE})"
        )
    return diff


def finetune_classifier(
    train: Dataset,
    val: Dataset,
    reader: RoiReader,
    backbone_path: Path,
    out_dir: Path,
    name: str,
    version: str,
    params: FinetuneParams = FinetuneParams(),
    stage: Stage = no_stage,
    extra_provenance: dict[str, object] | None = None,
    augment_fn: Augment | None = None,
    soft_target: SoftTarget | None = None,
    item_transform: ItemTransform | None = None,
) -> FinetuneReport:
    """Fine-tune on `train`, stop early on `val`, write model.onnx + manifest.json.

    `augment_fn` replaces the default augmentation (for data with other symmetries).
    `soft_target` gives each image a probability per class (in label order) instead of its
    one hard label: for data whose labels are graded, such as several experts' votes.
    `item_transform` changes each training image anew every epoch and each validation image
    once (seeded), before augmentation.
    """
    augment_fn = augment_fn or augment
    lr_factor(params, 1, 1)  # an unknown schedule fails before any image is read
    if params.ema_decay is not None and not 0.0 < params.ema_decay < 1.0:
        raise ModelError(f"ema_decay must lie strictly between 0 and 1, got {params.ema_decay}")
    check_pooling(params.pooling)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    backbone_manifest = load_manifest(backbone_path)
    if params.resize is ResizeMode.TILE:
        raise ModelError(
            "a classifier cannot be fine-tuned on tiles: which tile shows the defect is not "
            "labelled; fine-tune with --resize letterbox"
        )
    spec = fitted_input(square_input(backbone_manifest.input, params.image_size), params.resize)
    train_pairs = list(read_images(train, reader, lambda d, t: stage("read train", d, t)))
    val_pairs = list(read_images(val, reader, lambda d, t: stage("read val", d, t)))
    labels = _labels_of(train_pairs)
    if len(labels) < 2:
        raise ModelError(
            f"{train.root}: fine-tuning needs at least two classes with readable images, "
            f"found {labels}"
        )
    unknown = sorted({i.label for i, _ in val_pairs} - set(labels))
    if unknown or not val_pairs:
        raise ModelError(
            f"{val.root}: validation split has no readable images, or classes {unknown} "
            "that training lacks"
        )
    x_train = [img for _, img in train_pairs]
    x_val = [img for _, img in val_pairs]
    draw = np.random.default_rng(params.seed)
    if item_transform is not None:
        fixed = np.random.default_rng([params.seed, 1])
        x_val = [item_transform(item, img, fixed) for item, img in val_pairs]
    hard_train = torch.tensor([labels.index(i.label) for i, _ in train_pairs])
    counts = torch.bincount(hard_train, minlength=len(labels)).float()
    y_train = _targets(train_pairs, labels, soft_target)
    y_val = _targets(val_pairs, labels, soft_target)
    weight = counts.sum() / (len(labels) * counts.clamp(min=1))
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight if params.balance_classes else None)
    model = Classifier(build_backbone(spec.height), len(labels), params.dropout, params.pooling)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    average = weight_average(model, params.ema_decay)
    judged = model if average is None else cast(Classifier, average.module)
    optimiser = make_optimiser(model, params)
    best_loss, best_epoch, best_state, history = math.inf, 0, copy.deepcopy(model.state_dict()), []
    steps = math.ceil(len(x_train) / params.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lr_factor(params, steps * params.epochs, steps)
    )
    for epoch in range(1, params.epochs + 1):
        model.train()
        if not params.train_batchnorm:
            freeze_batchnorm(model)
        order = torch.randperm(len(x_train), generator=gen).tolist()
        running = 0.0
        for step in range(steps):
            idx = order[step * params.batch_size : (step + 1) * params.batch_size]
            images = [x_train[i] for i in idx]
            if item_transform is not None:
                images = [item_transform(train_pairs[i][0], x_train[i], draw) for i in idx]
            batch = augment_fn(as_tensor(images, spec), spec, params, gen)
            batch = batch.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(batch), y_train[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            if average is not None:
                average.update_parameters(model)
            running += loss.item() * len(idx)
            stage(f"epoch {epoch}/{params.epochs}", step + 1, steps)
        val_loss, val_acc = evaluate(judged, x_val, y_val, spec, loss_fn, params.batch_size)
        row = {
            "epoch": epoch,
            "train_loss": running / len(x_train),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
        }
        if average is not None:  # the last step's weights, for comparison with the average
            step_loss, step_acc = evaluate(model, x_val, y_val, spec, loss_fn, params.batch_size)
            row |= {"val_loss_last_step": step_loss, "val_accuracy_last_step": step_acc}
        history.append(row)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(judged.state_dict())
        elif epoch - best_epoch >= params.patience:
            break
    model.load_state_dict(best_state)
    val_loss, val_acc = evaluate(model, x_val, y_val, spec, loss_fn, params.batch_size)
    stage("export", 0, 1)
    model_path = out_dir / "model.onnx"
    diff = export_classifier(model, spec, model_path, as_tensor(x_val[:4], spec))
    stage("export", 1, 1)
    train_counts = {lbl: int(counts[i]) for i, lbl in enumerate(labels)}
    gem_p = None if model.pool is None else float(model.pool.p)
    manifest = classifier_manifest(
        name,
        version,
        spec,
        labels,
        ClassThreshold(review_at=params.review_at, fail_at=params.fail_at),
        preprocess=preprocess_record(reader.ops),
        roi_size=reader.roi_size,
        provenance={
            "method": "fine-tuned EfficientNet-Lite0 + linear head (torch), "
            + ("batch-norm trained" if params.train_batchnorm else "frozen batch-norm")
            + ("" if average is None else f", weights averaged (EMA {params.ema_decay})")
            + ("" if gem_p is None else f", GeM pooling (learned p {gem_p:.3f})"),
            "backbone": backbone_provenance(backbone_manifest),
            "parent_version": f"{backbone_manifest.name}/{backbone_manifest.version}",
            "data": {
                "root": str(train.root),
                "fingerprint": train.fingerprint(),
                "counts": train_counts,
                "val_fingerprint": val.fingerprint(),
                "val_images": len(x_val),
                "skipped": len(train.skipped) + len(val.skipped),
            },
            "parameters": asdict(params),
            "targets": "soft (a probability per class)" if soft_target else "hard labels",
            "metrics": {
                "best_val_loss": best_loss,
                "val_accuracy": val_acc,
                "best_epoch": best_epoch,
                "epochs_run": len(history),
                "export_max_abs_diff": diff,
                **({} if gem_p is None else {"gem_p": gem_p}),
            },
            "history": history,
            "torch": torch.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(extra_provenance or {}),
        },
    )
    write_manifest(manifest, model_path)
    return FinetuneReport(
        model_path=model_path,
        labels=tuple(labels),
        counts=train_counts,
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_val_loss=best_loss,
        val_accuracy=val_acc,
        history=history,
        export_max_abs_diff=diff,
        skipped=tuple((str(p), r) for p, r in [*train.skipped, *val.skipped]),
    )
