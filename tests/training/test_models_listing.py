"""`cellinspect models`: fits 80 columns, and names a backbone as a backbone, not as a parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cellinspect.cli import app
from cellinspect.cli.modelling import lineage
from cellinspect.inference.manifest import load_manifest, write_manifest
from tests.conftest import ROOT, build_brightness_anomaly_model

MODELS = ROOT / "models"


def _rows(output: str, title: str) -> list[list[str]]:
    """The cells of each table row under `title` (a row's wrapped lines joined, no spaces
    added, so a name folded across lines reads whole again)."""
    table = output.split(title, 1)[1]
    rows: list[list[str]] = []
    current: list[str] | None = None
    for line in table.splitlines():
        if line.startswith(("├", "└", "┡")):
            current = None
            if line.startswith("└"):
                break
            continue
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if current is None:
            current = cells
            rows.append(current)
        else:
            for i, cell in enumerate(cells):
                joiner = "" if current[i].endswith("-") or not cell else " "
                current[i] = (current[i] + joiner + cell).strip()
    return rows


def _listing(root: Path) -> str:
    result = CliRunner().invoke(app, ["models", str(root)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    return result.output


def test_shipped_models_at_80_columns_show_backbone_and_parent_apart() -> None:
    out = _listing(MODELS)
    rows = {row[0]: row for row in _rows(out, f"models in {MODELS}")}
    assert set(rows) == {
        "efficientnet-lite0/1",
        "efficientnet-lite0/1-int8",
        "flange-anomaly/1",
        "flange-classifier/1",
    }
    for row in rows.values():
        assert all(row), row  # no column squeezed to nothing
    assert rows["flange-classifier/1"][1] == "classification"
    assert rows["flange-classifier/1"][3] == "backbone: efficientnet-lite0/1"
    assert rows["flange-anomaly/1"][3] == "backbone: efficientnet-lite0/1"
    assert rows["efficientnet-lite0/1-int8"][3] == "from: efficientnet-lite0/1"
    digest = load_manifest(MODELS / "flange-classifier" / "1" / "model.onnx").sha256
    assert rows["flange-classifier/1"][2] == f"{digest[:8]} sealed"
    metrics = out.split("recorded metrics", 1)[1].splitlines()
    assert any("flange-anomaly/1" in line and "validation_auroc " in line for line in metrics)
    assert any("validation_auroc " in line and "0.9964" in line for line in metrics)


def _model(root: Path, name: str, version: str, provenance: dict[str, Any]) -> Path:
    path = build_brightness_anomaly_model(root / name / version)
    manifest = load_manifest(path)
    update = {"name": name, "provenance": provenance}
    write_manifest(manifest.model_copy(update=update), path)
    return path


def test_long_names_wrap_within_80_columns_and_a_trained_head_has_no_parent(
    tmp_path: Path,
) -> None:
    backbone = {"name": "efficientnet-lite0", "version": "1", "sha256": "0" * 64}
    long_name = "flange-classifier-with-a-rather-long-name-for-line-4"
    _model(
        tmp_path,
        long_name,
        "12",
        # as `train` records it: the backbone given as parent_version, too
        {"backbone": backbone, "parent_version": "efficientnet-lite0/1", "metrics": {"a": 0.5}},
    )
    _model(
        tmp_path,
        "flange-anomaly",
        "3",
        {"backbone": backbone, "parent_version": "flange-anomaly/2"},
    )
    copied = _model(tmp_path, "flange-anomaly", "3-int8", {"parent_version": "3"})
    copied.write_bytes(copied.read_bytes() + b"\0")  # the manifest's sha256 no longer matches
    out = _listing(tmp_path)
    rows = {row[0]: row for row in _rows(out, f"models in {tmp_path}")}
    assert set(rows) == {f"{long_name}/12", "flange-anomaly/3", "flange-anomaly/3-int8"}
    assert rows[f"{long_name}/12"][3] == "backbone: efficientnet-lite0/1"
    assert rows["flange-anomaly/3"][3] == ("from: flange-anomaly/2 backbone: efficientnet-lite0/1")
    assert rows["flange-anomaly/3-int8"][3] == "from: flange-anomaly/3"
    assert "MISMATCH" in rows["flange-anomaly/3-int8"][2]


def test_lineage_reads_the_manifest() -> None:
    classifier = load_manifest(MODELS / "flange-classifier" / "1" / "model.onnx")
    assert lineage(classifier) == ("", "efficientnet-lite0/1")
    int8 = load_manifest(MODELS / "efficientnet-lite0" / "1-int8" / "model.onnx")
    assert lineage(int8) == ("efficientnet-lite0/1", "")
    assert lineage(load_manifest(MODELS / "efficientnet-lite0" / "1" / "model.onnx")) == ("", "")
