"""The station behind the Modbus registers: trigger in, picture, verdict within a deadline, out.

Threads, each with one job: the Modbus server thread runs the handshake logic on PLC writes;
the job worker acquires the frame and waits for the verdict; one inspector thread owns the
inspector (and its onnxruntime sessions); a watchdog ticks the heartbeats; a dispatcher hands
results and pick targets to the store and the robot, so a slow consumer never delays the PLC.

A verdict that is not ready by the deadline is posted as NO RESULT (code 4) at the deadline;
the station stays BUSY until the inspector is free again, so a late inspection can never be
mistaken for the next part's.

Durability: with a `record` hook (the station's result journal), every result is recorded
before the PLC, a future's caller or the dispatcher (store, robot, OPC UA) sees it. A result
that cannot be recorded is posted nowhere: the station goes to its safe state with
RECORD_FAILED, and later triggers are refused until the journal takes a probe line again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime

from cellinspect.entities import (
    Frame,
    FrameFailure,
    InspectedFrame,
    InspectionResult,
    SourceItem,
    Verdict,
)
from cellinspect.plc.handshake import Handshake, MissedTrigger, ResultBlock, TriggerJob
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.registers import (
    DEFECT_ACQUISITION_FAILED,
    DEFECT_DEADLINE_MISSED,
    Command,
    ErrorCode,
    ResultCode,
    defect_code,
)
from cellinspect.plc.robot import PickTarget, PlaneMapping, PoseEstimator, largest_contour_pose
from cellinspect.plc.robot import pick_target as compute_pick_target
from cellinspect.plc.sim_camera import TriggeredCamera
from cellinspect.runtime.protocols import ImageInspector

log = logging.getLogger(__name__)

_Dispatch = tuple[InspectedFrame | PickTarget, TriggerJob]
MISSED_TRIGGER = "missed_trigger"
"""TriggerJob.origin of a PLC trigger the station could not take (stored, never inspected)."""

InspectorFactory = Callable[[], ImageInspector]
OutcomeHook = Callable[[InspectedFrame, TriggerJob], None]
RecipeHook = Callable[[int, ImageInspector, ImageInspector], None]
"""Called as hook(number, new inspector, old inspector) after a recipe switch."""
ShadowHook = Callable[[Frame, InspectedFrame, float, float], None]
"""Called as hook(frame, result as posted, part accepted, part deadline) after it went out."""


STOP_JOIN_S = 30.0
"""How long stop() waits, in all, for the station's threads to finish what they are doing."""


def _nothing() -> None:
    """A no-op job: when it has run, the inspector thread finished what came before it."""


class StationBusyError(RuntimeError):
    """A trigger or command from the station's side came while the station was not ready."""


class RecordFailedError(StationBusyError):
    """The part's result could not be recorded, so its verdict was not given out."""


@dataclass(frozen=True, slots=True)
class StationConfig:
    """Timing and safety settings of the PLC interface."""

    deadline_ms: float = 500.0
    heartbeat_timeout_s: float | None = 1.0
    tick_s: float = 0.1
    fail_safe: Verdict = Verdict.FAIL
    recipe_number: int = 1
    dispatch_queue: int = 512
    station_id: str | None = None
    line: str | None = None
    site: str | None = None

    def __post_init__(self) -> None:
        if self.deadline_ms <= 0:
            raise ValueError(f"deadline_ms must be > 0, got {self.deadline_ms}")
        if self.fail_safe is Verdict.PASS:
            raise ValueError("fail_safe must be FAIL or REVIEW, never PASS")
        if self.heartbeat_timeout_s is not None and self.heartbeat_timeout_s <= self.tick_s:
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s}) must exceed tick_s "
                f"({self.tick_s})"
            )


@dataclass(frozen=True, slots=True)
class StationRecord:
    """What the station decided and posted for one accepted trigger (the audit's other half)."""

    part_id: int
    encoder: int
    acquisition_id: int
    code: ResultCode
    verdict: Verdict
    delivered: bool
    late: bool
    frame_dropped: bool
    latency_ms: float
    inspect_ms: float | None


