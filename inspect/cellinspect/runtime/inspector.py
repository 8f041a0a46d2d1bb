"""The inspector: one loaded recipe that turns a frame into a verdict, timed stage by stage.

Everything that can go wrong for one part (unreadable frame, preprocessing error, model error,
missed deadline) becomes a fail-safe result with the reason, never an exception out of
`inspect` and never PASS.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cellinspect.calibration.camera_file import CameraCalibration, load_camera_calibration
from cellinspect.calibration.handeye import load_handeye_transform
from cellinspect.calibration.pick import PickLocator, PickPose, board_to_camera, check_eye_to_hand
from cellinspect.calibration.plane import PlaneCalibration, load_plane_calibration
from cellinspect.config import CameraSource, Recipe, SyntheticSource, load_recipe, recipe_sha256
from cellinspect.datagen.camera import DEFAULT_CAMERA
from cellinspect.decision.rules import (
    PartDecision,
    ResolvedThresholds,
    decide_part,
    decide_roi,
    fail_safe_decision,
    resolve_thresholds,
)
from cellinspect.entities import (
    Frame,
    FrameFailure,
    ImageU8,
    InspectedFrame,
    InspectionResult,
    ModelOutput,
    RoiDecision,
    SourceItem,
    Verdict,
)
from cellinspect.errors import CellInspectError, ConfigError
from cellinspect.inference.preprocess_contract import check_recipe_fits, check_roi_size
from cellinspect.inference.runner import ModelRunner, SessionOptions, Tensor
from cellinspect.inference.shared_trunk import SharedTrunk, ShareRefusedError, backbone_sha256
from cellinspect.preprocess.chain import PreprocessChain, build_chain, roi_crops
from cellinspect.runtime.measuring import MEASURE_ROI, Measurer, station_plane

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Runs(Protocol):
    """A bare session.run on a prepared batch: a model's, or a shared trunk's."""

    def run(self, batch: Tensor) -> object: ...


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which ROIs each model looks at, fixed once per recipe."""

    runner: ModelRunner
    roi_names: tuple[str, ...]
    input_key: str  # equal for models that take the same tensor


@dataclass(frozen=True, slots=True)
class _Unit:
    """What one session.run serves: one model, or several models on one shared trunk."""

    plans: tuple[_Plan, ...]
    trunk: SharedTrunk | None = None

    @property
    def name(self) -> str:
        return self.trunk.name if self.trunk is not None else self.plans[0].runner.name

    @property
    def batch_limit(self) -> int | None:
        return self.trunk.batch_limit if self.trunk else self.plans[0].runner.batch_limit

    def run(self, batch: Tensor) -> list[dict[str, npt.NDArray[np.float32]]]:
        """Raw outputs per plan, from one session.run."""
        if self.trunk is not None:
            return self.trunk.run_all(batch)
        return [self.plans[0].runner.run(batch)]


def shared_trunks(
    runners: Sequence[ModelRunner], recipe: Recipe, options: SessionOptions
) -> list[SharedTrunk]:
    """Merge the models that take the same tensor from the same ROIs and were fitted on the
    same backbone; a group that cannot share (and why) is logged and runs its own graphs."""
    groups: dict[tuple[str, tuple[str, ...]], list[ModelRunner]] = {}
    for runner in runners:
        key = (runner.manifest.input.model_dump_json(), _rois_of(recipe, runner.name))
        groups.setdefault(key, []).append(runner)
    trunks = []
    for group in groups.values():
        by_backbone: dict[str | None, list[ModelRunner]] = {}
        for runner in group:
            by_backbone.setdefault(backbone_sha256(runner), []).append(runner)
        if len(by_backbone) > 1:
            log.info(
                "no shared trunk across %s: their backbones differ (%s)",
                [r.name for r in group],
                ", ".join(f"{r.name}: {str(backbone_sha256(r))[:12]}" for r in group),
            )
        for sha, members in by_backbone.items():
            if sha is None or len(members) < 2:
                continue
            try:
                trunk = SharedTrunk.build(members, options)
            except ShareRefusedError as why:
                log.warning("models %s run their full graphs: %s", [r.name for r in members], why)
                continue
            log.info(
                "models %s share one trunk pass (%d nodes once)", trunk.name, trunk.shared_nodes
            )
            trunks.append(trunk)
    return trunks


