"""The elpv split (unit tests on synthetic labels) and small real runs of eval-elpv.

`python -m benchmarks.elpv eval-elpv` from the repository root; not part of cellinspect.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from benchmarks.elpv.cli import _table, app
from benchmarks.elpv.data import (
    ElpvError,
    ElpvItem,
    parse_labels,
    stratified_split,
)
from benchmarks.elpv.evaluate import ElpvEvalParams

HAS_ELPV = importlib.util.find_spec("elpv_dataset") is not None
needs_elpv = pytest.mark.skipif(
    not HAS_ELPV, reason="elpv-dataset not installed (pip install -e '.[eval]')"
)
BACKBONES = (
    Path("models/efficientnet-lite0/1/model.onnx"),
    Path("models/efficientnet-lite0/1-int8/model.onnx"),
)


def _items(n: int, seed: int = 1) -> list[ElpvItem]:
    rng = np.random.default_rng(seed)
    probs = rng.choice(
        [0.0, 0.3333333333333333, 0.6666666666666666, 1.0], n, p=[0.6, 0.1, 0.05, 0.25]
    )
    types = rng.choice(["mono", "poly"], n)
    return [
        ElpvItem(f"images/cell{i:04d}.png", float(p), str(t))
        for i, (p, t) in enumerate(zip(probs, types, strict=True))
    ]


def _strata(items: tuple[ElpvItem, ...]) -> Counter[tuple[str, str]]:
    return Counter((i.label, i.cell_type) for i in items)


@pytest.mark.parametrize(("n", "limit"), [(400, None), (1000, None), (1000, 200), (37, None)])
def test_split_is_stratified_disjoint_and_complete(n: int, limit: int | None) -> None:
    items = _items(n)
    split = stratified_split(items, 0.25, seed=0, limit=limit)
    train, test = {i.file for i in split.train}, {i.file for i in split.test}
    assert not train & test
    if limit is None:
        assert train | test == {i.file for i in items}
    else:
        assert abs(len(train) + len(test) - limit) <= 4  # rounding per stratum
    whole = _strata(split.train) + _strata(split.test)
    for key, count in whole.items():
        assert abs(_strata(split.test)[key] - 0.25 * count) <= 0.5 + 1e-9


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    items = _items(500)
    first = stratified_split(items, seed=0)
    shuffled = [items[i] for i in np.random.default_rng(7).permutation(len(items))]
    again = stratified_split(shuffled, seed=0)
    assert first.csv_text() == again.csv_text()
    assert first.sha256() == again.sha256()
    assert stratified_split(items, seed=1).sha256() != first.sha256()


def test_split_csv_records_every_image_and_its_hash(tmp_path: Path) -> None:
    split = stratified_split(_items(120), seed=0)
    digest = split.write_csv(tmp_path / "split.csv")
    data = (tmp_path / "split.csv").read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    rows = list(csv.DictReader((tmp_path / "split.csv").open()))
    assert len(rows) == 120
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(
        r["label"] == ("defective" if float(r["probability"]) >= 0.5 else "good") for r in rows
    )


@pytest.mark.parametrize(("fraction", "limit"), [(0.0, None), (1.0, None), (-0.1, None), (0.25, 3)])
def test_split_rejects_bad_arguments(fraction: float, limit: int | None) -> None:
    with pytest.raises(ValueError):
        stratified_split(_items(50), fraction, limit=limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no labelled images"),
        ("images/a.png 0.5\n", "expected 'file probability type'"),
        ("images/a.png high mono\n", "is no number"),
        ("images/a.png 1.5 mono\n", "outside [0, 1]"),
    ],
)
def test_parse_labels_rejects_broken_rows(text: str, message: str) -> None:
    with pytest.raises(ElpvError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_labels(text, "labels.csv")


def test_parse_labels_reads_the_package_format() -> None:
    items = parse_labels("images/a.png  1.0  mono\n\nimages/b.png 0.0 poly\n", "labels.csv")
    assert [(i.file, i.defective, i.cell_type) for i in items] == [
        ("images/a.png", True, "mono"),
        ("images/b.png", False, "poly"),
    ]


def test_missing_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from benchmarks.elpv import data

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "elpv_dataset":
            raise ImportError("No module named 'elpv_dataset'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ElpvError, match=r"pip install -e '\.\[eval\]'"):
        data.data_root()


@needs_elpv
@pytest.mark.slow
def test_eval_elpv_small_run_stays_above_floors(tmp_path: Path) -> None:
    """A stratified 400-image run: far below the full figures, but a regression shows."""
    missing = [str(p) for p in BACKBONES if not p.is_file()]
    if missing:
        pytest.skip(f"{missing} not found (run from the repository root)")
    out = tmp_path / "elpv"
    result = CliRunner().invoke(
        app,
        # one group, a 96-d projection and one held-out split here, so those paths run on real
        # cells; the 800-cell run below checks the default (two groups, cross-fitted, 152-d)
        [
            *["eval-elpv", "--out", str(out), "--limit", "400", "--views", "4", "--groups", "1"],
            *["--projection-dim", "96", "--no-cross-fit"],
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["split"]["test"] == 100
    cls, ano = report["classification"], report["anomaly"]
    assert cls["accuracy"] > 0.7
    assert ano["auroc"] > 0.7
    assert sum(map(sum, cls["confusion"])) == 100
    # 95 % intervals around both figures; per expert probability, the errors add up
    low, high = cls["accuracy_ci95"]
    assert low < cls["accuracy"] < high and high - low > 0.05  # 100 cells: wide
    assert ano["auroc_ci95"][0] < ano["auroc"] < ano["auroc_ci95"][1]
    experts = cls["per_expert_probability"]
    assert set(experts) <= {"0.00", "0.33", "0.67", "1.00"}
    assert sum(e["images"] for e in experts.values()) == 100
    wrong = sum(e["images"] * (1 - e["accuracy"]) for e in experts.values())
    assert round(wrong) == 100 - round(100 * cls["accuracy"])
    assert "expert" in result.output and "interval" in result.output  # (the table wraps)
    assert cls["latency"]["median_ms"] > 0
    assert ano["parameters"]["preprocess"] == ["stretch(1-99 %)"]
    ano_manifest = json.loads((out / "anomaly" / "manifest.json").read_text())
    stretch = {"op": "stretch", "low_percentile": 1.0, "high_percentile": 99.0}
    assert ano_manifest["preprocess"] == [stretch]  # checked wherever the model runs
    assert json.loads((out / "classifier" / "manifest.json").read_text())["preprocess"] == []
    assert ano["parameters"]["position_norm"] is True  # cells are aligned: z-score positions
    assert ano["method"] == "gaussian" and ano["parameters"]["top_k"] == 20
    assert ano_manifest["provenance"]["method"].endswith(
        "z-scored per patch position, score = mean of the top 20 patches"
    )
    assert ano["parameters"]["cross_fit"] is False
    assert ano["parameters"]["projection_dim"] == 96
    for sub in ("classifier", "anomaly"):
        manifest = json.loads((out / sub / "manifest.json").read_text())
        assert "CC BY-NC-SA" in manifest["provenance"]["elpv"]["licence"]
        assert manifest["provenance"]["elpv"]["split_sha256"] == report["split"]["sha256"]
    split_bytes = (out / "split.csv").read_bytes()
    assert hashlib.sha256(split_bytes).hexdigest() == report["split"]["sha256"]


@needs_elpv
@pytest.mark.slow
def test_eval_elpv_gaussian_groups_split_mono_from_poly_without_labels(tmp_path: Path) -> None:
    """800 cells: enough functional ones for two texture groups of 20+ held-out cells each."""
    out = tmp_path / "elpv"
    args = ["eval-elpv", "--out", str(out), "--task", "anomaly", "--limit", "800"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ano = json.loads((out / "report.json").read_text())["anomaly"]
    assert ano["parameters"]["groups"] == 2
    assert ano["parameters"]["cross_fit"] is True and ano["parameters"]["projection_dim"] is None
    assert ano["auroc"] > 0.8
    manifest = json.loads((out / "anomaly" / "manifest.json").read_text())
    assert manifest["provenance"]["method"].endswith("5-fold cross-fitted z-scores and scale")
    # cross-fitted: every functional cell is fitted and held out once, (n, n) per group
    assert all(fit == held for fit, held in manifest["provenance"]["group_sizes"])
    sizes = sorted(fit for fit, _ in manifest["provenance"]["group_sizes"])
    split = list(csv.DictReader((out / "split.csv").open()))
    functional = [r for r in split if r["split"] == "train" and float(r["probability"]) == 0.0]
    by_type = sorted(sum(r["type"] == t for r in functional) for t in ("mono", "poly"))
    # k-means on texture alone finds the two cell types (within a few cells)
    assert all(abs(a - b) <= 3 for a, b in zip(sizes, by_type, strict=True)), (sizes, by_type)


@needs_elpv
@pytest.mark.slow
def test_eval_elpv_patchcore_small_run_averages_three_bags(tmp_path: Path) -> None:
    out = tmp_path / "elpv"
    args = ["eval-elpv", "--out", str(out), "--method", "patchcore", "--limit", "400"]
    result = CliRunner().invoke(app, [*args, "--coreset", "500"])
    assert result.exit_code == 0, result.output
    ano = json.loads((out / "report.json").read_text())["anomaly"]
    assert ano["method"] == "patchcore" and ano["auroc"] > 0.7
    assert ano["parameters"]["bags"] == 3  # three draws of bank and held-out cells, averaged
    manifest = json.loads((out / "anomaly" / "manifest.json").read_text())
    assert manifest["provenance"]["method"].endswith(
        "z-scored per patch position, mean of 3 bags' scores"
    )


@pytest.mark.parametrize("task", ["nonsense", ""])
def test_eval_elpv_rejects_unknown_task(tmp_path: Path, task: str) -> None:
    result = CliRunner().invoke(app, ["eval-elpv", "--out", str(tmp_path), "--task", task])
    assert result.exit_code != 0
    assert not (tmp_path / "report.json").exists()


def _needs_torch_and_backbone() -> None:
    pytest.importorskip("torch")
    if not BACKBONES[0].is_file():
        pytest.skip(f"{BACKBONES[0]} not found (run from the repository root)")


@needs_elpv
@pytest.mark.torch
@pytest.mark.slow
def test_eval_elpv_finetune_small_run_writes_checked_view_model(tmp_path: Path) -> None:
    """One epoch on a 120-image subset: the pipeline, not the accuracy (that needs the full run)."""
    _needs_torch_and_backbone()
    out = tmp_path / "elpv"
    args = ["eval-elpv", "--out", str(out), "--method", "finetune", "--limit", "120"]
    variant = ["--schedule", "cosine", "--image-size", "160", "--soft-labels", "--no-balance"]
    variant += ["--ema-decay", "0.9", "--fit-seed", "3", "--pooling", "gem"]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--views", "2", *variant])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    cls = report["classification"]
    assert "anomaly" not in report
    assert cls["method"] == "finetune"
    assert cls["epochs_run"] == len(cls["history"]) == 1
    assert cls["export_max_abs_diff"] < 1e-4
    assert sum(map(sum, cls["confusion"])) == report["split"]["test"] == 29  # stratified 120
    assert 0.0 <= cls["accuracy"] <= 1.0
    assert cls["latency"]["median_ms"] > 0
    manifest = json.loads((out / "finetune" / "manifest.json").read_text())
    assert manifest["labels"] == ["good", "defective"]
    tuned = manifest["provenance"]["elpv_finetune"]
    assert tuned["views"] == 2 and tuned["schedule"] == "cosine" and tuned["image_size"] == 160
    assert tuned["soft_labels"] is True and tuned["balance_classes"] is False
    assert tuned["ema_decay"] == 0.9 and tuned["seed"] == 3 and report["split"]["seed"] == 0
    assert "val_loss_last_step" in cls["history"][0]
    method = manifest["provenance"]["method"]
    assert tuned["pooling"] == "gem" and "GeM pooling (learned p" in method
    assert "weights averaged (EMA 0.9)" in method
    assert method.endswith("averaged over 2 dihedral views in the graph")
    assert manifest["provenance"]["metrics"]["gem_p"] > 0
    assert manifest["provenance"]["targets"].startswith("soft")
    assert manifest["input"]["shape"][2:] == [160, 160]
    assert manifest["provenance"]["elpv"]["split_sha256"] == report["split"]["sha256"]
    assert (
        hashlib.sha256((out / "finetune" / "model.onnx").read_bytes()).hexdigest()
        == (manifest["sha256"])
    )


@needs_elpv
@pytest.mark.torch
@pytest.mark.slow
def test_eval_elpv_finetune_fits_are_scored_alone_and_merged(tmp_path: Path) -> None:
    """--fits 2: two seeds, each member's own test figure, and their mean in one graph."""
    _needs_torch_and_backbone()
    out = tmp_path / "elpv"
    args = ["eval-elpv", "--out", str(out), "--method", "finetune", "--limit", "120"]
    args += ["--epochs", "1", "--image-size", "96", "--fits", "2", "--fit-seed", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    wide = Console(width=200, record=True)
    wide.print(_table(report))
    assert "accuracy, fit seed 5 alone" in wide.export_text()
    cls = report["classification"]
    assert [m["seed"] for m in cls["fits"]] == [4, 5]
    assert cls["parameters"]["fits"] == 2
    members = []
    for fit in cls["fits"]:
        manifest = json.loads((Path(fit["model"]).parent / "manifest.json").read_text())
        assert manifest["provenance"]["elpv_finetune"]["seed"] == fit["seed"]
        assert 0.0 <= fit["accuracy"] <= 1.0 and len(fit["history"]) == 1
        members.append(hashlib.sha256(Path(fit["model"]).read_bytes()).hexdigest())
    merged = json.loads((out / "finetune" / "manifest.json").read_text())
    assert [m["sha256"] for m in merged["provenance"]["members"]] == members
    assert members[0] != members[1]
    assert merged["sha256"] == cls["model_sha256"]
    assert sum(map(sum, cls["confusion"])) == 29


@needs_elpv
@pytest.mark.torch
@pytest.mark.slow
def test_eval_elpv_synthetic_small_run_is_taught_on_functional_cells_only(tmp_path: Path) -> None:
    """One epoch on a 120-image subset: the drawn-defect detector's pipeline, end to end."""
    _needs_torch_and_backbone()
    out = tmp_path / "elpv"
    args = ["eval-elpv", "--out", str(out), "--method", "synthetic", "--limit", "120"]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--image-size", "128"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ano = report["anomaly"]
    assert "classification" not in report
    assert ano["method"] == "synthetic" and ano["epochs_run"] == 1
    assert ano["images"] == report["split"]["test"] == 29
    assert ano["auroc"] is not None and 0.0 <= ano["auroc"] <= 1.0
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    assert manifest["labels"] == ["good", "defective"]
    assert manifest["input"]["shape"][2:] == [128, 128]
    method = manifest["provenance"]["method"]
    assert method.startswith("fine-tuned EfficientNet-Lite0") and "frozen batch-norm" in method
    assert method.endswith("with drawn EL defects; no defective cell seen")
    split = {row["file"]: row for row in csv.DictReader((out / "split.csv").open())}
    functional_train = sum(
        1 for r in split.values() if r["split"] == "train" and float(r["probability"]) == 0.0
    )
    taught = manifest["provenance"]["data"]["counts"]
    # Each functional training cell twice (as itself and with a drawn defect), less validation.
    assert taught["good"] == taught["defective"] < functional_train
    assert manifest["provenance"]["elpv"]["split_sha256"] == report["split"]["sha256"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"views": 0}, "views must be one of"),
        ({"views": 3}, "views must be one of"),
        ({"views": 16}, "views must be one of"),
        ({"fits": 0}, "fits must be >= 1"),
    ],
)
def test_finetune_rejects_bad_parameters_before_training(
    tmp_path: Path, bad: dict[str, int], message: str
) -> None:
    pytest.importorskip("torch")
    from benchmarks.elpv.finetune import ElpvFinetuneParams
    from cellinspect.errors import ModelError

    params = ElpvEvalParams(
        out=tmp_path,
        task="classification",
        classification_method="finetune",
        finetune=ElpvFinetuneParams(**bad),  # type: ignore[arg-type]
    )
    with pytest.raises(ModelError, match=message):
        params.check()


