"""train / evaluate / calibrate thresholds end to end on rendered parts, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.datagen.flange import generate_dataset
from cellinspect.inference.manifest import load_manifest, sha256_file
from tests.conftest import ROOT

BACKBONE = str(ROOT / "models" / "efficientnet-lite0" / "1" / "model.onnx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    generate_dataset(
        data,
        count=30,
        seed=4,
        defect_rate=0.5,
        layout="class_folders",
        classes=("scratch",),
        image_format="bmp",
    )
    (data / "labels.csv").unlink()  # read the class folders
    (data / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = root / "models" / "cls" / "2"
    res = CliRunner().invoke(app, ["train", str(data), "--out", str(out), "--backbone", BACKBONE])
    assert res.exit_code == 0, res.output
    return data, out


def test_train_records_split_metrics_and_parent(trained: tuple[Path, Path]) -> None:
    _, out = trained
    manifest = load_manifest(out / "model.onnx")
    prov = manifest.provenance
    assert manifest.sha256 == sha256_file(out / "model.onnx")
    assert prov["parent_version"] == "efficientnet-lite0/1"
    assert prov["split"]["sha256"] == sha256_file(out / "split.json")
    assert "test_accuracy" in prov["metrics"] and prov["data"]["fingerprint"]
    listing = CliRunner().invoke(app, ["models", str(out.parent.parent)])
    assert listing.exit_code == 0 and "cls" in listing.output


def test_evaluate_on_recorded_split_with_plots(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    args = [
        "evaluate",
        str(out / "model.onnx"),
        str(data),
        "--split",
        str(out / "split.json"),
        "--json",
        str(tmp_path / "r.json"),
        "--plots",
        str(tmp_path / "plots"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert rep["counts"] == split["counts"]["test"] and rep["subset"] == "test"
    assert set(rep["per_class"]) == {"good", "scratch"}
    assert all(row["defect"] == (row["label"] == "scratch") for row in rep["per_image"])
    assert rep["false_reject_rate_catch_all"] is not None
    low, high = rep["accuracy_ci95"]  # Wilson interval: wide on a small test split
    assert low <= rep["accuracy"] <= high and high - low > 0.1
    assert "accuracy [95 % interval]" in res.output
    if min(rep["counts"].values()) >= 5:
        assert rep["auroc_ci95"][0] <= rep["auroc"] <= rep["auroc_ci95"][1]
    else:
        assert rep["auroc_ci95"] is None
    for name in ("roc", "scores", "confusion"):
        img = cv2.imread(str(tmp_path / "plots" / f"{name}.png"))
        assert img is not None and img.shape == (480, 640, 3) and img.std() > 10


def test_calibrate_thresholds_writes_manifest(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes((out / "model.onnx").read_bytes())
    (model.parent / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    split = ["--split", str(out / "split.json"), "--subset", "test"]  # never fitted
    base = ["calibrate", "thresholds", str(model), str(data), *split]
    refused = CliRunner().invoke(app, [*base, "--target-escape", "0.01"])
    assert refused.exit_code == 1 and "unreachable with 3 defective" in refused.output
    res = CliRunner().invoke(app, [*base, "--target-escape", "0.25", "--write", "manifest"])
    assert res.exit_code == 0, res.output
    manifest = load_manifest(model)
    thr = manifest.thresholds.default_class
    assert thr is not None and thr.review_at <= thr.fail_at <= 1.0
    assert manifest.sha256 == sha256_file(model)
    assert manifest.provenance["thresholds"]["escape_bound"] <= 0.25


def test_unreadable_images_are_reported_and_skipped(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, out = trained
    res = CliRunner().invoke(
        app, ["evaluate", str(out / "model.onnx"), str(data), "--json", str(tmp_path / "r.json")]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [Path(p).name for p, _ in rep["skipped"]] == ["broken.png"]
    assert rep["images"] == 30


def test_unknown_labels_are_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = trained
    other = tmp_path / "other"
    (other / "dent").mkdir(parents=True)
    (other / "dent" / "a.bmp").write_bytes((next((data / "good").glob("*.bmp"))).read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(out / "model.onnx"), str(other)])
    assert res.exit_code == 1 and "labels ['dent'] are not known" in res.output


def test_evaluating_through_other_preprocessing_is_refused(trained: tuple[Path, Path]) -> None:
    """Fitted on the images as they are, the model is not judged through the flange recipe."""
    data, out = trained
    assert load_manifest(out / "model.onnx").preprocess == []  # recorded at fit time
    recipe = str(ROOT / "recipes" / "flange.yaml")
    res = CliRunner().invoke(
        app, ["evaluate", str(out / "model.onnx"), str(data), "--recipe", recipe, "--roi", "part"]
    )
    assert res.exit_code == 1
    assert "fitted on images prepared with no preprocessing" in res.output
    assert "recipe 'flange-default' applies undistort(alpha=0.0, scale=0.875):" in res.output


def _img(kind: str) -> np.ndarray:
    rng = np.random.default_rng(len(kind))
    shapes = {"grey": (90, 120), "rgba": (64, 64, 4), "u16": (80, 100, 3), "rgb": (200, 150, 3)}
    if kind == "u16":
        return rng.integers(0, 65535, shapes[kind], dtype=np.uint16)
    return rng.integers(0, 255, shapes[kind], dtype=np.uint8)


def _folder(root: Path, layout: dict[str, list[str]]) -> Path:
    for label, kinds in layout.items():
        (root / label).mkdir(parents=True)
        for i, kind in enumerate(kinds):
            cv2.imwrite(str(root / label / f"{i}_{kind}.png"), _img(kind))
    return root


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"good": ["rgb"] * 4, "dent": []}, "class folder(s) without images: ['dent']"),
        ({"good": ["rgb"] * 6}, "at least two classes"),
    ],
)
def test_bad_datasets(tmp_path: Path, layout: dict[str, list[str]], message: str) -> None:
    data = _folder(tmp_path / "d", layout)
    res = CliRunner().invoke(
        app, ["train", str(data), "--out", str(tmp_path / "m" / "1"), "--backbone", BACKBONE]
    )
    assert res.exit_code == 1 and message in res.output, res.output


def test_mixed_sizes_and_channels_train(tmp_path: Path) -> None:
    kinds = ["grey", "rgba", "u16", "rgb"] * 2
    data = _folder(tmp_path / "d", {"good": kinds, "dent": kinds})
    csv = tmp_path / "d" / "list.csv"
    rows = [
        f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted(data.rglob("*.png"))
    ]
    csv.write_text("file,label\n" + "\n".join(rows) + "\n")
    res = CliRunner().invoke(
        app, ["train", str(csv), "--out", str(tmp_path / "m" / "1"), "--backbone", BACKBONE]
    )
    assert res.exit_code == 0, res.output
    assert "skipped" not in res.output


def test_bad_kind_and_manifest_file(tmp_path: Path) -> None:
    bad = tmp_path / "list.jsonl"
    bad.write_text('{"file": "a.png"}\n')
    res = CliRunner().invoke(app, ["train", str(bad), "--out", str(tmp_path / "o" / "1")])
    assert res.exit_code == 1 and "needs non-empty 'file' and 'label'" in res.output
    res = CliRunner().invoke(
        app, ["train", str(bad), "--out", str(tmp_path / "o" / "1"), "--kind", "x"]
    )
    assert res.exit_code == 1 and "--kind must be" in res.output


def test_train_anomaly_detector_from_class_folders(trained: tuple[Path, Path]) -> None:
    data, out = trained
    anomaly = out.parent.parent / "anomaly" / "1"
    res = CliRunner().invoke(
        app,
        ["train", str(data), "--kind", "anomaly", "--out", str(anomaly), "--backbone", BACKBONE],
    )
    assert res.exit_code == 0, res.output
    manifest = load_manifest(anomaly / "model.onnx")
    assert manifest.task.value == "anomaly"
    assert manifest.sha256 == sha256_file(anomaly / "model.onnx")
    split = json.loads((anomaly / "split.json").read_text())
    assert split  # the recorded split the good images were fitted on
    metrics = manifest.provenance["metrics"]
    assert metrics["test_auroc"] is not None and metrics["test_auroc"] > 0.5


def test_train_anomaly_with_position_norm_on_too_few_parts_says_why(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = trained
    args = ["train", str(data), "--kind", "anomaly", "--position-norm", "--backbone", BACKBONE]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a" / "1")])
    assert res.exit_code == 1
    assert "position normalisation needs at least 20 held-out good images" in res.output
    assert not (tmp_path / "a" / "1" / "model.onnx").exists()


def test_train_anomaly_with_bags_records_them(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = trained
    out = tmp_path / "bagged" / "1"
    args = ["train", str(data), "--kind", "anomaly", "--bags", "2", "--backbone", BACKBONE]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = load_manifest(out / "model.onnx")
    assert manifest.provenance["parameters"]["bags"] == 2
    assert len(manifest.provenance["bag_scales_raw"]) == 2
    assert "mean of 2 bags" in manifest.provenance["method"]


@pytest.mark.torch
def test_finetune_with_unknown_schedule_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    data, _ = trained
    out = tmp_path / "m" / "1"
    args = ["train", str(data), "--out", str(out), "--method", "finetune", "--schedule", "step"]
    res = CliRunner().invoke(app, [*args, "--backbone", BACKBONE])
    assert res.exit_code != 0
    assert "schedule must be 'constant' or 'cosine'" in res.output
    assert not (out / "model.onnx").exists()


@pytest.mark.torch
@pytest.mark.slow
def test_finetune_cosine_at_another_input_size(trained: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data, _ = trained
    out = tmp_path / "m" / "1"
    args = ["train", str(data), "--out", str(out), "--method", "finetune", "--epochs", "1"]
    args += ["--ema-decay", "0.9", "--pooling", "gem"]
    res = CliRunner().invoke(
        app, [*args, "--schedule", "cosine", "--image-size", "160", "--backbone", BACKBONE]
    )
    assert res.exit_code == 0, res.output
    manifest = load_manifest(out / "model.onnx")
    assert (manifest.input.height, manifest.input.width) == (160, 160)
    params = manifest.provenance["parameters"]
    assert params["schedule"] == "cosine" and params["image_size"] == 160
    assert params["ema_decay"] == 0.9
    assert "weights averaged (EMA 0.9)" in manifest.provenance["method"]
    assert params["pooling"] == "gem" and "GeM pooling" in manifest.provenance["method"]
    assert manifest.provenance["metrics"]["gem_p"] > 0
    assert "test_accuracy" in manifest.provenance["metrics"]


def test_train_anomaly_gaussian_on_too_few_parts_says_why(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = trained
    out = tmp_path / "gauss" / "1"
    args = ["train", str(data), "--kind", "anomaly", "--detector", "gaussian", "--top-k", "5"]
    res = CliRunner().invoke(app, [*args, "--backbone", BACKBONE, "--out", str(out)])
    assert res.exit_code == 1
    assert "the gaussian detector needs at least 20 good images per group" in res.output
    # the train split's good images only: val's are kept to set the thresholds on
    said = "9 good image(s) leave 7 (1 view(s) each) after holding out 2, for 1 group(s)"
    assert said in res.output
    assert not (out / "model.onnx").exists()


def test_train_anomaly_refuses_groups_for_patchcore(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = trained
    out = tmp_path / "a" / "1"
    args = ["train", str(data), "--kind", "anomaly", "--groups", "2", "--backbone", BACKBONE]
    res = CliRunner().invoke(app, [*args, "--detector", "patchcore", "--out", str(out)])
    assert res.exit_code == 1
    assert "groups, top_k and shrinkage are for the gaussian detector" in res.output
    assert not out.exists()


def test_train_anomaly_refuses_cross_fitting_for_patchcore(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = trained
    out = tmp_path / "a" / "1"
    args = ["train", str(data), "--kind", "anomaly", "--cross-fit", "--backbone", BACKBONE]
    res = CliRunner().invoke(app, [*args, "--detector", "patchcore", "--out", str(out)])
    assert res.exit_code == 1
    assert "cross-fitting is for the gaussian detector" in res.output
    assert not out.exists()


def test_the_roi_size_is_recorded_and_other_crops_are_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """Fitted on the flange recipe's 224x224 crops; a recipe cutting 200x200 is refused."""
    data, _ = trained
    out = tmp_path / "roi" / "1"
    recipe = ROOT / "recipes" / "flange.yaml"
    args = ["train", str(data), "--out", str(out), "--backbone", BACKBONE]
    res = CliRunner().invoke(app, [*args, "--recipe", str(recipe), "--roi", "part"])
    assert res.exit_code == 0, res.output
    assert load_manifest(out / "model.onnx").roi_size == [224, 224]
    text = recipe.read_text().replace("../", f"{ROOT}/")  # its paths, from anywhere
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(text.replace("width: 224\n    height: 224", "width: 200\n    height: 200"))
    res = CliRunner().invoke(
        app, ["evaluate", str(out / "model.onnx"), str(data), "--recipe", str(narrow)]
    )
    assert res.exit_code == 1
    assert "fitted on 224x224 px ROI crops" in res.output
    assert "ROI 'part' is 200x200 px" in res.output
