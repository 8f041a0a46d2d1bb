"""Teach on the line: collect good parts from the running station, fit, and shadow the result.

A session watches the parts the station judges after it starts (any verdict, no job error,
the recipe live at its start) and keeps a copy of each part's frame as the models' ROIs were
cut from it. The rule for what is fitted: a collected part counts only once it is confirmed
good, by an operator (POST /teach/parts/{id}/confirm) or by a QA label 'good' on its result;
a reject (or a QA label 'defect') keeps it out and frees its place, so collection goes on
until `wanted` parts are confirmed. Then, off the job path, the existing `fit-anomaly` code
fits the slot's detector on those frames (thresholds set on a seeded part kept apart), the
sealed package is added to the registry as a candidate and shadowed by the operator who
started the session. Every failure ends the session as `failed` with the reason; the
station's parts are never held up or lost by a session.
"""

from __future__ import annotations

import enum
import logging
import queue
import shutil
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cellinspect.entities import ImageU8, InspectedFrame, Task
from cellinspect.errors import CellInspectError, ConfigError, ModelError
from cellinspect.inference.manifest import load_manifest, sha256_file, write_manifest
from cellinspect.lifecycle import promotion
from cellinspect.lifecycle.registry import check_name
from cellinspect.sources.decode import decode_image_file
from cellinspect.storage.records import ReviewLabel
from cellinspect.training.anomaly_params import AnomalyFitParams
from cellinspect.training.dataset import Dataset, LabelledImage, RoiReader

if TYPE_CHECKING:
    from cellinspect.config import Recipe
    from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)

MIN_WANTED = 8  # fit-anomaly keeps a fifth apart for thresholds and needs 5 to fit on
MAX_WANTED = 500
POLL_S = 0.5  # how often QA labels on collected parts are looked up


class TeachState(enum.StrEnum):
    COLLECTING = "collecting"
    FITTING = "fitting"
    SHADOW = "shadow"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({TeachState.COLLECTING, TeachState.FITTING})


class PartStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class TeachError(ConfigError):
    """A teach request that cannot be done now (busy, unknown part, wrong state)."""


class TeachPartNotFoundError(TeachError):
    """The part is not one this session collected (or its frame is not kept)."""


class _CancelledError(Exception):
    """Raised from the fit's progress callback once the session is cancelled."""


@dataclass(slots=True)
class TeachPart:
    result_id: str
    part_id: int | None
    verdict: str
    score: float | None
    collected_at: datetime
    status: PartStatus = PartStatus.PENDING
    decided_by: str | None = None
    file: Path | None = None  # the saved frame, once written


@dataclass(slots=True)
class TeachStatus:
    """A snapshot for GET /teach (no server paths)."""

    session: str
    slot: str
    roi: str
    wanted: int
    operator: str
    state: TeachState
    collected: int
    confirmed: int
    rejected: int
    version: str | None
    message: str
    progress: float | None  # 0..1 while fitting
    started_at: datetime
    parts: list[TeachPart] = field(default_factory=list)


class FrameReader(RoiReader):
    """Reads frames the station already prepared (the recipe's preprocessing applied): ROI
    crop only, while the manifest records the recipe's preprocessing, as for an export."""

    def read(self, path: Path) -> ImageU8:
        return self._crop(decode_image_file(path))

    def __call__(self, image: ImageU8) -> ImageU8:
        return self._crop(image)


def find_backbone(model_file: Path) -> Path:
    """The backbone the slot's model was fitted on: models/<name>/<version> beside the model's
    own models folder, with the hash its manifest records."""
    recorded = load_manifest(model_file).provenance.get("backbone")
    if not isinstance(recorded, dict) or not recorded.get("name"):
        raise ModelError(f"{model_file.parent.name}: its manifest names no backbone to fit on")
    name, version = str(recorded["name"]), str(recorded.get("version", ""))
    for models_dir in (model_file.parent.parent.parent, Path("models")):
        candidate = models_dir / name / version / "model.onnx"
        if candidate.is_file() and sha256_file(candidate) == recorded.get("sha256"):
            return candidate
    raise ModelError(f"backbone {name}/{version} (with the recorded hash) not found")


def anomaly_slots(station: StationRuntime) -> list[str]:
    """The live recipe's slots whose model is an anomaly detector (what teach can fit)."""
    recipe = station.catalog[station.active_recipe].recipe
    slots = []
    for model in recipe.models:
        try:
            task = load_manifest(station.live_models.get(model.name, model.path)).task
        except CellInspectError:
            continue
        if task is Task.ANOMALY:
            slots.append(model.name)
    return slots


