"""Shadow runs: a candidate model judges the live parts beside the live model, for the record only.

The job path hands each part to `ShadowRunner.offer` after its live verdict is posted and
dispatched, with the raw frame, when the part was accepted and its deadline. `offer` never
blocks and never raises: it queues the frame on a bounded queue, or records at once why it
will not be judged. One worker thread owns the candidate inspector (its own onnxruntime
sessions, one intra-op thread, so it leaves the cores to the live inspector) and stores each
candidate verdict in `shadow_results`. Nothing a shadow does reaches the PLC, OPC UA, the robot, the
result store or the result events.

When a frame is judged (the rule): only while the line has not moved on to the next part,
and only if the candidate would finish it before that part's deadline, the time the line has
already reserved for the part. So a shadow runs in the gaps between parts and yields to the
live inspector. The finish is estimated (`fits`) as now + (frames ahead of it + 1) x the
candidate's latency estimate: the 90th percentile of its last 50 measured latencies, or,
before any was measured, the live inspector's own time on that frame. Both checks are made
when the frame is offered and again when the worker takes it. A part that arrives while the
candidate is already running cannot stop it; the estimate keeps that run short of the
deadline. Frames that are not judged are recorded with the reason:

- `next_part`: a newer part was accepted before the candidate could start on this one;
- `queue_full`: the bounded queue had no room;
- `no_time`: the estimate did not fit in the time left before the part's deadline;
- `stopped`: the shadow was cleared or the station stopped before the frame's turn;
- `candidate_error`: the candidate raised (its own fail-safe verdicts are judged rows).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cellinspect.config import Recipe
from cellinspect.entities import Frame, InspectedFrame
from cellinspect.errors import CellInspectError, ConfigError
from cellinspect.lifecycle.shadow_store import ShadowRecord, ShadowStore
from cellinspect.runtime.protocols import ImageInspector

if TYPE_CHECKING:
    from cellinspect.runtime.inspector import Inspector

log = logging.getLogger(__name__)

SKIP_NEXT_PART = "next_part"
SKIP_QUEUE_FULL = "queue_full"
SKIP_NO_TIME = "no_time"
SKIP_STOPPED = "stopped"
SKIP_ERROR = "candidate_error"
DEFAULT_QUEUE_SIZE = 8
LATENCY_WINDOW = 50
FLUSH_EVERY = 32
MAX_UNWRITTEN = 10_000
"""Records kept for a retry while the database refuses them; beyond this they are counted lost."""

ShadowHook = Callable[[Frame, InspectedFrame, float, float], None]
"""The job path calls hook(raw frame, live result as posted, part accepted, part deadline)."""


def fits(now: float, deadline: float, ahead: int, estimate_ms: float) -> bool:
    """True when `ahead` queued frames and this one, each `estimate_ms`, end by `deadline`."""
    return now + (ahead + 1) * estimate_ms / 1000.0 <= deadline


class LatencyEstimate:
    """The 90th percentile of the candidate's recent latencies (thread-safe)."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, latency_ms: float) -> None:
        with self._lock:
            self._recent.append(latency_ms)

    def value(self, prior_ms: float) -> float:
        """The estimate, or `prior_ms` before the first measurement."""
        with self._lock:
            ordered = sorted(self._recent)
        if not ordered:
            return prior_ms
        return ordered[int(0.9 * (len(ordered) - 1))]


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """Counts since the shadow was set, for the status and the log."""

    slot: str
    version: str
    candidate_sha256: str
    offered: int
    judged: int
    skipped: dict[str, int]
    written: int
    unwritten: int
    lost: int
    estimate_ms: float | None


def candidate_recipe(recipe: Recipe, slot: str, model_dir: Path, where: str) -> Recipe:
    """`recipe` with model `slot` read from `model_dir`, on one intra-op thread."""
    slots = [m.name for m in recipe.models]
    if slot not in slots:
        raise ConfigError(f"{where}: recipe '{recipe.name}' has no model slot {slot!r} ({slots})")
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: model package folder not found")
    model_file = model_dir.resolve() / "model.onnx"
    models = [
        m.model_copy(update={"path": model_file}) if m.name == slot else m for m in recipe.models
    ]
    runtime = recipe.runtime.model_copy(update={"intra_op_threads": 1})
    return recipe.model_copy(update={"models": models, "runtime": runtime})


