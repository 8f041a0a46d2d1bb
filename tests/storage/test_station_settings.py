"""Station settings: defaults, environment (CELLINSPECT_*), YAML file, precedence, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.errors import ConfigError
from cellinspect.settings import ImageFormat, StationSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CELLINSPECT_"):
            monkeypatch.delenv(key)


def test_defaults_are_safe() -> None:
    s = StationSettings()
    assert s.host == "127.0.0.1"
    assert s.api_token is None and s.token_value() is None
    assert s.resolved_db_url == "sqlite:///cellinspect-data/results.db"
    assert s.resolved_image_dir == Path("cellinspect-data/images")
    assert s.max_upload_bytes == 20 * 1024 * 1024


def test_environment_overrides_file_and_arguments_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "station.yaml"
    f.write_text("port: 9000\npass_sample_rate: 0.5\nimage_format: jpeg\ndefect_classes: [a, b]\n")
    monkeypatch.setenv("CELLINSPECT_PORT", "9100")
    monkeypatch.setenv("CELLINSPECT_API_TOKEN", "s3cret")
    s = load_settings(f)
    assert (s.port, s.pass_sample_rate, s.image_format) == (9100, 0.5, ImageFormat.JPEG)
    assert s.defect_classes == ["a", "b"]
    assert s.token_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert load_settings(f, port=1).port == 1


def test_env_lists_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLINSPECT_DEFECT_CLASSES", '["scratch", "dent"]')
    assert load_settings().defect_classes == ["scratch", "dent"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ("port: [", "cannot read settings"),
        ("bogus: 1", "bogus: Extra inputs are not permitted"),
        ("pass_sample_rate: 2", "pass_sample_rate"),
        ("port: -1", "port"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "station.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(f)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings(empty).port == 8000
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