def test_anomaly_parameters_must_match_the_method(tmp_path: Path) -> None:
    from benchmarks.elpv.evaluate import ElpvEvalParams, default_anomaly_params
    from cellinspect.errors import ModelError

    params = ElpvEvalParams(
        out=tmp_path,
        task="anomaly",
        anomaly_method="patchcore",
        anomaly=default_anomaly_params("gaussian"),
    )
    with pytest.raises(ModelError, match="for the gaussian detector, the method is patchcore"):
        params.check()


def test_eval_elpv_refuses_cross_fitting_for_patchcore(tmp_path: Path) -> None:
    args = ["eval-elpv", "--out", str(tmp_path), "--method", "patchcore", "--cross-fit"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "cross-fitting is for the gaussian detector" in result.output
    assert not (tmp_path / "report.json").exists()


def test_eval_elpv_refuses_bags_for_the_gaussian_detector(tmp_path: Path) -> None:
    args = ["eval-elpv", "--out", str(tmp_path), "--task", "anomaly", "--bags", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "bags are for the patchcore detector" in result.output
    assert not (tmp_path / "report.json").exists()


def _parameters_of(monkeypatch: pytest.MonkeyPatch, out: Path, *flags: str) -> ElpvEvalParams:
    """What `eval-elpv --out OUT FLAGS` hands run_elpv_eval, without running it."""
    import benchmarks.elpv.evaluate as elpv_eval

    seen: list[ElpvEvalParams] = []

    def capture(params: ElpvEvalParams, *_args: object) -> dict[str, object]:
        seen.append(params)
        raise typer.Exit(0)

    monkeypatch.setattr(elpv_eval, "run_elpv_eval", capture)
    result = CliRunner().invoke(app, ["eval-elpv", "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize(("flag", "stretched"), [([], True), (["--no-stretch"], False)])
def test_python_defaults_match_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], stretched: bool
) -> None:
    """ElpvEvalParams used from Python must fit what `eval-elpv` fits (stretch included)."""
    from cellinspect.config import StretchOp

    from_cli = _parameters_of(monkeypatch, tmp_path, "--task", "anomaly", *flag).anomaly_preprocess
    assert from_cli == ((StretchOp(),) if stretched else ())
    if stretched:
        assert ElpvEvalParams(out=tmp_path).anomaly_preprocess == from_cli


def test_fit_seed_changes_the_fits_but_not_the_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fit-seed reaches every fit while the recorded split keeps --seed's draw."""
    default = _parameters_of(monkeypatch, tmp_path)
    refit = _parameters_of(monkeypatch, tmp_path, "--fit-seed", "5")
    assert default.seed == refit.seed == 0
    assert default.classifier.seed == 0 and refit.classifier.seed == 5
    assert default.anomaly is not None and refit.anomaly is not None
    assert default.anomaly.seed == 0 and refit.anomaly.seed == 5