def pick_slot(station: StationRuntime, slot: str | None) -> str:
    """`slot`, or the live recipe's one anomaly slot when none is named."""
    if slot is not None:
        return slot
    found = anomaly_slots(station)
    if len(found) != 1:
        raise TeachError(f"teach: name the model slot to teach (anomaly slots: {found})")
    return found[0]


class TeachSession:
    """One teach run on a station; `start()` hooks it to the station's results."""

    def __init__(
        self,
        station: StationRuntime,
        slot: str | None,
        wanted: int,
        operator: str,
        *,
        roi: str | None = None,
        backbone: Path | None = None,
        params: AnomalyFitParams | None = None,
    ) -> None:
        if not MIN_WANTED <= wanted <= MAX_WANTED:
            raise TeachError(f"teach: ask for {MIN_WANTED} to {MAX_WANTED} good parts")
        slot = pick_slot(station, slot)
        if slot not in station.model_slots():
            raise TeachError(
                f"teach: model slot {slot!r} is not in the live recipe "
                f"(slots: {station.model_slots()})"
            )
        if station.store is None or station.settings is None:
            raise TeachError("teach: the station needs store.enabled (the registry is there)")
        if station.trusted_model_keys and station.teach_signing_key is None:
            raise TeachError(
                "teach: this station loads only signed models (trusted_model_keys) and has no "
                "teach_signing_key to sign what it teaches; add one to the station file"
            )
        entry = station.catalog[station.active_recipe]
        self.recipe: Recipe = entry.recipe
        rois = [r.name for r in self.recipe.rois]
        if roi is None and len(rois) != 1:
            raise TeachError(f"teach: the recipe has ROIs {rois}: choose one")
        if roi is not None and roi not in rois:
            raise TeachError(f"teach: the recipe has no ROI {roi!r} (ROIs: {rois})")
        self.roi = roi or rois[0]
        self.station = station
        self.slot = slot
        self.wanted = wanted
        self.operator = operator
        self.backbone = backbone
        self.params = params
        self.id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.version = check_name("version", f"teach-{self.id}")
        self.folder = station.settings.data_dir / "teach" / self.id
        self.started_at = datetime.now(UTC)
        self.state = TeachState.COLLECTING
        self.message = f"collecting: confirm {wanted} good part(s)"
        self.progress: float | None = None
        self.parts: dict[str, TeachPart] = {}
        self._recipe_sha = station.interface.inspector.recipe_sha256
        self._lock = threading.RLock()
        self._frames: queue.Queue[tuple[str, ImageU8]] = queue.Queue()
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._worker = threading.Thread(target=self._run, name="teach", daemon=True)
        self._previous_hook: Callable[[InspectedFrame], None] | None = None

    # ------------------------------------------------------------------ hooking on

    def start(self) -> TeachSession:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._previous_hook = self.station.extra_on_result
        self.station.extra_on_result = self._hook
        self._worker.start()
        log.info(
            "teach %s: %s wants %d good part(s) for %s",
            *(self.id, self.operator, self.wanted, self.slot),
        )
        return self

    def _hook(self, inspected: InspectedFrame) -> None:
        """On the job path: keep a reference to the frame, nothing slow; never raises."""
        try:
            self._offer(inspected)
        except Exception:
            log.exception("teach %s: a part could not be collected", self.id)
        if self._previous_hook is not None:
            self._previous_hook(inspected)

    def _offer(self, inspected: InspectedFrame) -> None:
        result = inspected.result
        if result.error is not None or inspected.image is None:
            return
        if result.recipe_sha256 != self._recipe_sha:
            return
        with self._lock:
            if self.state is not TeachState.COLLECTING or self._open_places() <= 0:
                return
            self.parts[result.result_id] = TeachPart(
                result_id=result.result_id,
                part_id=result.part_id,
                verdict=result.verdict.value,
                score=result.score,
                collected_at=datetime.now(UTC),
            )
        self._frames.put((result.result_id, inspected.image))
        self._wake.set()

    def _unhook(self) -> None:
        if self.station.extra_on_result == self._hook:
            self.station.extra_on_result = self._previous_hook

    def _open_places(self) -> int:
        kept = sum(p.status is not PartStatus.REJECTED for p in self.parts.values())
        return self.wanted - kept

    # ------------------------------------------------------------------ operator

    def decide(self, result_id: str, good: bool, who: str) -> TeachPart:
        """Confirm (good) or reject one collected part; a reject frees its place."""
        with self._lock:
            part = self.parts.get(result_id)
            if part is None:
                raise TeachPartNotFoundError(
                    f"teach: part {result_id} is not collected by this session"
                )
            if self.state is not TeachState.COLLECTING:
                raise TeachError(f"teach: the session is {self.state.value}, parts are final")
            part.status = PartStatus.CONFIRMED if good else PartStatus.REJECTED
            part.decided_by = who
        self._wake.set()
        return part

    def cancel(self, who: str) -> None:
        with self._lock:
            if self.state not in ACTIVE:
                raise TeachError(f"teach: the session is {self.state.value}, nothing to cancel")
            self._cancel.set()
            if self.state is TeachState.COLLECTING:
                self._finish(TeachState.CANCELLED, f"cancelled by {who}")
        self._wake.set()

    def frame_file(self, result_id: str) -> Path:
        with self._lock:
            part = self.parts.get(result_id)
        if part is None or part.file is None:
            raise TeachPartNotFoundError(f"teach: no frame kept for part {result_id}")
        return part.file

    def thumbnail(self, result_id: str) -> bytes:
        """The part's ROI as the detector will see it, PNG."""
        reader = FrameReader(self.recipe, self.roi)
        ok, png = cv2.imencode(".png", reader.read(self.frame_file(result_id)))
        if not ok:
            raise TeachError(f"teach: part {result_id} could not be encoded")
        return bytes(np.asarray(png).tobytes())

    def status(self) -> TeachStatus:
        with self._lock:
            parts = [
                TeachPart(
                    p.result_id,
                    p.part_id,
                    p.verdict,
                    p.score,
                    p.collected_at,
                    p.status,
                    p.decided_by,
                    p.file,
                )
                for p in self.parts.values()
            ]
            return TeachStatus(
                session=self.id,
                slot=self.slot,
                roi=self.roi,
                wanted=self.wanted,
                operator=self.operator,
                state=self.state,
                collected=len(parts),
                confirmed=sum(p.status is PartStatus.CONFIRMED for p in parts),
                rejected=sum(p.status is PartStatus.REJECTED for p in parts),
                version=self.version if self.state is TeachState.SHADOW else None,
                message=self.message,
                progress=self.progress,
                started_at=self.started_at,
                parts=parts,
            )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def wait(self, timeout: float) -> bool:
        """Wait for the worker to end (tests, station stop); True if it did."""
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # ------------------------------------------------------------------ worker

    def _finish(self, state: TeachState, message: str) -> None:
        with self._lock:
            self.state = state
            self.message = message
        self._unhook()
        log.info("teach %s: %s (%s)", self.id, state.value, message)

    def _run(self) -> None:
        try:
            if not self._collect():
                return
            self._fit_and_shadow()
        except _CancelledError:
            self._finish(TeachState.CANCELLED, "cancelled while fitting")
        except CellInspectError as err:
            self._finish(TeachState.FAILED, str(err))
        except Exception as err:  # a session never takes the station down with it
            log.exception("teach %s: failed", self.id)
            self._finish(TeachState.FAILED, f"{type(err).__name__}: {err}")
        finally:
            self._unhook()

    def _collect(self) -> bool:
        """Save frames and read QA labels until `wanted` parts are confirmed; False if the
        session ended otherwise (cancelled, station stopped)."""
        while True:
            self._wake.wait(POLL_S)
            self._wake.clear()
            self._save_frames()
            if self._cancel.is_set():
                return False
            if self.station.stopped:
                self._finish(TeachState.FAILED, "the station stopped before enough parts")
                return False
            self._read_reviews()
            with self._lock:
                confirmed = [p for p in self.parts.values() if p.status is PartStatus.CONFIRMED]
                if len(confirmed) >= self.wanted and all(p.file for p in confirmed):
                    self.state = TeachState.FITTING
                    self.message = f"fitting on {len(confirmed)} confirmed good part(s)"
                    self.progress = 0.0
                    self._unhook()
                    return True
                pending = sum(p.status is PartStatus.PENDING for p in self.parts.values())
                self.message = (
                    f"collecting: {len(confirmed)} of {self.wanted} confirmed good, "
                    f"{pending} waiting for confirmation"
                )

    def _save_frames(self) -> None:
        while True:
            try:
                result_id, image = self._frames.get_nowait()
            except queue.Empty:
                return
            path = self.folder / f"{result_id}.png"
            if not cv2.imwrite(str(path), image):
                log.error("teach %s: frame of %s not written", self.id, result_id)
                continue
            with self._lock:
                self.parts[result_id].file = path

    def _read_reviews(self) -> None:
        """A QA label on a pending part's result decides it (good confirms, defect rejects)."""
        store = self.station.store
        if store is None:
            return
        with self._lock:
            pending = [p.result_id for p in self.parts.values() if p.status is PartStatus.PENDING]
        for result_id in pending:
            try:
                review = store.get(result_id).review
            except Exception:  # not in the store yet, or the store is away: ask again later
                continue
            if review is None:
                continue
            with self._lock:
                part = self.parts[result_id]
                if part.status is PartStatus.PENDING:
                    good = review.label is ReviewLabel.GOOD
                    part.status = PartStatus.CONFIRMED if good else PartStatus.REJECTED
                    part.decided_by = f"{review.reviewer} (QA label)"

    def _stage(self, what: str, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _CancelledError
        with self._lock:
            self.message = f"fitting: {what} {done}/{total}"
            self.progress = done / total if total else None

    def _fit_params(self, model_file: Path) -> AnomalyFitParams:
        """The live model's coreset and projection, so the new one is its like."""
        if self.params is not None:
            return self.params
        raw = load_manifest(model_file).provenance.get("parameters")
        given: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return AnomalyFitParams(
            coreset_size=int(given.get("coreset_size", 2000)),
            projection_dim=given.get("projection_dim", 96),
        )

    def _fit_and_shadow(self) -> None:
        # Imported here: the fitting code pulls in scikit-learn, SciPy and onnx (seconds of
        # start-up), and every station with a store imports this module through its API.
        from cellinspect.training.fit_calibration import fit_anomaly_calibrated

        registry = self.station.model_registry()
        live = registry.live(self.slot)
        model_file = live.model_file if live is not None else self._recipe_model()
        backbone = self.backbone or find_backbone(self._recipe_model())
        with self._lock:
            confirmed = [
                LabelledImage(p.file, "good")
                for p in self.parts.values()
                if p.status is PartStatus.CONFIRMED and p.file is not None
            ]
        out_dir = self.folder / "package"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir()
        fitted = fit_anomaly_calibrated(
            Dataset(self.folder, confirmed),
            None,
            FrameReader(self.recipe, self.roi),
            backbone,
            out_dir,
            self.slot,
            self.version,
            self._fit_params(model_file),
            stage=self._stage,
        )
        if self._cancel.is_set():
            raise _CancelledError
        if self.station.teach_signing_key is not None:
            model_path = fitted.report.model_path
            write_manifest(
                load_manifest(model_path),
                model_path,
                sealed_by=self.operator,
                private_key=self.station.teach_signing_key,
            )
        with self._lock:
            self.message = "adding to the registry and starting the shadow run"
        reason = (
            f"taught on the line: {fitted.report.images_used} confirmed good part(s) fitted, "
            f"{fitted.calibration_good} kept apart for thresholds (session {self.id})"
        )
        registry.add(
            self.slot,
            out_dir,
            self.operator,
            version=self.version,
            trusted_keys=self.station.trusted_model_keys,
            reason=reason,
        )
        promotion.shadow(registry, self.slot, self.version, self.operator, self.station)
        choice = fitted.thresholds
        with self._lock:
            self.progress = 1.0
        self._finish(
            TeachState.SHADOW,
            f"{self.slot}@{self.version} judges in shadow (review_at {choice.review_at:.3f}, "
            f"fail_at {choice.fail_at:.3f})",
        )

    def _recipe_model(self) -> Path:
        return next(m.path for m in self.recipe.models if m.name == self.slot)


class TeachManager:
    """One teach session at a time per station."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.session: TeachSession | None = None

    def start(self, make: Callable[[], TeachSession]) -> TeachSession:
        with self._lock:
            if self.session is not None and self.session.active:
                raise TeachError(
                    f"teach: session {self.session.id} is {self.session.state.value}; "
                    "cancel it first (one teach session at a time)"
                )
            self.session = make().start()
            return self.session

    def current(self) -> TeachSession:
        if self.session is None:
            raise TeachError("teach: no teach session on this station yet")
        return self.session


_MANAGERS: weakref.WeakKeyDictionary[object, TeachManager] = weakref.WeakKeyDictionary()
_MANAGERS_LOCK = threading.Lock()


def manager_for(station: object) -> TeachManager:
    """The station's teach manager (made on first use)."""
    with _MANAGERS_LOCK:
        manager = _MANAGERS.get(station)
        if manager is None:
            manager = _MANAGERS[station] = TeachManager()
        return manager