def _source_frame_size(recipe: Recipe) -> tuple[int, int] | None:
    """The frame size a source promises before the first frame, if it promises one."""
    source = recipe.source
    if isinstance(source, CameraSource) and source.width and source.height:
        return source.width, source.height
    if isinstance(source, SyntheticSource):
        return DEFAULT_CAMERA.width, DEFAULT_CAMERA.height
    return None


def _rois_of(recipe: Recipe, model: str) -> tuple[str, ...]:
    """The ROIs a model judges; a recipe without ROIs judges the whole frame."""
    if not recipe.rois:
        return ("frame",)
    return tuple(r.name for r in recipe.rois if r.models is None or model in r.models)


class Inspector:
    """A recipe loaded into memory: preprocessing chain, verified models, thresholds."""

    def __init__(
        self,
        recipe: Recipe,
        recipe_sha: str,
        runners: Sequence[ModelRunner],
        calibration: CameraCalibration | None = None,
        make_overlays: bool = False,
        plane: PlaneCalibration | None = None,
        camera_to_base: F64 | None = None,
        trunks: Sequence[SharedTrunk] = (),
    ) -> None:
        self.recipe = recipe
        self.recipe_sha256 = recipe_sha
        self.calibration = calibration
        self.make_overlays = make_overlays
        self.chain: PreprocessChain = build_chain(recipe.preprocess, calibration)
        self.plane = plane
        self.measurer: Measurer | None = None
        self.picker: PickLocator | None = None
        if plane is not None:
            if calibration is None:
                raise ConfigError("a plane calibration needs the camera calibration too")
            grid_plane = station_plane(plane, calibration, self.chain)
            self.picker = PickLocator(
                plane=grid_plane,
                pose=board_to_camera(plane, calibration),
                camera_to_base=camera_to_base,
                height_mm=recipe.part_height_mm,
            )
            if recipe.measurements is not None:
                self.measurer = Measurer(recipe.measurements, grid_plane, recipe.decision.fail_safe)
        self.runners = list(runners)
        for runner in self.runners:
            check_recipe_fits(runner.manifest, recipe, runner.name)
        overrides = recipe.decision.thresholds
        judges = {m.name: m.judge for m in recipe.models}
        self.thresholds: dict[str, ResolvedThresholds] = {
            r.name: resolve_thresholds(
                r.name, r.manifest, overrides.get(r.name), judges.get(r.name, True)
            )
            for r in self.runners
        }
        self._plans = [
            _Plan(
                runner=runner,
                roi_names=_rois_of(recipe, runner.name),
                input_key=runner.manifest.input.model_dump_json(),
            )
            for runner in self.runners
        ]
        self.trunks = list(trunks)
        self._units = self._make_units()
        self._frame_counter = 0

    @classmethod
    def from_recipe(
        cls,
        path: Path | str,
        make_overlays: bool = False,
        recipe: Recipe | None = None,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> Inspector:
        """Load recipe, calibration and models; a bad file fails here, before any part."""
        recipe_path = Path(path)
        recipe = recipe or load_recipe(recipe_path)
        calibration = load_camera_calibration(recipe.calibration) if recipe.calibration else None
        if calibration is not None:
            size = _source_frame_size(recipe)
            if size is not None:
                calibration.check_fits(*size, what=f"recipe's {recipe.source.type} source")
        plane = (
            load_plane_calibration(recipe.plane_calibration) if recipe.plane_calibration else None
        )
        camera_to_base = None
        if recipe.handeye_calibration is not None:
            mode, transform = load_handeye_transform(recipe.handeye_calibration)
            check_eye_to_hand(mode.value, recipe.handeye_calibration)
            camera_to_base = transform.matrix
        options = SessionOptions.from_runtime(recipe.runtime)
        runners = [ModelRunner.load(m.name, m.path, options, trusted_keys) for m in recipe.models]
        trunks = shared_trunks(runners, recipe, options) if recipe.runtime.share_trunk else []
        return cls(
            recipe,
            recipe_sha256(recipe_path),
            runners,
            calibration,
            make_overlays,
            plane,
            camera_to_base,
            trunks,
        )

    def _make_units(self) -> list[_Unit]:
        """One unit per shared trunk (where its first model stands), one per other model."""
        member_of = {id(r): t for t in self.trunks for r in t.runners}
        units: list[_Unit] = []
        placed: set[int] = set()
        for plan in self._plans:
            trunk = member_of.get(id(plan.runner))
            if trunk is None:
                units.append(_Unit((plan,)))
            elif id(trunk) not in placed:
                placed.add(id(trunk))
                members = tuple(p for p in self._plans if member_of.get(id(p.runner)) is trunk)
                units.append(_Unit(members, trunk))
        return units

    @property
    def recipe_name(self) -> str:
        return self.recipe.name

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames the recipe's source delivers, when it says."""
        return _source_frame_size(self.recipe)

    # ------------------------------------------------------------------ public entry points

    def inspect(self, item: SourceItem) -> InspectedFrame:
        """Judge one source item; never raises for the item's content."""
        return self.inspect_batch([item])[0]

    def inspect_batch(self, items: Sequence[SourceItem]) -> list[InspectedFrame]:
        """Judge several items with one session.run per model; results in the same order."""
        results: dict[int, InspectedFrame] = {}
        frames: list[tuple[int, Frame]] = []
        for i, item in enumerate(items):
            if isinstance(item, FrameFailure):
                results[i] = self._failure(item, f"frame not read: {item.reason}", {})
            else:
                frames.append((i, item))
        if frames:
            judged = self._inspect_frames([f for _, f in frames])
            results.update({i: r for (i, _), r in zip(frames, judged, strict=True)})
        return [results[i] for i in range(len(items))]

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        """Judge an image handed over by the API or the PLC trigger path."""
        frame_id = self._next_frame_id()
        try:
            frame = Frame(
                image=image,
                frame_id=frame_id,
                source="api",
                path=name,
                part_id=part_id,
                encoder=encoder,
            )
        except (TypeError, ValueError) as err:
            failure = FrameFailure(
                frame_id=frame_id, source="api", reason=str(err), path=name, part_id=part_id
            )
            return self.inspect(failure)
        return self._inspect_frames([frame])[0]

    def model_batches(self, image: ImageU8) -> list[tuple[Runs, Tensor]]:
        """The exact tensors each session gets for this image (for benchmarks of session.run):
        one per shared trunk, one per model that runs alone."""
        crops = dict(roi_crops(self.chain(image), self.recipe.rois))
        batches: list[tuple[Runs, Tensor]] = []
        for unit in self._units:
            runner = unit.plans[0].runner
            names = [n for n in unit.plans[0].roi_names if n in crops]
            if names:
                batches.append((unit, runner.prepare([crops[n] for n in names])))
        return batches

    def close(self) -> None:
        """Release the sessions (they hold threads and memory)."""
        self.runners.clear()
        self._plans.clear()
        self.trunks.clear()
        self._units.clear()

    # ------------------------------------------------------------------ internals

    def _next_frame_id(self) -> int:
        self._frame_counter += 1
        return self._frame_counter - 1

    def _inspect_frames(self, frames: Sequence[Frame]) -> list[InspectedFrame]:
        """Judge frames together: one session.run per model for all their ROIs.

        Each frame's timings are its share of the batch's shared stages; its `total` is the
        whole batch's time, which is what the part waited.
        """
        start = time.perf_counter()
        done: dict[int, InspectedFrame] = {}
        prepared: dict[int, ImageU8] = {}
        crops: dict[int, dict[str, ImageU8]] = {}
        pre_ms: dict[int, float] = {}
        for i, frame in enumerate(frames):
            t = time.perf_counter()
            try:
                prepared[i] = self.chain(frame.image)
                crops[i] = dict(roi_crops(prepared[i], self.recipe.rois))
            except CellInspectError as err:
                log.warning("frame %s from %s: %s", frame.frame_id, frame.source, err)
                done[i] = self._failure(frame, str(err), {}, prepared.pop(i, None))
            pre_ms[i] = _ms_since(t)
        shared: dict[str, float] = {}
        try:
            outputs = self._run_models(crops, shared)
            t = time.perf_counter()
            decisions = {
                i: [decide_roi(roi, outputs[i].get(roi, []), self.thresholds) for roi in crops[i]]
                for i in crops
            }
            shared["decision"] = _ms_since(t)
            if self.measurer is not None:
                t = time.perf_counter()
                for i in decisions:
                    decisions[i].append(self.measurer(prepared[i]))
                shared["measure"] = _ms_since(t)
        except CellInspectError as err:
            log.warning("batch of %d frames: %s", len(crops), err)
            decisions, outputs = {}, {}
            for i in crops:
                done[i] = self._failure(frames[i], str(err), {}, prepared[i])
        except Exception as err:  # a bug must still not turn into PASS or stop the line
            log.exception("batch of %d frames: unexpected error", len(crops))
            decisions, outputs = {}, {}
            for i in crops:
                reason = f"internal error: {type(err).__name__}: {err}"
                done[i] = self._failure(frames[i], reason, {}, prepared[i])
        share = 1.0 / max(1, len(decisions))
        deadline = self.recipe.runtime.deadline_ms
        for i, rois in decisions.items():
            frame = frames[i]
            timings = {"preprocess": pre_ms[i], **{k: v * share for k, v in shared.items()}}
            elapsed = _ms_since(start)
            if elapsed > deadline:
                reason = f"deadline missed: {elapsed:.1f} ms > {deadline:.0f} ms"
                done[i] = self._failure(frame, reason, timings, prepared[i], rois)
                continue
            t = time.perf_counter()
            decision = decide_part(rois)
            pick = self._pick(prepared[i], rois) if decision.verdict is not Verdict.PASS else None
            result = self._result(frame, decision, rois, timings, pick=pick)
            timings["result"] = _ms_since(t)
            overlay = None
            if self.make_overlays:
                t = time.perf_counter()
                overlay = self._overlay(prepared[i], outputs[i])
                timings["overlay"] = _ms_since(t)
            timings["total"] = _ms_since(start)
            done[i] = InspectedFrame(result=result, image=prepared[i], overlay=overlay)
        return [done[i] for i in range(len(frames))]

    def _run_models(
        self, crops: dict[int, dict[str, ImageU8]], timings: dict[str, float]
    ) -> dict[int, dict[str, list[tuple[str, ModelOutput]]]]:
        """Run every model once over all (frame, ROI) pairs it judges; outputs per frame/ROI."""
        per: dict[int, dict[str, list[tuple[str, ModelOutput]]]] = {
            i: {roi: [] for roi in rois} for i, rois in crops.items()
        }
        for key in ("model_input", "inference", "postprocess"):
            timings.setdefault(key, 0.0)
        prepared: dict[tuple[str, tuple[tuple[int, str], ...]], Tensor] = {}
        for unit in self._units:
            first_plan = unit.plans[0]
            pairs = tuple((i, n) for i in crops for n in first_plan.roi_names if n in crops[i])
            if not pairs:
                continue
            if not self.recipe.rois:  # whole frames: their size is known only now
                for plan in unit.plans:
                    for i, _ in pairs:
                        height, width = crops[i]["frame"].shape[:2]
                        where = f"recipe '{self.recipe.name}' has no ROIs, so its whole frame"
                        check_roi_size(plan.runner.manifest, [width, height], where)
            t = time.perf_counter()
            # Models on one backbone share an input spec: prepare the tensor once for all.
            batch_key = (first_plan.input_key, pairs)
            batch = prepared.get(batch_key)
            if batch is None:
                batch = prepared[batch_key] = first_plan.runner.prepare(
                    [crops[i][n] for i, n in pairs]
                )
            timings["model_input"] += _ms_since(t)
            limit = unit.batch_limit or len(pairs)
            outs: list[list[ModelOutput]] = [[] for _ in unit.plans]
            run_ms = 0.0
            for first in range(0, len(pairs), limit):
                t = time.perf_counter()
                raws = unit.run(batch[first : first + limit])
                run_ms += _ms_since(t)
                t = time.perf_counter()
                for plan, raw, into in zip(unit.plans, raws, outs, strict=True):
                    into.extend(plan.runner.postprocess(raw))
                timings["postprocess"] += _ms_since(t)
            timings["inference"] += run_ms
            timings[f"inference:{unit.name}"] = run_ms
            for plan, plan_outs in zip(unit.plans, outs, strict=True):
                for (i, roi_name), out in zip(pairs, plan_outs, strict=True):
                    per[i][roi_name].append((plan.runner.name, out))
        return per

    def _result(
        self,
        item: Frame | FrameFailure,
        decision: PartDecision,
        rois: Sequence[RoiDecision],
        timings: dict[str, float],
        error: str | None = None,
        pick: PickPose | None = None,
    ) -> InspectionResult:
        cal = self.calibration
        return InspectionResult(
            result_id=uuid.uuid4().hex,
            frame_id=item.frame_id,
            source=item.source,
            verdict=decision.verdict,
            reasons=decision.reasons,
            captured_wall=item.captured_wall.astimezone(UTC)
            if item.captured_wall.tzinfo
            else datetime.now(UTC),
            recipe_name=self.recipe.name,
            recipe_sha256=self.recipe_sha256,
            defect_class=decision.defect_class,
            rois=tuple(rois),
            models=tuple(r.ref for r in self.runners),
            timings_ms=timings,
            path=item.path,
            part_id=item.part_id,
            encoder=item.encoder,
            calibration_id=cal.calibration_id if cal else None,
            calibration_sha256=cal.sha256 if cal else None,
            plane_calibration_id=self.plane.calibration_id if self.plane else None,
            plane_calibration_sha256=self.plane.sha256 if self.plane else None,
            pick_x_mm=pick.x_mm if pick else None,
            pick_y_mm=pick.y_mm if pick else None,
            pick_angle_deg=pick.angle_deg if pick else None,
            pick_frame=pick.frame if pick else None,
            error=error,
        )

    def _pick(self, prepared: ImageU8, rois: Sequence[RoiDecision]) -> PickPose | None:
        """Where a rejected part lies: the measured centre if measured, else the largest blob."""
        if self.picker is None:
            return None
        measured = next((r.scores for r in rois if r.roi == MEASURE_ROI), {})
        x = measured.get(f"{MEASURE_ROI}:centre_x_mm")
        y = measured.get(f"{MEASURE_ROI}:centre_y_mm")
        if x is not None and y is not None:
            return self.picker.from_plane_mm(x, y)
        return self.picker.locate(prepared)

    def _failure(
        self,
        item: Frame | FrameFailure,
        reason: str,
        timings: dict[str, float],
        prepared: ImageU8 | None = None,
        rois: Sequence[RoiDecision] = (),
    ) -> InspectedFrame:
        decision = fail_safe_decision(self.recipe.decision.fail_safe, reason)
        # Keep the ROI scores for the record, but the verdict is the fail-safe one.
        kept = tuple(
            RoiDecision(r.roi, decision.verdict, r.reasons, r.defect_class, r.scores) for r in rois
        )
        result = self._result(item, decision, kept, timings, error=reason)
        image = prepared if prepared is not None else getattr(item, "image", None)
        return InspectedFrame(result=result, image=image, overlay=None)

    def _overlay(
        self, prepared: ImageU8, outputs: dict[str, list[tuple[str, ModelOutput]]]
    ) -> ImageU8 | None:
        """Blend each ROI's anomaly map: untinted below 3/4 of review_at, full red at fail_at."""
        overlay = prepared.copy()
        drew = False
        boxes = {r.name: (r.x, r.y, r.width, r.height) for r in self.recipe.rois}
        h, w = prepared.shape[:2]
        for roi_name, outs in outputs.items():
            x, y, bw, bh = boxes.get(roi_name, (0, 0, w, h))
            for model_name, out in outs:
                if out.anomaly_map is None:
                    continue
                thr = self.thresholds[model_name]
                fail_at = thr.fail_at or 1.0
                floor = 0.75 * (thr.review_at or fail_at)  # normal texture stays untinted
                heat = cv2.resize(out.anomaly_map, (bw, bh), interpolation=cv2.INTER_LINEAR)
                span = max(fail_at - floor, 1e-6)
                level = np.clip((heat - floor) / span * 255.0, 0, 255).astype(np.uint8)
                colour = cv2.applyColorMap(level, cv2.COLORMAP_JET)
                region = overlay[y : y + bh, x : x + bw]
                alpha = (level.astype(np.float32) / 255.0)[..., None] * 0.6
                blended = region * (1.0 - alpha) + colour * alpha
                overlay[y : y + bh, x : x + bw] = blended.astype(np.uint8)
                drew = True
        return overlay if drew else None


def verdict_counts(results: Sequence[InspectionResult]) -> dict[Verdict, int]:
    """Count results per verdict (every verdict present, zero when unseen)."""
    counts = dict.fromkeys(Verdict, 0)
    for r in results:
        counts[r.verdict] += 1
    return counts
