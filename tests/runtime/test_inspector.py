"""Inspector: verdicts from real sessions, fail-safe for every failure, full provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cellinspect.entities import FrameFailure, Verdict
from cellinspect.inference.manifest import load_manifest
from cellinspect.runtime.inspector import Inspector
from cellinspect.sources.registry import source_for_paths
from tests.runtime.conftest import grey_part


def test_good_and_scratched_parts(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"], make_overlays=True)
    good = inspector.inspect_image(grey_part(), name="good.png").result
    bad_frame = inspector.inspect_image(grey_part(scratch=True), name="bad.png", part_id=7)
    bad = bad_frame.result
    assert good.verdict is Verdict.PASS and good.reasons == ()
    assert bad.verdict is Verdict.FAIL
    assert bad.part_id == 7
    assert "brightness: anomaly score" in bad.reasons[0]
    assert bad.rois[0].roi == "centre"
    assert bad.score is not None and bad.score > 0.5
    assert bad_frame.overlay is not None and bad_frame.overlay.shape == (64, 64, 3)
    assert not np.array_equal(bad_frame.overlay, bad_frame.image)


def test_result_records_provenance(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    result = inspector.inspect_image(grey_part()).result
    assert result.recipe_name == "grey-parts"
    assert result.recipe_sha256 == hashlib.sha256(station["recipe"].read_bytes()).hexdigest()
    (model,) = result.models
    seal = load_manifest(station["model"]).seal  # the package: model bytes + manifest fields
    assert seal is not None and model.sha256 == seal.package_sha256
    assert {"preprocess", "model_input", "inference", "postprocess", "decision", "total"} <= set(
        result.timings_ms
    )
    assert result.to_dict()["verdict"] == "pass"


@pytest.mark.parametrize(("recipe", "expected"), [("recipe", "fail"), ("recipe_review", "review")])
def test_unreadable_frames_get_the_fail_safe_verdict(
    station: dict[str, Path], recipe: str, expected: str
) -> None:
    inspector = Inspector.from_recipe(station[recipe])
    items = list(source_for_paths([station["images"]]).frames())
    results = [inspector.inspect(item).result for item in items]
    assert len(results) == 5  # nothing dropped
    by_name = {Path(r.path or "").name: r for r in results}
    for name in ("c_empty.png", "d_text.png"):
        assert by_name[name].verdict.value == expected
        assert by_name[name].error is not None and "frame not read" in by_name[name].error
    assert by_name["a_good.png"].verdict is Verdict.PASS


def test_missed_deadline_is_never_pass(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe_deadline"])
    result = inspector.inspect_image(grey_part()).result
    assert result.verdict is Verdict.FAIL
    assert result.error is not None and "deadline missed" in result.error


def test_roi_outside_frame_is_fail_safe(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    small = np.full((20, 20, 3), 128, dtype=np.uint8)
    result = inspector.inspect_image(small, name="small.png").result
    assert result.verdict is Verdict.FAIL
    assert result.error is not None and "centre" in result.error


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_wrong_arrays_from_the_api_are_fail_safe(station: dict[str, Path], bad: np.ndarray) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    result = inspector.inspect_image(bad).result  # type: ignore[arg-type]
    assert result.verdict is Verdict.FAIL and result.error


def test_frame_failure_keeps_part_identity(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    failure = FrameFailure(frame_id=3, source="cam", reason="grab failed", part_id=42, encoder=9)
    result = inspector.inspect(failure).result
    assert (result.part_id, result.encoder, result.verdict) == (42, 9, Verdict.FAIL)


def test_batch_gives_the_same_verdicts_and_scores_as_one_by_one(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    items = list(source_for_paths([station["images"]]).frames())
    single = [inspector.inspect(item).result for item in items]
    batched = [r.result for r in inspector.inspect_batch(items)]
    assert [r.verdict for r in batched] == [r.verdict for r in single]
    assert [r.path for r in batched] == [r.path for r in single]
    for a, b in zip(single, batched, strict=True):
        assert (
            a.score == pytest.approx(b.score, abs=1e-5) if a.score is not None else b.score is None
        )
    assert inspector.inspect_batch([]) == []


def test_a_model_fitted_on_other_preprocessing_is_refused_at_load(
    station: dict[str, Path],
) -> None:
    """Fitted on blurred parts, the model must not judge the recipe's unblurred ones."""
    from cellinspect.config import BlurOp
    from cellinspect.errors import ConfigError
    from cellinspect.inference.manifest import load_manifest, write_manifest
    from cellinspect.inference.preprocess_contract import preprocess_record

    model = station["model"]
    manifest = load_manifest(model)
    write_manifest(manifest.model_copy(update={"preprocess": preprocess_record([])}), model)
    Inspector.from_recipe(station["recipe"])  # recorded and the same: loads
    write_manifest(
        manifest.model_copy(update={"preprocess": preprocess_record([BlurOp(kernel=5)])}), model
    )
    with pytest.raises(
        ConfigError,
        match=r"model 'brightness'.*blur\(kernel=5\), but "
        r"recipe 'grey-parts' applies no preprocessing",
    ):
        Inspector.from_recipe(station["recipe"])
    blurred = station["recipe"].read_text() + "preprocess:\n  - {op: blur, kernel: 5}\n"
    station["recipe"].write_text(blurred)
    assert Inspector.from_recipe(station["recipe"]).recipe.preprocess == [BlurOp(kernel=5)]


