"""benchmarks.backbones finds larger backbones outside models/ (where every folder is served)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.backbones import backbone_path, main
from cellinspect.errors import ModelError

LITE0 = Path("models/efficientnet-lite0/1/model.onnx").resolve()


def _place(root: Path, folder: str) -> Path:
    target = root / folder / "1" / "model.onnx"
    target.parent.mkdir(parents=True)
    shutil.copyfile(LITE0, target)
    return target


def test_backbone_dirs_are_searched_in_order_before_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = _place(tmp_path / "models", "efficientnet-lite1")
    first, second = tmp_path / "a", tmp_path / "b"
    assert backbone_path("lite1", [first]) == Path("models/efficientnet-lite1/1/model.onnx")
    assert backbone_path("lite1", [first]).resolve() == shipped
    in_second = _place(second, "lite1")
    assert backbone_path("lite1", [first, second]) == in_second
    in_first = _place(first, "efficientnet-lite1")
    assert backbone_path("lite1", [first, second]) == in_first


def test_missing_backbone_names_every_place_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        backbone_path("lite2", [tmp_path / "bb"])
    message = str(err.value)
    assert str(tmp_path / "bb" / "lite2" / "1" / "model.onnx") in message
    assert "models/efficientnet-lite2/1/model.onnx" in message
    assert "convert-backbone --variant lite2" in message


def test_cli_fails_early_without_the_backbone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--variants", "lite2", "--no-flange", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--backbones", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 1
    assert str(tmp_path / "nowhere" / "lite2") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
