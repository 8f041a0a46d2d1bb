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


@pytest.mark.torch
def test_weight_average_ramps_its_decay_and_copies_counters() -> None:
    """After the first copy each step moves the average by 1 - min(decay, (1+n)/(10+n))."""
    finetune = pytest.importorskip("cellinspect.training.finetune")
    import torch

    from cellinspect.training.convert_backbone import build_backbone

    assert finetune.weight_average(torch.nn.Linear(2, 2), None) is None
    model = finetune.Classifier(build_backbone(64), 2, 0.0)
    start = model.head.weight.detach().clone()
    average = finetune.weight_average(model, 0.2)
    want = start.clone()
    for step in range(1, 5):
        with torch.no_grad():
            model.head.weight.add_(1.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.num_batches_tracked is not None
                module.num_batches_tracked.add_(1)
        n = step - 1  # updates folded in before this one
        decay = min(0.2, (1 + n) / (finetune.EMA_WARMUP_STEPS + n))
        want = start + step if n == 0 else decay * want + (1 - decay) * (start + step)
        average.update_parameters(model)
        got = average.module.head.weight
        assert torch.allclose(got, want, atol=1e-5), step
    counters = [
        int(m.num_batches_tracked or 0)
        for m in average.module.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert counters and set(counters) == {4}
    assert not torch.allclose(average.module.head.weight, model.head.weight)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ema_decay": 0.0}, "ema_decay must lie strictly between 0 and 1"),
        ({"ema_decay": 1.0}, "ema_decay must lie strictly between 0 and 1"),
        ({"ema_decay": 1.5}, "ema_decay must lie strictly between 0 and 1"),
        ({"pooling": "max"}, "pooling must be one of"),
    ],
)
def test_bad_parameters_are_refused_before_reading(
    tmp_path: Path, bad: dict[str, object], message: str
) -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    from cellinspect.errors import ModelError

    empty = Dataset(tmp_path, [LabelledImage(tmp_path / "missing.png", "good")])
    with pytest.raises(ModelError, match=message):
        finetune.finetune_classifier(
            empty,
            empty,
            RoiReader(None),
            BACKBONE,
            tmp_path / "m",
            "m",
            "1",
            finetune.FinetuneParams(**bad),
        )


@pytest.mark.torch
@pytest.mark.slow
def test_weight_average_is_what_is_validated_and_exported(tmp_path: Path) -> None:
    """The exported graph's validation loss is the average's, not the last step's."""
    finetune = pytest.importorskip("cellinspect.training.finetune")
    import numpy as np

    from cellinspect.training.convert_backbone import cpu_session
    from cellinspect.training.dataset import read_images

    train, val = _flange_split(tmp_path / "d", count=24, seed=5)
    params = finetune.FinetuneParams(
        epochs=1, batch_size=4, image_size=64, ema_decay=0.9, balance_classes=False
    )
    rep = finetune.finetune_classifier(
        train, val, RoiReader(None), BACKBONE, tmp_path / "m", "m", "1", params
    )
    manifest = load_manifest(rep.model_path)
    assert "weights averaged (EMA 0.9)" in manifest.provenance["method"]
    row = rep.history[0]
    assert abs(row["val_loss"] - row["val_loss_last_step"]) > 1e-3
    pairs = list(read_images(val, RoiReader(None)))
    spec = finetune.square_input(load_manifest(BACKBONE).input, 64)
    batch = finetune.as_tensor([img for _, img in pairs], spec).contiguous().numpy()
    probs = cpu_session(rep.model_path).run(None, {spec.name: batch})[0]
    truth = [rep.labels.index(item.label) for item, _ in pairs]
    exported_loss = float(np.mean(-np.log(probs[np.arange(len(truth)), truth])))
    assert exported_loss == pytest.approx(row["val_loss"], abs=1e-4)


@pytest.mark.torch
def test_generalised_mean_spans_mean_to_max_and_learns_its_exponent() -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    import torch

    torch.manual_seed(0)
    fmap = torch.rand(2, 5, 7, 7) * 0.5 + 0.1
    fmap[0, 0, 3, 3] = 2.0  # one bright position: a thin defect on a quiet cell
    pool = finetune.GeneralisedMeanPool(p=1.0)
    assert torch.allclose(pool(fmap), fmap.mean(dim=(2, 3)), atol=1e-5)
    pool = finetune.GeneralisedMeanPool(p=100.0)
    assert torch.allclose(pool(fmap), fmap.amax(dim=(2, 3)), rtol=0.05)
    gem3 = finetune.GeneralisedMeanPool()
    spike = float(gem3(fmap)[0, 0])
    assert float(fmap[0, 0].mean()) * 1.4 < spike < 2.0  # the spike outweighs the mean
    negative = torch.full((1, 1, 7, 7), -0.2)  # swish dips below zero: clamped, not NaN
    assert torch.isfinite(gem3(negative)).all()
    gem3(fmap).sum().backward()
    assert gem3.p.grad is not None and float(gem3.p.grad) != 0.0


@pytest.mark.torch
def test_gem_classifier_pools_the_head_map_and_its_exponent_escapes_weight_decay() -> None:
    """With p = 1 the GeM classifier equals the mean-pooled one on non-negative maps."""
    finetune = pytest.importorskip("cellinspect.training.finetune")
    import torch

    from cellinspect.training.convert_backbone import build_backbone

    torch.manual_seed(0)
    mean_model = finetune.Classifier(build_backbone(64), 2, 0.0).eval()
    gem_model = finetune.Classifier(build_backbone(64), 2, 0.0, "gem").eval()
    gem_model.head.load_state_dict(mean_model.head.state_dict())
    image = torch.rand(2, 3, 64, 64)
    fmap = mean_model.backbone.feature_maps(image)[2]
    assert torch.allclose(mean_model.backbone(image)[2], fmap.mean(dim=(2, 3)))
    with torch.no_grad():
        gem_model.pool.p.fill_(1.0)
        want = mean_model.head(fmap.clamp(min=1e-6).mean(dim=(2, 3)))
        assert torch.allclose(gem_model(image), want, atol=1e-5)
        gem_model.pool.p.fill_(3.0)
        assert not torch.allclose(gem_model(image), mean_model(image), atol=1e-3)
    assert set(gem_model.state_dict()) - set(mean_model.state_dict()) == {"pool.p"}
    params = finetune.FinetuneParams(weight_decay=0.01, lr_head=0.002)
    groups = finetune.make_optimiser(gem_model, params).param_groups
    (pool_group,) = [g for g in groups if any(t is gem_model.pool.p for t in g["params"])]
    assert (pool_group["weight_decay"], pool_group["lr"]) == (0.0, 0.002)
    assert len(finetune.make_optimiser(mean_model, params).param_groups) == 2
