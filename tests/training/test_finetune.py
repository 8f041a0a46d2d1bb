"""Fine-tuning with real torch on a few rendered parts: trains, exports, matches torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.datagen.flange import generate_dataset
from cellinspect.entities import ImageU8
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader, load_dataset
from cellinspect.training.split import make_split
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


def _flange_split(root: Path, count: int, seed: int) -> tuple[Dataset, Dataset]:
    """Rendered good and scratched flanges, split into train and validation parts."""
    generate_dataset(
        root,
        count=count,
        seed=seed,
        defect_rate=0.5,
        layout="class_folders",
        classes=("scratch",),
        image_format="bmp",
    )
    ds = load_dataset(root)
    split = make_split(ds, seed=0)
    return split.subset(ds, "train"), split.subset(ds, "val")


@pytest.mark.torch
@pytest.mark.slow
def test_finetune_two_epochs_exports_checked_model(tmp_path: Path) -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    train, val = _flange_split(tmp_path / "d", count=30, seed=2)
    params = finetune.FinetuneParams(epochs=2, batch_size=8)
    rep = finetune.finetune_classifier(
        train,
        val,
        RoiReader(None),
        BACKBONE,
        tmp_path / "m" / "1",
        "m",
        "1",
        params,
    )
    assert rep.epochs_run == 2 and 1 <= rep.best_epoch <= 2
    assert rep.export_max_abs_diff <= finetune.EXPORT_TOLERANCE
    manifest = load_manifest(rep.model_path)
    assert manifest.sha256 == sha256_file(rep.model_path)
    assert manifest.labels == ["good", "scratch"]
    assert manifest.provenance["parent_version"] == "efficientnet-lite0/1"
    assert manifest.provenance["metrics"]["epochs_run"] == 2


@pytest.mark.torch
def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    params = finetune.FinetuneParams(epochs=4, schedule="cosine", warmup_epochs=1.0)
    factor = finetune.lr_factor(params, total_steps=40, steps_per_epoch=10)
    warm = [factor(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.1) and warm[-1] == 1.0
    decay = [factor(s) for s in range(10, 40)]
    assert decay == sorted(decay, reverse=True)
    assert factor(10) == 1.0 and factor(39) < 0.01
    constant = finetune.lr_factor(finetune.FinetuneParams(), 40, 10)
    assert {constant(s) for s in range(40)} == {1.0}


@pytest.mark.torch
def test_unknown_schedule_is_a_clear_error() -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    from cellinspect.errors import ModelError

    with pytest.raises(ModelError, match="schedule must be"):
        finetune.lr_factor(finetune.FinetuneParams(schedule="step"), 40, 10)


@pytest.mark.torch
def test_square_input_changes_only_the_image_size() -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    from cellinspect.errors import ModelError

    spec = load_manifest(BACKBONE).input
    assert finetune.square_input(spec, None) is spec
    bigger = finetune.square_input(spec, 300)
    assert (bigger.height, bigger.width) == (300, 300)
    assert bigger.shape[:2] == spec.shape[:2]
    assert (bigger.mean, bigger.std, bigger.scale) == (spec.mean, spec.std, spec.scale)
    with pytest.raises(ModelError, match="image_size must be >= 32"):
        finetune.square_input(spec, 16)


@pytest.mark.torch
def test_soft_targets_that_are_no_probabilities_are_refused(tmp_path: Path) -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    from cellinspect.errors import ModelError

    generate_dataset(
        tmp_path / "d",
        count=6,
        seed=3,
        defect_rate=0.5,
        layout="class_folders",
        classes=("scratch",),
        image_format="bmp",
    )
    ds = load_dataset(tmp_path / "d")
    with pytest.raises(ModelError, match="is not a probability per class"):
        finetune.finetune_classifier(
            ds,
            ds,
            RoiReader(None),
            BACKBONE,
            tmp_path / "m",
            "m",
            "1",
            finetune.FinetuneParams(epochs=1),
            soft_target=lambda item: (0.5, 0.6),
        )
    assert not (tmp_path / "m" / "model.onnx").exists()


@pytest.mark.torch
@pytest.mark.slow
def test_item_transform_sees_every_item_and_batchnorm_adapts_only_when_asked(
    tmp_path: Path,
) -> None:
    """With learning rates of zero only batch-norm statistics can move the exported outputs."""
    finetune = pytest.importorskip("cellinspect.training.finetune")
    import numpy as np
    import onnxruntime as ort

    train, val = _flange_split(tmp_path / "d", count=24, seed=3)
    seen: list[str] = []

    def darken_scratches(item: LabelledImage, image: ImageU8, rng: np.random.Generator) -> ImageU8:
        seen.append(item.label)
        return image // 2 if item.label == "scratch" else image

    outputs = {}
    for trained in (False, True):
        seen.clear()
        params = finetune.FinetuneParams(
            epochs=2,
            batch_size=4,
            lr_head=0.0,
            lr_backbone=0.0,
            image_size=64,
            train_batchnorm=trained,
        )
        rep = finetune.finetune_classifier(
            train,
            val,
            RoiReader(None),
            BACKBONE,
            tmp_path / f"m{trained}",
            "m",
            "1",
            params,
            item_transform=darken_scratches,
        )
        n_train, n_val = len(train.items), len(val.items)
        assert len(seen) == n_val + 2 * n_train  # validation once, training every epoch
        assert seen.count("scratch") > 0 and seen.count("good") > 0
        manifest = load_manifest(rep.model_path)
        assert ("batch-norm trained" in manifest.provenance["method"]) is trained
        session = ort.InferenceSession(str(rep.model_path), providers=["CPUExecutionProvider"])
        probe = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
        outputs[trained] = session.run(None, {session.get_inputs()[0].name: probe})[0]
    assert not np.allclose(outputs[False], outputs[True], atol=1e-4)
