"""Teach on the line, through the real API of an in-process station.

The station runs `StationRuntime` on the shipped flange recipe with its store and API on a
free port; parts are triggered in software from a folder of sample images (good parts, and
one defective part the operator rejects). The session fits a real PatchCore detector on the
confirmed frames with the shipped backbone, adds it to the registry and shadows it.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellinspect.errors import ModelError
from cellinspect.inference.manifest import (
    load_manifest,
    load_private_key,
    write_key_pair,
    write_manifest,
)
from cellinspect.lifecycle.teach import TeachSession, TeachState, manager_for
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from cellinspect.training.fitted_images import RECORD_KEY, image_id
from cellinspect.users import Role, add_user
from tests.conftest import ROOT
from tests.station.runner import write_station

SLOT = "flange-anomaly"
SAMPLES = sorted((ROOT / "sample_images").glob("*.bmp"))
GOOD = [p for p in SAMPLES if p.stem.endswith("_good")]
DEFECT = next(p for p in SAMPLES if p.stem.endswith("_scratch"))
WANTED = 8
AFTER = 3  # parts judged once the shadow runs
DEADLINE_MS = 5000.0


def signed_recipe(folder: Path) -> tuple[Path, Path, Path]:
    """The flange recipe over copies of its two models signed with a new key: (recipe,
    private key, public key), for a station that loads only signed models."""
    (folder / "keys").mkdir(exist_ok=True)
    private, public = write_key_pair(folder / "keys" / "qa")
    key = load_private_key(private)
    text = (ROOT / "recipes" / "flange.yaml").read_text()
    for name in ("flange-anomaly", "flange-classifier"):
        package = folder / "models" / name / "1"
        shutil.copytree(ROOT / "models" / name / "1", package)
        model = package / "model.onnx"
        write_manifest(load_manifest(model), model, sealed_by="qa", private_key=key)
        text = text.replace(f"../models/{name}/1/model.onnx", str(model))
    recipe = folder / "recipes" / "flange.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(text.replace("../", f"{ROOT}/"))
    return recipe, private, public


def station_file(tmp_path: Path, **fields: Any) -> tuple[Path, list[str]]:
    """A folder source: two good parts, the defect, the good parts after; file order."""
    source = tmp_path / "images"
    source.mkdir()
    order = [*GOOD[:2], DEFECT, *GOOD[2 : WANTED + AFTER]]
    names = []
    for i, image in enumerate(order):
        name = f"{i:03d}_{image.name}"
        shutil.copy(image, source / name)
        names.append(name)
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(source), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
        store={"data_dir": str(tmp_path / "data")},
        **fields,
    )
    return path, names


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.delenv("CELLINSPECT_API_TOKEN", raising=False)
    users = tmp_path / "data" / "users.yaml"
    users.parent.mkdir(parents=True)
    yield {
        name: add_user(users, name, role)
        for name, role in (("otto", Role.OPERATOR), ("vera", Role.VIEWER), ("quinn", Role.QA))
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_until(check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    """Poll `check` until it returns something truthy (the fit runs in the background)."""
    end = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.1)


def collected(http: httpx.Client, headers: dict[str, str], result_id: str) -> bool:
    parts = http.get("/teach", headers=headers).json()["parts"]
    return any(p["result_id"] == result_id for p in parts)


def shadow_rows(data_dir: Path) -> list[tuple[str, str, str, str | None]]:
    """(live result, version, package hash, verdict) of every shadow row, read with sqlite3."""
    with sqlite3.connect(data_dir / "results.db") as db:
        query = (
            "SELECT live_result_id, candidate_version, candidate_sha256, verdict "
            "FROM shadow_results ORDER BY id"
        )
        return [tuple(r) for r in db.execute(query)]


@pytest.mark.slow
def test_teach_collects_confirmed_parts_fits_and_shadows(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    # a station that loads only signed models: what it teaches is signed with its own key
    recipe, private, public = signed_recipe(tmp_path)
    path, names = station_file(
        tmp_path,
        recipes={1: str(recipe)},
        trusted_model_keys=[str(public)],
        teach_signing_key=str(private),
    )
    data_dir = tmp_path / "data"
    otto, vera = auth(tokens["otto"]), auth(tokens["vera"])
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime, httpx.Client(base_url=runtime.api.url if runtime.api else "", timeout=60) as http:
        denied = http.post("/teach", json={"slot": SLOT, "wanted": WANTED}, headers=vera)
        too_few = http.post("/teach", json={"slot": SLOT, "wanted": 2}, headers=otto)
        started = http.post("/teach", json={"slot": SLOT, "wanted": WANTED}, headers=otto)
        assert started.status_code == 201, started.text
        again = http.post("/teach", json={"slot": SLOT, "wanted": WANTED}, headers=otto)

        by_result: dict[str, str] = {}
        decisions: list[int] = []
        for part, name in enumerate(names[: WANTED + 1], start=1):
            rid = runtime.trigger(part_id=part).result.result_id
            by_result[rid] = name
            assert wait_until(partial(collected, http, vera, rid)), f"part {part} not collected"
            assert http.post(f"/teach/parts/{rid}/confirm", headers=vera).status_code == 403
            verb = "reject" if "_scratch" in name else "confirm"
            decided = http.post(f"/teach/parts/{rid}/{verb}", headers=otto)
            decisions.append(decided.status_code)
        thumb_rid = next(iter(by_result))
        thumb = http.get(f"/teach/parts/{thumb_rid}/image", headers=vera)

        done = wait_until(
            lambda: http.get("/teach", headers=vera).json()["state"] in ("shadow", "failed")
        )
        status = http.get("/teach", headers=vera).json()
        assert done and status["state"] == "shadow", status
        version = status["version"]
        after = []
        for part in range(WANTED + 2, WANTED + 2 + AFTER):
            after.append(runtime.trigger(part_id=part).result.result_id)
            # a gap between parts, as on a conveyor, in which the shadow judges
            assert runtime.interface.wait_idle(60)
            assert runtime.shadow is not None and runtime.shadow.wait_idle(60)
        versions = http.get("/models/versions", params={"slot": SLOT}, headers=vera).json()
        audit = http.get("/models/audit", params={"slot": SLOT}, headers=vera).json()
        late_decision = http.post(f"/teach/parts/{thumb_rid}/reject", headers=otto)
        assert runtime.writer is not None and runtime.writer.flush(timeout=60)

    assert denied.status_code == 403 and "has role viewer" in denied.json()["message"]
    assert too_few.status_code == 422
    assert again.status_code == 409, again.text
    assert decisions == [200] * (WANTED + 1)
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
    assert late_decision.status_code == 409  # the parts are final once fitting began

    assert status["collected"] == WANTED + 1 and status["rejected"] == 1
    assert status["confirmed"] == WANTED and status["operator"] == "otto"
    assert str(tmp_path) not in str(status)  # no server paths in replies
    rejected = [p["result_id"] for p in status["parts"] if p["status"] == "rejected"]
    assert [by_result[r] for r in rejected] == [names[2]]  # the scratched part

    mine = next(v for v in versions if v["version"] == version)
    assert mine["state"] == "shadow" and mine["created_by"] == "otto"
    trail = [(e["action"], e["to_state"], e["actor"]) for e in audit if e["version"] == version]
    assert trail == [("add", "candidate", "otto"), ("shadow", "shadow", "otto")]

    # what was fitted or kept apart for thresholds: exactly the confirmed frames
    package = data_dir / "models" / SLOT / version
    manifest = load_manifest(package / "model.onnx")
    assert manifest.seal is not None and manifest.seal.sealed_by == "otto"
    assert manifest.seal.signature is not None  # signed by the station's teach key
    fitted = set(manifest.provenance[RECORD_KEY]["ids"])
    calibrated = set(manifest.provenance["thresholds"]["data"]["images"]["ids"])
    frames = {p.stem: image_id(p) for p in (data_dir / "teach").glob("*/*.png")}
    confirmed = {frames[p["result_id"]] for p in status["parts"] if p["status"] == "confirmed"}
    assert fitted | calibrated == confirmed and not fitted & calibrated
    assert frames[rejected[0]] not in fitted | calibrated

    # the parts after the fit are judged again by the taught version, in shadow only
    rows = shadow_rows(data_dir)
    assert [r[:3] for r in rows] == [(rid, version, mine["sha256"]) for rid in after]
    assert all(r[3] in ("pass", "review", "fail") for r in rows), rows  # judged, not skipped


def test_qa_labels_decide_parts_and_cancel_registers_nothing(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    path, _ = station_file(tmp_path)
    otto, quinn = auth(tokens["otto"]), auth(tokens["quinn"])
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime, httpx.Client(base_url=runtime.api.url if runtime.api else "", timeout=60) as http:
        before = http.get("/models/versions", headers=otto).json()
        assert http.post("/teach", json={"wanted": WANTED}, headers=otto).status_code == 201
        good, bad = (runtime.trigger(part_id=n).result.result_id for n in (1, 2))
        assert runtime.writer is not None and runtime.writer.flush(timeout=60)
        labelled = [
            http.put(f"/results/{good}/review", json={"label": "good"}, headers=quinn),
            http.put(
                f"/results/{bad}/review",
                json={"label": "defect", "defect_class": "scratch"},
                headers=quinn,
            ),
        ]

        def decided() -> dict[str, Any] | None:
            body: dict[str, Any] = http.get("/teach", headers=otto).json()
            return body if body["confirmed"] == 1 and body["rejected"] == 1 else None

        status = wait_until(decided)
        cancelled = http.post("/teach/cancel", headers=otto)
        runtime.trigger(part_id=3)
        after = http.get("/teach", headers=otto).json()
        cancel_again = http.post("/teach/cancel", headers=otto)
        versions = http.get("/models/versions", headers=otto).json()

    assert [r.status_code for r in labelled] == [200, 200]
    assert status, "the QA labels did not decide the parts"
    assert status["slot"] == SLOT  # the recipe's one anomaly slot, not named in the request
    by_id = {p["result_id"]: p for p in status["parts"]}
    assert by_id[good]["status"] == "confirmed" and by_id[bad]["status"] == "rejected"
    assert by_id[good]["decided_by"] == "quinn (QA label)"
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert after["collected"] == 2  # nothing collected once cancelled
    assert cancel_again.status_code == 409
    assert versions == before  # nothing registered


def test_a_failed_fit_is_reported_and_the_station_judges_on(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    path, _ = station_file(tmp_path)
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime:
        session = manager_for(runtime).start(
            lambda: TeachSession(
                runtime, SLOT, WANTED, "otto", backbone=tmp_path / "no-backbone.onnx"
            )
        )
        for part in range(1, WANTED + 1):
            rid = runtime.trigger(part_id=part).result.result_id
            assert wait_until(partial(session.parts.__contains__, rid))
            session.decide(rid, True, "otto")
        assert session.wait(120)
        status = session.status()
        hook_after = runtime.extra_on_result
        later = runtime.trigger(part_id=WANTED + 1)
        restarted = manager_for(runtime).start(lambda: TeachSession(runtime, SLOT, WANTED, "otto"))
        restarted.cancel("otto")
        versions = runtime.model_registry().versions(SLOT)

    assert status.state is TeachState.FAILED, status.message
    assert "no-backbone.onnx" in status.message and status.version is None
    assert hook_after is None  # the station's result hook is given back
    assert later.result.error is None and later.result.verdict.value in ("pass", "review", "fail")
    assert [v.version for v in versions] == ["1"]  # nothing was added


def test_a_station_of_signed_models_teaches_only_with_its_own_signing_key(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    recipe, _, public = signed_recipe(tmp_path)
    path, _ = station_file(tmp_path, recipes={1: str(recipe)}, trusted_model_keys=[str(public)])
    runtime = StationRuntime(load_station(path), interface_overrides={"deadline_ms": DEADLINE_MS})
    with runtime, httpx.Client(base_url=runtime.api.url if runtime.api else "", timeout=60) as http:
        refused = http.post("/teach", json={"wanted": WANTED}, headers=auth(tokens["otto"]))
    assert refused.status_code == 409
    assert "teach_signing_key" in refused.json()["message"]
    assert str(tmp_path) not in refused.text

    stranger, _ = write_key_pair(tmp_path / "keys" / "stranger")
    other = tmp_path / "other"
    other.mkdir()
    path, _ = station_file(
        other,
        recipes={1: str(recipe)},
        trusted_model_keys=[str(public)],
        teach_signing_key=str(stranger),
    )
    with pytest.raises(ModelError, match=r"teach_signing_key: .*not the private half"):
        StationRuntime(load_station(path))