class StationInterface:
    """Runs accepted triggers to posted results; start() before the PLC connects."""

    def __init__(
        self,
        image: RegisterImage,
        camera: TriggeredCamera,
        inspector: ImageInspector,
        config: StationConfig | None = None,
        plane: PlaneMapping | None = None,
        estimator: PoseEstimator = largest_contour_pose,
        on_result: Callable[[InspectedFrame], None] | None = None,
        on_target: Callable[[PickTarget], None] | None = None,
        recipes: Mapping[int, InspectorFactory] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: OutcomeHook | None = None,
        on_recipe: RecipeHook | None = None,
        record: Callable[[InspectedFrame], None] | None = None,
        probe: Callable[[], None] | None = None,
    ) -> None:
        """`record` makes a result durable (raises when it cannot); `probe` checks it could."""
        self.config = config or StationConfig()
        self.image = image
        self.camera = camera
        self.inspector = inspector
        self.plane = plane
        self.estimator = estimator
        self.on_result = on_result
        self.on_target = on_target
        self.recipes = dict(recipes or {})
        self.on_outcome = on_outcome
        self.on_recipe = on_recipe
        self.record = record
        self.probe = probe
        self.record_error: str | None = None  # set while results cannot be recorded
        self.results_lost = 0  # judged, but neither recorded nor given out
        self._job_recorded = False  # the job thread's part has a recorded result
        # Told when results cannot be recorded (the station refuses triggers): OPC UA's Error.
        self.on_record_failed: Callable[[str], None] | None = None
        # Told of every posted part (station/metrics.py): runs on the job thread, must be quick.
        self.on_record: Callable[[StationRecord], None] | None = None
        # A shadow candidate (lifecycle/shadow.py): gets each judged frame after it went out.
        self.shadow: ShadowHook | None = None
        self.last_accepted_mono = 0.0  # when the newest job was accepted (a shadow yields to it)
        self._clock = clock
        self._preloaded: dict[int, SourceItem] = {}
        self._futures: dict[int, Future[InspectedFrame]] = {}
        self._pending_lock = threading.Lock()
        self._swap_lock = threading.Lock()  # swap_inspector: between two parts
        self._idle = threading.Condition()
        self._in_flight = 0
        self.records: list[StationRecord] = []
        self.dispatch_dropped = 0
        self._records_lock = threading.Lock()
        self._jobs: queue.Queue[TriggerJob | None] = queue.Queue()
        self._dispatch: queue.Queue[_Dispatch | None] = queue.Queue(
            maxsize=self.config.dispatch_queue
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self._command_thread: threading.Thread | None = None
        self.handshake = Handshake(
            image,
            on_job=self._queue_job,
            on_command=self._on_command,
            heartbeat_timeout_s=self.config.heartbeat_timeout_s,
            recipe_number=self.config.recipe_number,
            clock=clock,
            on_missed=self._on_missed,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector")
        for name, target in (
            ("station-jobs", self._job_loop),
            ("station-watchdog", self._watchdog_loop),
            ("station-dispatch", self._dispatch_loop),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, join_s: float = STOP_JOIN_S) -> None:
        """End every thread this interface started, waiting for each (within `join_s` in all).

        A daemon thread still inside OpenCV or onnxruntime (a render, an inference, a recipe
        load) when the interpreter exits is unwound through their C++ frames, and the process
        aborts ("terminate called without an active exception", exit 134). So the job, dispatch
        and command threads are joined and the inspector thread is waited for; one that
        outlives `join_s` is named in the log.
        """
        end = time.monotonic() + join_s
        self._stop.set()
        self._jobs.put(None)
        try:
            self._dispatch.put(None, timeout=1.0)
        except queue.Full:
            log.warning("station: dispatch queue full at stop; pending callbacks dropped")
        command = self._command_thread
        for t in [*self._threads, *([command] if command is not None else [])]:
            t.join(timeout=max(0.0, end - time.monotonic()))
            if t.is_alive():
                log.warning("station: thread %s still running %.0f s after stop", t.name, join_s)
        self._threads.clear()
        if self._executor is not None:
            # Queued after the inspection in progress, if any: done means the thread is idle.
            idle = self._executor.submit(_nothing)
            self._executor.shutdown(wait=False)
            try:
                idle.result(timeout=max(0.0, end - time.monotonic()))
            except FutureTimeout:
                log.warning("station: the inspector is still busy %.0f s after stop", join_s)
            self._executor = None

    def __enter__(self) -> StationInterface:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ loops

    def _watchdog_loop(self) -> None:
        while not self._stop.wait(self.config.tick_s):
            self.handshake.tick()

    def _job_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._job_recorded = False
            try:
                self._run_job(job)
            except Exception as err:  # a bug here must not stop the line: log, fail safe, go on
                log.exception("station: job for part %d failed", job.part_id)
                self._job_failed(job, err)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def _job_failed(self, job: TriggerJob, err: Exception) -> None:
        """A bug in the job path: the part gets NO RESULT, recorded before it is posted.

        When a result of this job was recorded already, that row stands and only BUSY is
        released; otherwise a fail-safe row with the error is recorded first, so no verdict
        the PLC sees is missing from the record (and a part that cannot be recorded is refused).
        """
        future = self._pop_future(job)
        if self._job_recorded:
            self.handshake.complete_job(None, still_busy=False)
        else:
            inspected = self._job_fail_safe(job, f"station error: {type(err).__name__}: {err}")
            result = inspected.result
            if not self._durable(job, inspected):
                self._refuse(job)
            else:
                block = ResultBlock(ResultCode.NO_RESULT, job.part_id, job.encoder)
                delivered = self.handshake.complete_job(block, still_busy=False)
                self._record(
                    job, ResultCode.NO_RESULT, result.verdict, delivered, False, False, None
                )
                self._emit(inspected, job)
        if future is not None and not future.done():
            future.set_exception(err)

    def _queue_job(self, job: TriggerJob) -> None:
        with self._idle:
            self._in_flight += 1
            self.last_accepted_mono = job.accepted_mono
        self._jobs.put_nowait(job)

    def _dispatch_loop(self) -> None:
        while True:
            entry = self._dispatch.get()
            try:
                if entry is None:
                    return
                item, job = entry
                if isinstance(item, PickTarget):
                    if self.on_target is not None:
                        self.on_target(item)
                    continue
                if job.origin == MISSED_TRIGGER:
                    self._store_missed(item)
                    continue
                if self.on_result is not None:
                    self.on_result(item)
                if self.on_outcome is not None:
                    self.on_outcome(item, job)
            except Exception:  # the store or robot failing must not stop inspection
                log.exception("station: result/target consumer failed")
            finally:
                self._dispatch.task_done()

    def _emit(self, item: InspectedFrame | PickTarget, job: TriggerJob) -> None:
        if isinstance(item, PickTarget) and self.on_target is None:
            return
        if isinstance(item, InspectedFrame) and self.on_result is None and self.on_outcome is None:
            return
        try:
            self._dispatch.put_nowait((item, job))
        except queue.Full:
            self.dispatch_dropped += 1
            log.error("station: dispatch queue full, dropped %s", type(item).__name__)

    # ------------------------------------------------------------------ one part

    def _run_job(self, job: TriggerJob) -> None:
        deadline = job.accepted_mono + self.config.deadline_ms / 1000.0
        with self._pending_lock:
            preloaded = self._preloaded.pop(job.acquisition_id, None)
        if self.record_error is not None and not self._can_record_again(job):
            return  # no part is inspected while its result could not be recorded
        item = preloaded or self.camera.acquire(job.part_id, job.encoder, job.acquisition_id)
        if isinstance(item, FrameFailure):
            inspected = self._fail_safe(item, f"acquisition failed: {item.reason}")
            self._finish(job, inspected, inspect_ms=None, dropped=True, deadline=deadline)
            return
        assert self._executor is not None, "station not started"
        with self._swap_lock:  # a model swap waits for this part to be submitted
            inspector = self.inspector
            started = self._clock()
            future: Future[InspectedFrame] = self._executor.submit(
                _inspect_frame, inspector, item, job.part_id, job.encoder
            )
        try:
            inspected = future.result(timeout=max(0.0, deadline - self._clock()))
        except FutureTimeout:
            # The PLC gets NO RESULT now; what it acts on is recorded first, and the late
            # verdict takes the same result id, so the store ends with one row either way.
            placeholder = self._deadline_placeholder(job, item)
            if not self._durable(job, placeholder):
                self._wait_late(future)  # BUSY until the inspector is free, as on a late job
                self._refuse(job)
                return
            self._post_no_result(job)
            inspected = self._wait_late(future)
            late = self._late_result(inspected, self._clock() - job.accepted_mono)
            late = self._with_id(late, placeholder.result.result_id)
            self._durable(job, late, refuse=False)  # the placeholder stands if this fails
            self.handshake.complete_job(None, still_busy=False)
            self._record(
                job,
                ResultCode.NO_RESULT,
                late.result.verdict,
                True,
                True,
                False,
                (self._clock() - started) * 1000.0,
            )
            self._resolve(job, late)
            self._emit(late, job)
            self._offer_shadow(item, late, job, deadline)
            return
        except Exception as err:
            inspected = self._fail_safe(item, f"inspector raised {type(err).__name__}: {err}")
        self._finish(job, inspected, (self._clock() - started) * 1000.0, False, deadline, item)

    def _finish(
        self,
        job: TriggerJob,
        inspected: InspectedFrame,
        inspect_ms: float | None,
        dropped: bool,
        deadline: float,
        frame: Frame | None = None,
    ) -> None:
        now = self._clock()
        inspected = self.stamp(inspected)
        if now > deadline:
            late = self._late_result(inspected, now - job.accepted_mono)
            if not self._durable(job, late):
                self._refuse(job)
                return
            self._post_no_result(job)
            self.handshake.complete_job(None)
            self._record(
                job, ResultCode.NO_RESULT, late.result.verdict, True, True, dropped, inspect_ms
            )
            self._resolve(job, late)
            self._emit(late, job)
            self._offer_shadow(frame, late, job, deadline)
            return
        result = inspected.result
        code = ResultCode.from_verdict(result.verdict)
        target = None
        if code.rejects:
            target = compute_pick_target(inspected, self.plane, self.estimator)
        block = ResultBlock(
            result=code,
            part_id=job.part_id,
            encoder=job.encoder,
            defect_code=DEFECT_ACQUISITION_FAILED
            if dropped
            else defect_code(result.verdict, result.defect_class, result.error),
            pick_x_centi_mm=round(target.x_mm * 100) if target else 0,
            pick_y_centi_mm=round(target.y_mm * 100) if target else 0,
            pick_angle_centi_deg=round(target.angle_deg * 100) if target else 0,
            processing_ms=(now - job.accepted_mono) * 1000.0,
            score=result.score,
        )
        if not self._durable(job, inspected):
            self._refuse(job)
            return
        delivered = self.handshake.complete_job(block)
        self._record(job, code, result.verdict, delivered, False, dropped, inspect_ms)
        self._resolve(job, inspected)
        self._emit(inspected, job)
        if target is not None:
            self._emit(target, job)
        self._offer_shadow(frame, inspected, job, deadline)

    def _offer_shadow(
        self, frame: Frame | None, posted: InspectedFrame, job: TriggerJob, deadline: float
    ) -> None:
        """After the verdict went out: the same frame to a shadow candidate, if one is set."""
        shadow = self.shadow
        if shadow is None or frame is None:
            return
        try:
            shadow(frame, posted, job.accepted_mono, deadline)
        except Exception:  # a shadow must never disturb the job path
            log.exception("station: shadow hook failed for part %d", posted.result.part_id or 0)

    # ------------------------------------------------------------------ durability

    def _durable(self, job: TriggerJob, inspected: InspectedFrame, refuse: bool = True) -> bool:
        """Record the result before anyone acts on it; False (logged, counted) if it failed."""
        if self.record is None:
            return True
        try:
            self.record(inspected)
            self._job_recorded = True
        except Exception as err:
            self.record_error = str(err)
            result = inspected.result
            if refuse:
                self.results_lost += 1
            log.error(
                "station: part %d judged %s, but its result cannot be recorded (%s); %s: %s",
                job.part_id,
                result.verdict.value,
                err,
                "not given out" if refuse else "the recorded placeholder stands",
                json.dumps(result.to_dict(), separators=(",", ":")),
            )
            self.handshake.enter_safe_state(ErrorCode.RECORD_FAILED)
            self._tell_record_failed()
            return False
        return True

    def _tell_record_failed(self) -> None:
        if self.on_record_failed is None:
            return
        try:
            self.on_record_failed(
                f"RECORD_FAILED: results cannot be recorded ({self.record_error})"
            )
        except Exception:  # an output's error must not hide the record failure itself
            log.exception("station: telling the outputs about RECORD_FAILED failed")

    def _refuse(self, job: TriggerJob) -> None:
        """A part whose result was not recorded: nothing posted, BUSY released, caller told."""
        self.handshake.enter_safe_state(ErrorCode.RECORD_FAILED)
        self.handshake.complete_job(None, still_busy=False)
        future = self._pop_future(job)
        if future is not None and not future.done():
            future.set_exception(
                RecordFailedError(f"part {job.part_id}: result not recorded ({self.record_error})")
            )

    def _can_record_again(self, job: TriggerJob) -> bool:
        """After a record failure: probe the journal before judging the next part."""
        try:
            if self.probe is not None:
                self.probe()
        except Exception as err:
            self.record_error = str(err)
            log.error(
                "station: part %d not inspected: results still cannot be recorded (%s)",
                job.part_id,
                err,
            )
            self._refuse(job)
            self._tell_record_failed()
            return False
        log.warning("station: results can be recorded again")
        self.record_error = None
        return True

    def _deadline_placeholder(self, job: TriggerJob, item: Frame) -> InspectedFrame:
        """What the PLC acts on at a missed deadline, recorded before NO RESULT is posted."""
        why = (
            f"deadline {self.config.deadline_ms:.0f} ms missed; the PLC got NO RESULT "
            "(the late verdict was not recorded)"
        )
        return self._job_fail_safe(job, why, item)

    def _job_fail_safe(
        self, job: TriggerJob, reason: str, item: FrameFailure | Frame | None = None
    ) -> InspectedFrame:
        """The fail-safe row of a job's part (its PLC part id and encoder), stamped."""
        failed = self._fail_safe(item, reason)
        result = dataclasses.replace(failed.result, part_id=job.part_id, encoder=job.encoder)
        return self.stamp(InspectedFrame(result=result))

    @staticmethod
    def _with_id(inspected: InspectedFrame, result_id: str) -> InspectedFrame:
        result = dataclasses.replace(inspected.result, result_id=result_id)
        return dataclasses.replace(inspected, result=result)

    def _post_no_result(self, job: TriggerJob) -> None:
        block = ResultBlock(
            ResultCode.NO_RESULT,
            job.part_id,
            job.encoder,
            defect_code=DEFECT_DEADLINE_MISSED,
            processing_ms=self.config.deadline_ms,
        )
        self.handshake.complete_job(block, still_busy=True)

    def _wait_late(self, future: Future[InspectedFrame]) -> InspectedFrame:
        try:
            return self.stamp(future.result())
        except Exception as err:
            return self.stamp(
                self._fail_safe(None, f"inspector raised {type(err).__name__}: {err}")
            )

    def stamp(self, inspected: InspectedFrame) -> InspectedFrame:
        """Every result leaves the station carrying the station's ids."""
        c = self.config
        if c.station_id is None:
            return inspected
        result = dataclasses.replace(
            inspected.result, station_id=c.station_id, line=c.line, site=c.site
        )
        return dataclasses.replace(inspected, result=result)

    def _resolve(self, job: TriggerJob, inspected: InspectedFrame) -> None:
        future = self._pop_future(job)
        if future is not None and not future.done():
            future.set_result(inspected)

    def _pop_future(self, job: TriggerJob) -> Future[InspectedFrame] | None:
        with self._pending_lock:
            return self._futures.pop(job.acquisition_id, None)

    # ------------------------------------------------------------------ station-side triggers

    def trigger(
        self,
        part_id: int,
        encoder: int = 0,
        item: SourceItem | None = None,
        origin: str = "software",
    ) -> Future[InspectedFrame]:
        """Start one job from the station's side; StationBusyError when it is not ready.

        `item` is a frame already in hand (free run); otherwise the camera is asked for one,
        as on a PLC trigger. The future resolves with the result as posted (stamped, and
        NO RESULT-adjusted when late), after the PLC registers hold it.
        """
        future: Future[InspectedFrame] = Future()
        with self._pending_lock:
            # Registered under the lock before the job can run: the job looks them up.
            job = self.handshake.accept_station_trigger(part_id, encoder, origin)
            if job is None:
                raise StationBusyError(f"station not ready for a trigger ({self.handshake.state})")
            if item is not None:
                self._preloaded[job.acquisition_id] = item
            self._futures[job.acquisition_id] = future
        return future

    @property
    def dispatch_depth(self) -> int:
        """Results and targets queued for, or being handed to, the store, robot and OPC UA."""
        return self._dispatch.unfinished_tasks

    @property
    def in_flight(self) -> int:
        """Accepted jobs not finished yet."""
        with self._idle:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is queued or running and every result has been dispatched."""
        end = self._clock() + timeout
        with self._idle:
            while self._in_flight > 0:
                remaining = end - self._clock()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.1))
        while self._dispatch.unfinished_tasks:
            if self._clock() > end:
                return False
            time.sleep(0.01)
        return True

    def _record(
        self,
        job: TriggerJob,
        code: ResultCode,
        verdict: Verdict,
        delivered: bool,
        late: bool,
        dropped: bool,
        inspect_ms: float | None,
    ) -> None:
        rec = StationRecord(
            part_id=job.part_id,
            encoder=job.encoder,
            acquisition_id=job.acquisition_id,
            code=code,
            verdict=verdict,
            delivered=delivered,
            late=late,
            frame_dropped=dropped,
            latency_ms=(self._clock() - job.accepted_mono) * 1000.0,
            inspect_ms=inspect_ms,
        )
        with self._records_lock:
            self.records.append(rec)
        if self.on_record is not None:
            try:
                self.on_record(rec)
            except Exception:  # metrics must never disturb the job path
                log.exception("station: record hook failed for part %d", job.part_id)

    def _on_missed(self, missed: MissedTrigger) -> None:
        """Runs under the image lock: a missed PLC trigger becomes a fail-safe row to store."""
        job = TriggerJob(0, missed.part_id, missed.encoder, missed.missed_mono, MISSED_TRIGGER)
        self._emit(self._job_fail_safe(job, missed.reason), job)

    def _store_missed(self, inspected: InspectedFrame) -> None:
        """A missed trigger's row: recorded and stored; it posted no verdict, so no outcome."""
        if self.record is not None:
            try:
                self.record(inspected)
            except Exception as err:  # the PLC acts on no verdict here; the store still tries
                log.error("station: missed-trigger row not recorded (%s)", err)
        if self.on_result is not None:
            self.on_result(inspected)

    def fail_safe_result(self, failure: FrameFailure | Frame | None, reason: str) -> InspectedFrame:
        """The recipe's fail-safe verdict for a part that could not be judged, with the reason."""
        return self._fail_safe(failure, reason)

    def _fail_safe(self, failure: FrameFailure | Frame | None, reason: str) -> InspectedFrame:
        result = InspectionResult(
            result_id=uuid.uuid4().hex,
            frame_id=failure.frame_id if failure else 0,
            source=failure.source if failure else self.camera.name,
            verdict=self.config.fail_safe,
            reasons=(reason,),
            captured_wall=failure.captured_wall if failure else datetime.now(UTC),
            recipe_name=self.inspector.recipe_name,
            recipe_sha256=self.inspector.recipe_sha256,
            part_id=failure.part_id if failure else None,
            encoder=failure.encoder if failure else None,
            error=reason,
        )
        return InspectedFrame(result=result)

    def _late_result(self, inspected: InspectedFrame, elapsed_s: float) -> InspectedFrame:
        """The inspector's result as it was acted on: NO RESULT, so never PASS."""
        r = inspected.result
        why = (
            f"deadline {self.config.deadline_ms:.0f} ms missed ({elapsed_s * 1000:.0f} ms); "
            f"the PLC got NO RESULT (inspector said {r.verdict.value})"
        )
        verdict = r.verdict if r.verdict is not Verdict.PASS else self.config.fail_safe
        late = dataclasses.replace(r, verdict=verdict, reasons=(*r.reasons, why), error=why)
        return dataclasses.replace(inspected, result=late)

    # ------------------------------------------------------------------ commands

    def _on_command(self, command: Command | int, arg: int) -> None:
        """Runs under the image lock: start the command on its own thread and return."""
        t = threading.Thread(
            target=self._run_command, args=(command, arg), name="station-command", daemon=True
        )
        self._command_thread = t  # joined at stop: a recipe load may be inside onnxruntime
        t.start()

    def _run_command(self, command: Command | int, arg: int) -> None:
        if command != Command.SELECT_RECIPE:
            self.handshake.complete_command(ErrorCode.UNKNOWN_COMMAND)
            return
        self.handshake.complete_command(*self._switch_recipe(arg))

    def select_recipe(self, number: int) -> ErrorCode:
        """Recipe select from the station's side (API, OPC UA): the PLC command's rules."""
        refused = self.handshake.begin_station_command()
        if refused is not ErrorCode.NONE:
            return refused
        error, recipe = self._switch_recipe(number)
        self.handshake.complete_command(error, recipe=recipe)
        return error

    def swap_inspector(
        self, new: ImageInspector, release: Callable[[ImageInspector], None]
    ) -> ImageInspector:
        """Put `new` (loaded and warmed) in place between two parts; returns the old one.

        Parts submitted before the swap finish on the old inspector (one executor thread, in
        order); `release(old)` runs once they have (at once with no executor), so it may close
        it. Unlike a recipe select it needs no idle station: no part waits, none is refused.
        """
        with self._swap_lock:
            old, self.inspector = self.inspector, new
            barrier = self._executor.submit(lambda: None) if self._executor else None
        if barrier is None:
            release(old)
        else:
            barrier.add_done_callback(lambda _: release(old))
        return old

    def _switch_recipe(self, number: int) -> tuple[ErrorCode, int | None]:
        """Load recipe `number` from the catalog; on any failure the old one stays live."""
        factory = self.recipes.get(number)
        if factory is None:
            log.warning("station: recipe %d requested, known: %s", number, sorted(self.recipes))
            return ErrorCode.RECIPE_NOT_FOUND, None
        try:
            inspector = factory()
        except Exception:
            log.exception("station: loading recipe %d failed; the previous one stays", number)
            return ErrorCode.RECIPE_LOAD_FAILED, None
        old, self.inspector = self.inspector, inspector
        if self.on_recipe is not None:
            try:
                self.on_recipe(number, inspector, old)
            except Exception:
                log.exception("station: recipe %d hook failed; the previous one stays", number)
                self.inspector = old
                return ErrorCode.RECIPE_LOAD_FAILED, None
        log.info("station: recipe %d is live", number)
        return ErrorCode.NONE, number


def _inspect_frame(
    inspector: ImageInspector, frame: Frame, part_id: int, encoder: int
) -> InspectedFrame:
    """The inspector's verdict on `frame`, recorded under the frame's own source and id.

    `inspect_image` is the upload path and knows nothing of the frame's origin, so its result
    says source "api", its own counter as frame id and the inspection time as capture time;
    the station's results name the camera, file or video frame they were judged on instead.
    """
    inspected = inspector.inspect_image(
        frame.image, name=frame.path, part_id=part_id, encoder=encoder
    )
    result = dataclasses.replace(
        inspected.result,
        frame_id=frame.frame_id,
        source=frame.source,
        captured_wall=frame.captured_wall,
    )
    return dataclasses.replace(inspected, result=result)
