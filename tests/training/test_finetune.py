"""Fine-tuning with real torch on a few rendered parts: trains, exports, matches torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.datagen.flange import generate_dataset
from cellinspect.inference.manifest import load_manifest, sha256_file
from cellinspect.training.dataset import RoiReader, load_dataset
from cellinspect.training.split import make_split
from tests.conftest import ROOT

BACKBONE = ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx"


@pytest.mark.torch
@pytest.mark.slow
def test_finetune_two_epochs_exports_checked_model(tmp_path: Path) -> None:
    finetune = pytest.importorskip("cellinspect.training.finetune")
    generate_dataset(
        tmp_path / "d",
        count=30,
        seed=2,
        defect_rate=0.5,
        layout="class_folders",
        classes=("scratch",),
        image_format="bmp",
    )
    ds = load_dataset(tmp_path / "d")
    split = make_split(ds, seed=0)
    params = finetune.FinetuneParams(epochs=2, batch_size=8)
    rep = finetune.finetune_classifier(
        split.subset(ds, "train"),
        split.subset(ds, "val"),
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
