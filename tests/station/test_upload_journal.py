"""API uploads on a running station: journaled (and stamped) before the reply gives the verdict."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from tests.conftest import ROOT
from tests.station.runner import stored_results, write_station

TOKEN = "upload-token-5c1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _station(tmp_path: Path) -> Path:
    return write_station(
        tmp_path / "station.yaml",
        station_id="upload-1",
        source={"type": "folder", "path": str(ROOT / "sample_images"), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
    )


def _upload(url: str) -> httpx.Response:
    image = sorted((ROOT / "sample_images").glob("*.bmp"))[0]
    with image.open("rb") as fh:
        return httpx.post(
            f"{url}/inspections",
            files={"file": (image.name, fh, "image/bmp")},
            data={"part_id": "77"},
            headers=AUTH,
            timeout=60,
        )


def test_an_upload_is_journaled_and_stamped_before_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLINSPECT_API_TOKEN", TOKEN)
    with StationRuntime(load_station(_station(tmp_path))) as runtime:
        assert runtime.api is not None and runtime.journal is not None
        journaled: list[str] = []
        append = runtime.journal.append

        def watch(result: object) -> None:
            append(result)  # type: ignore[arg-type]
            journaled.append(result.result_id)  # type: ignore[attr-defined]

        monkeypatch.setattr(runtime.journal, "append", watch)
        reply = _upload(runtime.api.url)
        assert reply.status_code == 201, reply.text
        result = reply.json()["result"]
        assert journaled == [result["id"]]  # in the journal before the reply
        assert result["station_id"] == "upload-1" and result["part_id"] == 77
    stored = stored_results(tmp_path / "data")
    assert [(s.result.result_id, s.result.station_id) for s in stored] == [
        (result["id"], "upload-1")
    ]  # stored once: the writer's row and the journal's replay are the same result


def test_an_upload_whose_result_cannot_be_recorded_gets_503_and_no_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELLINSPECT_API_TOKEN", TOKEN)
    with StationRuntime(load_station(_station(tmp_path))) as runtime:
        assert runtime.api is not None and runtime.journal is not None

        def full(result: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(runtime.journal, "append", full)
        reply = _upload(runtime.api.url)
        assert reply.status_code == 503
        assert "cannot record" in reply.json()["message"] and "verdict" not in reply.text
    assert stored_results(tmp_path / "data") == []