def candidate_inspector(
    recipe_path: Path,
    recipe: Recipe,
    slot: str,
    model_dir: Path,
    trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Inspector:
    """The live recipe's inspector with the candidate in `slot` (sealed, signed if trusted)."""
    from cellinspect.runtime.inspector import Inspector

    shadow = candidate_recipe(recipe, slot, model_dir, str(recipe_path))
    return Inspector.from_recipe(recipe_path, recipe=shadow, trusted_keys=trusted_keys)


@dataclass(frozen=True, slots=True)
class _Job:
    frame: Frame
    live: InspectedFrame
    accepted: float
    deadline: float


class _Stop:
    """Queue sentinel: the worker ends after it."""


class ShadowRunner:
    """Judges offered frames with a candidate inspector on its own thread; `start`, `close`."""

    def __init__(
        self,
        slot: str,
        version: str,
        candidate_sha256: str,
        inspector: ImageInspector,
        store: ShadowStore,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        last_trigger: Callable[[], float] | None = None,
    ) -> None:
        """`last_trigger` gives when the newest live part was accepted (`clock` time)."""
        if queue_size < 1:
            raise ValueError(f"shadow queue_size must be >= 1, got {queue_size}")
        self.slot = slot
        self.version = version
        self.candidate_sha256 = candidate_sha256
        self.inspector = inspector
        self.store = store
        self.estimate = LatencyEstimate()
        self._clock = clock
        self._last_trigger = last_trigger
        self._queue: queue.Queue[_Job | _Stop] = queue.Queue(maxsize=queue_size)
        self._pending: list[ShadowRecord] = []
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # every offered frame has its record
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._skipped: collections.Counter[str] = collections.Counter()

    @classmethod
    def build(
        cls,
        recipe_path: Path,
        recipe: Recipe,
        slot: str,
        model_dir: Path,
        version: str,
        store: ShadowStore,
        *,
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        last_trigger: Callable[[], float] | None = None,
    ) -> ShadowRunner:
        """Load the candidate (sealed, and signed when keys are trusted) into the live recipe."""
        inspector = candidate_inspector(recipe_path, recipe, slot, model_dir, trusted_keys)
        sha = next(r.ref.sha256 for r in inspector.runners if r.name == slot)
        return cls(
            slot, version, sha, inspector, store, queue_size=queue_size, last_trigger=last_trigger
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ShadowRunner:
        self._thread = threading.Thread(target=self._loop, name=f"shadow-{self.slot}", daemon=True)
        self._thread.start()
        log.info(
            "shadow: candidate %s@%s (%s) judges live parts",
            self.slot,
            self.version,
            self.candidate_sha256[:12],
        )
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Record queued frames as `stopped`, finish the one in hand, write everything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._drain_stopped()  # queued frames are not judged: a clear or stop is not delayed
        thread = self._thread
        if thread is not None:
            try:
                self._queue.put(_Stop(), timeout=timeout_s)
            except queue.Full:  # an offer slipped in before `_closed`; the worker frees it
                log.warning("shadow: queue still full %.0f s into close", timeout_s)
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("shadow: worker still busy %.0f s after close", timeout_s)
        self._drain_stopped()
        self._flush()
        close = getattr(self.inspector, "close", None)
        if close is not None and (thread is None or not thread.is_alive()):
            close()
        stats = self.stats()
        log.info(
            "shadow %s@%s closed: offered %d, judged %d, skipped %s, unwritten %d, lost %d",
            self.slot,
            self.version,
            stats.offered,
            stats.judged,
            stats.skipped,
            stats.unwritten,
            stats.lost,
        )

    # ------------------------------------------------------------------ the job path's side

    def offer(self, frame: Frame, live: InspectedFrame, accepted: float, deadline: float) -> None:
        """Queue a posted part for the candidate, or record why not; never blocks or raises."""
        try:
            self._offer(_Job(frame, live, accepted, deadline))
        except Exception:  # the shadow must never disturb the job path
            log.exception("shadow: offering result %s failed", live.result.result_id)

    def _offer(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                return
            self._counts["offered"] += 1
            ahead = self._queue.qsize() + (1 if self._busy else 0)
        why = self._why_not(job, ahead)
        if why is not None:
            self._skip(job.live, why)
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._skip(job.live, SKIP_QUEUE_FULL)

    def _why_not(self, job: _Job, ahead: int) -> str | None:
        """The skip reason for a frame with `ahead` frames before it, or None: it fits."""
        if self._last_trigger is not None and self._last_trigger() > job.accepted:
            return SKIP_NEXT_PART
        estimate = self.estimate.value(_live_ms(job.live))
        if not fits(self._clock(), job.deadline, ahead, estimate):
            return SKIP_NO_TIME
        return None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every offered frame is judged or skipped (maybe not written yet)."""
        with self._settled:
            return self._settled.wait_for(
                lambda: self._counts["judged"] + self._skipped.total() >= self._counts["offered"],
                timeout_s,
            )

    # ------------------------------------------------------------------ the worker

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._flush()
                continue
            if isinstance(job, _Stop):
                return
            with self._lock:
                self._busy = True
            try:
                self._judge(job)
            finally:
                with self._lock:
                    self._busy = False
            if self._queue.empty() or len(self._pending) >= FLUSH_EVERY:
                self._flush()

    def _judge(self, job: _Job) -> None:
        live = job.live
        why = self._why_not(job, 0)
        if why is not None:
            self._skip(live, why)
            return
        frame = job.frame
        started = time.perf_counter()
        try:
            judged = self.inspector.inspect_image(
                frame.image, name=frame.path, part_id=frame.part_id, encoder=frame.encoder
            )
        except Exception as err:  # the candidate's bug is recorded, never the line's problem
            log.exception("shadow: candidate raised on result %s", live.result.result_id)
            self._skip(live, SKIP_ERROR, f"{type(err).__name__}: {err}")
            return
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.estimate.add(latency_ms)
        result = judged.result
        self._add(
            self._record(
                live,
                verdict=result.verdict,
                score=result.score,
                defect_class=result.defect_class,
                error=result.error,
                latency_ms=latency_ms,
            ),
            "judged",
        )

    # ------------------------------------------------------------------ records

    def _record(self, live: InspectedFrame, **fields: object) -> ShadowRecord:
        r = live.result
        values: dict[str, object] = {
            "verdict": None,
            "score": None,
            "defect_class": None,
            "error": None,
            "latency_ms": None,
            "skipped_reason": None,
            **fields,
        }
        return ShadowRecord(
            live_result_id=r.result_id,
            slot=self.slot,
            candidate_version=self.version,
            candidate_sha256=self.candidate_sha256,
            recipe_name=r.recipe_name,
            live_verdict=r.verdict,
            live_score=r.score,
            created_at=datetime.now(UTC),
            **values,  # type: ignore[arg-type]
        )

    def _skip(self, live: InspectedFrame, reason: str, error: str | None = None) -> None:
        self._add(self._record(live, skipped_reason=reason, error=error), None, reason)

    def _add(self, record: ShadowRecord, counter: str | None, skipped: str | None = None) -> None:
        with self._lock:
            if counter is not None:
                self._counts[counter] += 1
            if skipped is not None:
                self._skipped[skipped] += 1
            self._pending.append(record)
            self._settled.notify_all()

    def _drain_stopped(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, _Job):
                self._skip(job.live, SKIP_STOPPED)

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.store.add_many(batch)
        except CellInspectError as err:
            with self._lock:
                self._pending = batch + self._pending
                over = len(self._pending) - MAX_UNWRITTEN
                if over > 0:
                    self._counts["lost"] += over
                    del self._pending[:over]
            log.error("shadow: %d record(s) not written yet (%s); retrying", len(batch), err)
            return
        with self._lock:
            self._counts["written"] += len(batch)

    def stats(self) -> ShadowStats:
        with self._lock:
            counts = dict(self._counts)
            skipped = dict(self._skipped)
            unwritten = len(self._pending)
        measured = self.estimate.value(-1.0)
        return ShadowStats(
            slot=self.slot,
            version=self.version,
            candidate_sha256=self.candidate_sha256,
            offered=counts.get("offered", 0),
            judged=counts.get("judged", 0),
            skipped=skipped,
            written=counts.get("written", 0),
            unwritten=unwritten,
            lost=counts.get("lost", 0),
            estimate_ms=None if measured < 0 else measured,
        )


def _live_ms(live: InspectedFrame) -> float:
    """The live inspector's time on this frame: the candidate's estimate before it has one."""
    return float(live.result.timings_ms.get("total", 0.0))
