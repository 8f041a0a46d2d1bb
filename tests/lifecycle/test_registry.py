"""The model registry on a real migrated store: states, audit, refusals, and the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cellinspect.cli.root import app
from cellinspect.errors import ModelError
from cellinspect.inference.manifest import load_public_keys, write_key_pair
from cellinspect.lifecycle import promotion
from cellinspect.lifecycle.promotion import GateRefusedError, check_gate
from cellinspect.lifecycle.registry import LifecycleError, ModelRegistry, State
from cellinspect.storage.db import make_engine
from cellinspect.storage.migrate import upgrade
from tests.conftest import ROOT

SLOT = "flange-anomaly"
SHIPPED = ROOT / "models" / SLOT / "1"


def resealed(tmp_path: Path, name: str, fail_at: float, key: Path | None = None) -> Path:
    """The shipped anomaly package with another threshold, sealed (and signed) by the CLI."""
    folder = tmp_path / name
    shutil.copytree(SHIPPED, folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["thresholds"]["fail_at"] = fail_at
    manifest["thresholds"]["review_at"] = min(manifest["thresholds"]["review_at"], fail_at)
    manifest["version"] = name
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    args = ["models", "seal", str(folder), "--by", "registry-test"]
    out = CliRunner().invoke(app, args + (["--key", str(key)] if key else []))
    assert out.exit_code == 0, out.output
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'results.db'}")
    upgrade(engine)
    return ModelRegistry(engine, tmp_path / "data" / "models")


def test_states_move_as_allowed_and_every_change_is_audited(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    first = registry.ensure_live(SLOT, SHIPPED / "model.onnx")
    assert first.state is State.LIVE and first.version == "1"
    assert registry.ensure_live(SLOT, SHIPPED / "model.onnx") == first  # not registered twice

    b = registry.add(SLOT, resealed(tmp_path, "b", 0.9), "ann")
    assert b.state is State.CANDIDATE and b.package_dir.is_relative_to(registry.models_dir)
    assert b.sha256 != first.sha256
    assert (b.package_dir / "model.onnx").read_bytes() == (SHIPPED / "model.onnx").read_bytes()
    with pytest.raises(LifecycleError, match="exists already"):
        registry.add(SLOT, resealed(tmp_path, "b2", 0.8), "ann", version="b")

    c = registry.add(SLOT, resealed(tmp_path, "c", 0.8), "ann")
    registry.set_state(SLOT, "b", State.SHADOW, "quinn", action="shadow")
    registry.set_state(SLOT, "c", State.SHADOW, "quinn", action="shadow")  # b goes back
    assert {v.version: v.state for v in registry.versions(SLOT)} == {
        "1": State.LIVE,
        "b": State.CANDIDATE,
        "c": State.SHADOW,
    }
    with pytest.raises(LifecycleError, match="cannot go retired"):
        registry.set_state(SLOT, "1", State.RETIRED, "ann", action="retire")
    with pytest.raises(LifecycleError, match="no version 'zz'"):
        registry.get(SLOT, "zz")

    retired = registry.promote(SLOT, "c", "ada", "better")
    assert retired.version == "1"
    assert registry.live(SLOT) == registry.get(SLOT, "c")
    assert registry.get(SLOT, "1").state is State.RETIRED
    with pytest.raises(LifecycleError, match="only a candidate or shadow"):
        registry.promote(SLOT, "1", "ada")

    assert registry.previous_live(SLOT).version == "1"
    gone, back = registry.rollback(SLOT, "ada", "escapes on line 2")
    assert (gone.version, back.version) == ("c", "1")
    assert registry.live(SLOT) is not None and registry.live(SLOT).sha256 == first.sha256  # type: ignore[union-attr]

    trail = [(e.version, e.action, e.from_state, e.to_state, e.actor) for e in registry.audit(SLOT)]
    assert trail == [
        ("1", "register", None, State.LIVE, "station"),
        ("b", "add", None, State.CANDIDATE, "ann"),
        ("c", "add", None, State.CANDIDATE, "ann"),
        ("b", "shadow", State.CANDIDATE, State.SHADOW, "quinn"),
        ("b", "unshadow", State.SHADOW, State.CANDIDATE, "quinn"),
        ("c", "shadow", State.CANDIDATE, State.SHADOW, "quinn"),
        ("1", "promote", State.LIVE, State.RETIRED, "ada"),
        ("c", "promote", State.SHADOW, State.LIVE, "ada"),
        ("c", "rollback", State.LIVE, State.RETIRED, "ada"),
        ("1", "rollback", State.RETIRED, State.LIVE, "ada"),
    ]
    assert registry.audit(SLOT)[-1].reason == "escapes on line 2"
    assert c.sha256 == registry.get(SLOT, "c").sha256


def test_rollback_needs_an_earlier_live_version(registry: ModelRegistry) -> None:
    registry.ensure_live(SLOT, SHIPPED / "model.onnx")
    with pytest.raises(LifecycleError, match="nothing to roll back to"):
        registry.rollback(SLOT, "ada")


def test_tampered_unsealed_and_untrusted_packages_are_refused(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    tampered = resealed(tmp_path, "t", 0.9)
    manifest = json.loads((tampered / "manifest.json").read_text(encoding="utf-8"))
    manifest["thresholds"]["fail_at"] = 0.99  # changed after sealing
    (tampered / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelError, match=r"manifest fields changed since sealed.*thresholds"):
        registry.add(SLOT, tampered, "ann")

    swapped = resealed(tmp_path, "s", 0.9)
    with (swapped / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="model bytes changed"):
        registry.add(SLOT, swapped, "ann")

    unsealed = tmp_path / "u"
    shutil.copytree(SHIPPED, unsealed)
    manifest = json.loads((unsealed / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("seal")
    (unsealed / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelError, match="unsealed"):
        registry.add(SLOT, unsealed, "ann")

    private, public = write_key_pair(tmp_path / "k")
    keys = load_public_keys([public])
    with pytest.raises(ModelError, match="not signed"):
        registry.add(SLOT, resealed(tmp_path, "n", 0.9), "ann", trusted_keys=keys)
    signed = registry.add(SLOT, resealed(tmp_path, "g", 0.9, key=private), "ann", trusted_keys=keys)
    assert signed.state is State.CANDIDATE
    with pytest.raises(ModelError, match="not found"):
        registry.add(SLOT, tmp_path / "missing", "ann")
    with pytest.raises(LifecycleError, match=r"model version '\.\./x'"):
        registry.add(SLOT, resealed(tmp_path, "v", 0.9), "ann", version="../x")
    assert [v.version for v in registry.versions(SLOT)] == ["g"]  # nothing else recorded


@pytest.mark.parametrize(
    ("reviewed", "live", "candidate", "needed", "problems"),
    [
        (20, 1, 1, 20, []),
        (25, 2, 0, 20, []),
        (19, 0, 0, 20, ["19 QA-reviewed part(s) compared, the gate needs 20"]),
        (30, 0, 1, 20, ["1 escape(s) on reviewed parts against the live model's 0"]),
    ],
)
def test_gate(reviewed: int, live: int, candidate: int, needed: int, problems: list[str]) -> None:
    assert check_gate(reviewed, live, candidate, needed) == problems


def test_promote_without_shadow_report_is_refused_and_an_override_is_audited(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    registry.ensure_live(SLOT, SHIPPED / "model.onnx")
    registry.add(SLOT, resealed(tmp_path, "b", 0.9), "ann")
    with pytest.raises(GateRefusedError, match="no shadow report for flange-anomaly@b"):
        promotion.promote(registry, SLOT, "b", "ada")
    with pytest.raises(GateRefusedError):
        promotion.promote(registry, SLOT, "b", "ada", override_reason="   ")
    assert registry.live(SLOT) is not None and registry.live(SLOT).version == "1"  # type: ignore[union-attr]
    change = promotion.promote(registry, SLOT, "b", "ada", override_reason="urgent fix")
    assert (change.retired.version, change.live.version, change.swapped) == ("1", "b", False)
    last = registry.audit(SLOT)[-1]
    assert last.actor == "ada" and last.action == "promote"
    assert last.reason.startswith("gate overridden: urgent fix (gate: no shadow report")


def test_a_shadow_of_another_version_stops_when_the_live_model_changes(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    registry.ensure_live(SLOT, SHIPPED / "model.onnx")
    registry.add(SLOT, resealed(tmp_path, "b", 0.9), "ann")
    registry.add(SLOT, resealed(tmp_path, "c", 0.8), "ann")
    registry.set_state(SLOT, "c", State.SHADOW, "quinn", action="shadow")
    registry.promote(SLOT, "b", "ada", "urgent")
    assert {v.version: v.state for v in registry.versions(SLOT)} == {
        "1": State.RETIRED,
        "b": State.LIVE,
        "c": State.CANDIDATE,
    }
    last = registry.audit(SLOT)[-1]
    assert (last.version, last.action, last.reason) == ("c", "unshadow", "b went live")


@pytest.mark.parametrize(
    ("good", "held_live", "held_candidate", "passes"),
    [
        (20, 0, 2, True),  # 10 % of 20 good parts: two more held back is the limit
        (20, 0, 3, False),
        (20, 20, 20, True),  # no worse than live
        (5, 0, 1, True),  # at least one part of slack
        (30, 1, 30, False),  # everything to REVIEW: nothing escapes, the line stops
    ],
)
def test_gate_refuses_a_candidate_that_holds_back_good_parts(
    good: int, held_live: int, held_candidate: int, passes: bool
) -> None:
    problems = check_gate(
        40,
        0,
        0,
        20,
        good_reviewed=good,
        held_good_live=held_live,
        held_good_candidate=held_candidate,
    )
    assert (problems == []) is passes, problems
    if not passes:
        assert problems[0].startswith(f"{held_candidate} of {good} QA-good part(s) held back")