def test_validate_reports_a_model_fitted_on_other_preprocessing(station: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from cellinspect.cli import app
    from cellinspect.config import StretchOp
    from cellinspect.inference.manifest import load_manifest, write_manifest
    from cellinspect.inference.preprocess_contract import preprocess_record

    recipe = str(station["recipe"])
    assert CliRunner().invoke(app, ["validate", recipe]).exit_code == 0
    model = station["model"]
    stretched = preprocess_record([StretchOp()])
    write_manifest(load_manifest(model).model_copy(update={"preprocess": stretched}), model)
    result = CliRunner().invoke(app, ["validate", recipe])
    assert result.exit_code == 1
    assert "models[0] (brightness): model 'brightness'" in result.output
    assert "applies no preprocessing" in result.output


def test_a_model_fitted_on_other_roi_crops_is_refused_at_load_and_by_validate(
    station: dict[str, Path],
) -> None:
    """Fitted on 48x48 crops, the model must not judge 56x56 ones (resized, they shrink the
    part); moving the ROI is fine."""
    from typer.testing import CliRunner

    from cellinspect.cli import app
    from cellinspect.errors import ConfigError
    from cellinspect.inference.manifest import load_manifest, write_manifest

    model, recipe = station["model"], station["recipe"]
    write_manifest(load_manifest(model).model_copy(update={"roi_size": [48, 48]}), model)
    original = recipe.read_text()
    recipe.write_text(original.replace("x: 8, y: 8,", "x: 4, y: 6,"))
    Inspector.from_recipe(recipe)  # moved, same size: loads
    recipe.write_text(original.replace("width: 48, height: 48", "width: 56, height: 56"))
    with pytest.raises(
        ConfigError,
        match=r"model 'brightness' v1 was fitted on 48x48 px ROI crops, but recipe "
        r"'grey-parts' ROI 'centre' is 56x56 px",
    ):
        Inspector.from_recipe(recipe)
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 1
    assert "models[0] (brightness): model 'brightness' v1 was fitted on 48x48" in result.output


def test_a_roi_fitted_model_on_whole_frames_of_another_size_is_never_pass(
    station: dict[str, Path],
) -> None:
    """Without ROIs the frame's size is known only per frame: a mismatch there is the
    fail-safe verdict with the reason, never a score from a rescaled part."""
    from cellinspect.inference.manifest import load_manifest, write_manifest

    model, recipe = station["model"], station["recipe"]
    whole = recipe.read_text().replace(
        "rois:\n  - {name: centre, x: 8, y: 8, width: 48, height: 48}\n", ""
    )
    assert "rois" not in whole
    recipe.write_text(whole)
    write_manifest(load_manifest(model).model_copy(update={"roi_size": [64, 64]}), model)
    assert Inspector.from_recipe(recipe).inspect_image(grey_part()).result.verdict is Verdict.PASS
    write_manifest(load_manifest(model).model_copy(update={"roi_size": [48, 48]}), model)
    result = Inspector.from_recipe(recipe).inspect_image(grey_part()).result
    assert result.verdict is Verdict.FAIL
    assert result.error is not None
    assert (
        "fitted on 48x48 px ROI crops, but recipe 'grey-parts' has no ROIs, so its whole "
        "frame is 64x64 px"
    ) in result.error
