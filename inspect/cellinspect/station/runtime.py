"""The station process: one recipe live, one trigger mode, every enabled link, ordered stop.

`StationRuntime` wires the pieces that already exist and are tested alone: the recipe's
frame source (or an injected camera, which is all the simulator swaps), the register image
and its handshake (`StationInterface`, which runs every job whoever triggers it), the Modbus
server, the OPC UA server, the robot link, the result store with its writer, and the API.

Every job, whatever started it (PLC trigger, free-run frame, API, OPC UA), goes through
`StationInterface`: the frame, the deadline, the fail-safe verdict, the PLC result block,
the station ids on the result and the hand-over to the store and the robot are one code
path. Stopping runs in order: no new triggers, in-flight parts finish and are posted,
results are handed to the store, the robot gets its queued targets, the store is flushed,
then the links close.

With a store, every result is appended to the result journal in data_dir (fsynced) before
any output sees its verdict; the writer feeds the database and replays the journal at start
(storage/journal.py). A station without a store has no journal.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellinspect.config import SourceConfig, SyntheticSource
from cellinspect.entities import (
    FrameFailure,
    InspectedFrame,
    InspectionResult,
    SourceItem,
    Verdict,
)
from cellinspect.errors import ConfigError
from cellinspect.health import station_link as health_link
from cellinspect.health.monitor import HealthMonitor
from cellinspect.inference.manifest import load_public_keys, trusted_signing_key
from cellinspect.plc.handshake import TriggerJob
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.registers import ErrorCode
from cellinspect.plc.robot import PickTarget, PlaneMapping
from cellinspect.plc.sim_camera import SimCamera, TriggeredCamera, rendered_catalog
from cellinspect.plc.station_interface import (
    StationBusyError,
    StationConfig,
    StationInterface,
)
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.station.camera import LIVE_SOURCE_TYPES, SourceCamera
from cellinspect.station.catalog import RecipeCatalog
from cellinspect.station.config import StationFile, TriggerMode
from cellinspect.station.metrics import StationMetrics
from cellinspect.station.robot_link import RobotLink

if TYPE_CHECKING:
    from cellinspect.api.server import ApiServerThread
    from cellinspect.api.services import ApiServices
    from cellinspect.config import Recipe
    from cellinspect.lifecycle.registry import ModelRegistry
    from cellinspect.lifecycle.shadow import ShadowRunner
    from cellinspect.plant.forwarder import Forwarder
    from cellinspect.plant.mqtt_link import MqttLink
    from cellinspect.plc.modbus_adapter import ModbusServer
    from cellinspect.plc.opcua_server import VisionOpcUaServer
    from cellinspect.runtime.inspector import Inspector
    from cellinspect.settings import StationSettings
    from cellinspect.storage.journal import ResultJournal
    from cellinspect.storage.sql_store import SqlResultStore
    from cellinspect.storage.writer import AsyncResultWriter

log = logging.getLogger(__name__)

ResultHook = Callable[[InspectedFrame], None]


@dataclasses.dataclass(slots=True)
class StationCounts:
    """Verdicts as the station posted them, for the status line and GET /station."""

    parts: int = 0
    verdicts: dict[Verdict, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(Verdict, 0)
    )
    errors: int = 0
    latencies_ms: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=500))
    finished_mono: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=2000))

    def add(self, inspected: InspectedFrame, latency_ms: float, now: float) -> None:
        result = inspected.result
        self.parts += 1
        self.verdicts[result.verdict] += 1
        if result.error is not None:
            self.errors += 1
        self.latencies_ms.append(latency_ms)
        self.finished_mono.append(now)

    def rate_per_min(self, now: float, window_s: float = 60.0) -> float:
        recent = [t for t in self.finished_mono if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) * 60.0 / max(span, 1.0)

    def latency_p50(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[len(ordered) // 2]


class _LiveInspector:
    """The API's view of the station's inspector: whichever recipe is live right now."""

    def __init__(self, runtime: StationRuntime) -> None:
        self._runtime = runtime

    @property
    def recipe_name(self) -> str:
        return self._runtime.interface.inspector.recipe_name

    @property
    def recipe_sha256(self) -> str:
        return self._runtime.interface.inspector.recipe_sha256

    def inspect_image(
        self,
        image: Any,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        inspected = self._runtime.interface.inspector.inspect_image(
            image, name=name, part_id=part_id, encoder=encoder
        )
        return self._runtime.interface.stamp(inspected)


class StationRuntime:
    """Build with a loaded station file; `start()`, then `stop()` (or use it as a context)."""

    def __init__(
        self,
        station: StationFile,
        *,
        where: str = "station",
        camera: TriggeredCamera | None = None,
        make_overlays: bool = True,
        on_result: ResultHook | None = None,
        on_target: Callable[[PickTarget], None] | None = None,
        exit_when_source_ends: bool = False,
        inspector_factory: Callable[[int], ImageInspector] | None = None,
        interface_overrides: Mapping[str, Any] | None = None,
        plane: PlaneMapping | None = None,
    ) -> None:
        """`camera`, `inspector_factory` and `plane` swap devices (simulator, tests).

        `interface_overrides` replaces StationConfig fields the recipe would set (for
        example a simulated line's shorter deadline); everything else comes from the files.
        """
        self.station = station
        self.where = where
        self.catalog = RecipeCatalog.load(station.recipes, where)
        # None: no signature required; a (non-empty) dict: only models signed by these load.
        self.trusted_model_keys = (
            load_public_keys(station.trusted_model_keys) if station.trusted_model_keys else None
        )
        # Signs what teach fits, so a station that accepts only signed models can still teach.
        self.teach_signing_key = (
            None
            if station.teach_signing_key is None
            else trusted_signing_key(
                station.teach_signing_key, self.trusted_model_keys, "teach_signing_key"
            )
        )
        self.active_recipe = station.active_recipe
        self.make_overlays = make_overlays
        self.extra_on_result = on_result
        self.extra_on_target = on_target
        self.exit_when_source_ends = exit_when_source_ends
        self._injected_camera = camera
        self._inspector_factory = inspector_factory
        self._overrides = dict(interface_overrides or {})
        self._plane = plane
        self.camera: TriggeredCamera | None = None
        self.counts = StationCounts()
        self.health = HealthMonitor(station.health)  # camera health, score drift (health/)
        self.metrics = StationMetrics(self)  # served by the API's GET /metrics
        self.stop_requested = threading.Event()
        self.source_ended = threading.Event()
        self.started_mono = 0.0
        self.settings: StationSettings | None = None
        self.store: SqlResultStore | None = None
        self.writer: AsyncResultWriter | None = None
        self.journal: ResultJournal | None = None
        self.forwarder: Forwarder | None = None  # store-and-forward to the plant (plant/)
        self.mqtt: MqttLink | None = None  # results, state and alarms to the plant broker
        self.mqtt_recovered: list[InspectionResult] = []  # journaled before a crash
        self.unrecorded = 0  # results outside any job that the journal refused
        self.modbus: ModbusServer | None = None
        self.modbus_port: int | None = None
        self.opcua: VisionOpcUaServer | None = None
        self.robot: RobotLink | None = None
        self.api: ApiServerThread | None = None
        self.image = RegisterImage()
        self._interface: StationInterface | None = None
        self._free_run: threading.Thread | None = None
        self._part_ids = itertools.count(1)
        self._pending_camera: TriggeredCamera | None = None
        self._stopped = False
        self._trigger_lock = threading.Lock()
        self.shadow: ShadowRunner | None = None  # a candidate model judging beside the live one
        # slot -> model.onnx of its live registry version (lifecycle/), over the recipe's path
        self.live_models: dict[str, Path] = {}
        # slot -> the package its first version came from: a recipe naming another package
        # under the same model name keeps its own (a registry never rescues a broken recipe)
        self._slot_origins: dict[str, Path] = {}
        self._swap_models = threading.Lock()
        self._shadow_lock = threading.Lock()

    # ------------------------------------------------------------------ accessors

    @property
    def interface(self) -> StationInterface:
        if self._interface is None:
            raise RuntimeError("station not started")
        return self._interface

    @property
    def mode(self) -> TriggerMode:
        return self.station.trigger.mode

    @property
    def stopped(self) -> bool:
        """True once `stop()` ran: the links are closed (the final status says so)."""
        return self._stopped

    # ------------------------------------------------------------------ start

    def start(self) -> StationRuntime:
        """Open everything; on any failure, close what was opened and raise."""
        self.started_mono = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        entry = self.catalog[self.active_recipe]
        if self.station.store.enabled:
            self._open_store()
            self._load_live_models()
        inspector = self._new_inspector(self.active_recipe)
        self.camera = self._injected_camera or self._open_camera(entry.recipe.source)
        st = self.station
        self._interface = StationInterface(
            self.image,
            self.camera,
            inspector,
            StationConfig(
                **{
                    "deadline_ms": entry.recipe.runtime.deadline_ms,
                    "heartbeat_timeout_s": st.modbus.heartbeat_timeout_s,
                    "fail_safe": entry.recipe.decision.fail_safe.verdict,
                    "recipe_number": self.active_recipe,
                    "station_id": st.station_id,
                    "line": st.line,
                    "site": st.site,
                    **self._overrides,
                }
            ),
            plane=self._plane,
            on_result=self._on_result,
            on_target=self._on_target,
            recipes={n: self._factory(n) for n in self.catalog.numbers},
            on_outcome=self._on_outcome,
            on_recipe=self._on_recipe,
            record=self._record if self.journal is not None else None,
            probe=self.journal.probe if self.journal is not None else None,
        )
        self.interface.on_record = self.metrics.record
        health_link.attach(self)
        if st.mqtt.enabled:
            from cellinspect.plant.mqtt_station import start_mqtt

            self.mqtt = start_mqtt(self)
        if st.modbus.enabled:
            self._start_modbus()
        if st.robot.enabled:
            self.robot = RobotLink(
                st.robot.host,
                st.robot.port,
                timeout_s=st.robot.timeout_s,
                retries=st.robot.retries,
                queue_size=st.robot.queue_size,
            ).start()
        self.interface.start()
        if st.opcua.enabled:
            self._start_opcua()
        if st.api.enabled:
            self._start_api()
        if self.mode is TriggerMode.FREE_RUN:
            self._free_run = threading.Thread(target=self._free_run_loop, name="free-run")
            self._free_run.start()
        log.info(
            "station %s: recipe %d (%s) live, trigger %s",
            st.station_id,
            self.active_recipe,
            entry.recipe.name,
            self.mode.value,
        )

    def _new_inspector(self, number: int) -> ImageInspector:
        if self._inspector_factory is not None:
            return self._inspector_factory(number)
        return self._load_inspector(number)

    def _load_inspector(
        self, number: int, overrides: Mapping[str, Path] | None = None
    ) -> Inspector:
        from cellinspect.runtime.inspector import Inspector

        entry = self.catalog[number]
        return Inspector.from_recipe(
            entry.path,
            make_overlays=self.make_overlays,
            recipe=self._with_live_models(entry.recipe, overrides or self.live_models),
            trusted_keys=self.trusted_model_keys,
        )

    # ------------------------------------------------------------------ model lifecycle

    def model_registry(self) -> ModelRegistry:
        """The registry of model versions in this station's store (lifecycle/registry.py)."""
        from cellinspect.lifecycle.promotion import registry_for

        if self.store is None or self.settings is None:
            raise ConfigError(f"{self.where}: the model registry needs store.enabled")
        return registry_for(self.store.engine, self.settings.data_dir)

    def _load_live_models(self) -> None:
        """Each slot of the live recipe runs its registry's live version (the recipe's own
        model is registered as the first one of an empty slot)."""
        registry = self.model_registry()
        for model in self.catalog[self.active_recipe].recipe.models:
            live = registry.ensure_live(model.name, model.path)
            if live.package_dir != model.path.parent.resolve():
                log.warning(
                    "model slot %s runs registry version %s, not the recipe's %s "
                    "(`cellinspect models add/promote` to change it)",
                    model.name,
                    live.version,
                    model.path,
                )
        self.live_models = {s: v.model_file for s, v in registry.live_models().items()}
        self._slot_origins = {}
        for version in registry.versions():  # oldest first
            self._slot_origins.setdefault(version.slot, version.package_dir.resolve())

    def _with_live_models(self, recipe: Recipe, live: Mapping[str, Path]) -> Recipe:
        """The recipe with each slot's live version, where the recipe's model is that slot's."""

        models = []
        for m in recipe.models:
            origin = self._slot_origins.get(m.name)
            same_slot = origin is None or m.path.parent.resolve() == origin
            models.append(
                m.model_copy(update={"path": live[m.name]}) if m.name in live and same_slot else m
            )
        return recipe.model_copy(update={"models": models})

    def model_slots(self) -> list[str]:
        """The model slots of the live recipe."""
        return [m.name for m in self.catalog[self.active_recipe].recipe.models]

    def swap_model(self, slot: str, model_file: Path) -> None:
        """Hot swap: the live recipe with `slot` read from `model_file`, loaded and warmed,
        replaces the running inspector between two parts; raises with nothing changed."""
        with self._swap_models:
            live = {**self.live_models, slot: model_file}
            new = self._load_inspector(self.active_recipe, live)
            self.interface.swap_inspector(new, _close_inspector)
            self.live_models = live
            log.info("station: model slot %s now runs %s", slot, model_file.parent)

    def _open_store(self) -> None:
        from cellinspect.settings import load_settings
        from cellinspect.storage.factory import open_store
        from cellinspect.storage.journal import ResultJournal
        from cellinspect.storage.writer import make_writer

        store_cfg = self.station.store
        overrides: dict[str, Any] = {"data_dir": store_cfg.data_dir}
        if store_cfg.url is not None:
            overrides["db_url"] = store_cfg.url
        overrides["host"] = self.station.api.host
        overrides["port"] = self.station.api.port
        self.settings = load_settings(store_cfg.settings, **overrides)
        self.store = open_store(self.settings)
        self.journal = ResultJournal(self.settings.resolved_journal_dir)
        self.journal.open()
        if self.station.mqtt.enabled:  # a kill -9 may have come between journal and outbox
            self.mqtt_recovered = self.journal.pending_results()
        self.writer = make_writer(self.settings, self.store)
        self.writer.attach_journal(self.journal)
        self.writer.start()  # replays what the journal holds from before (a crash, a stall)
        if self.station.forward.enabled:
            from cellinspect.plant.forwarder import forwarder_from

            self.forwarder = forwarder_from(
                self.station.forward, self.store, self.settings.data_dir, self.station.station_id
            ).start()

    def _open_camera(self, recipe_source: SourceConfig) -> TriggeredCamera:
        """The station's camera: its own `source:` if set, else the recipe's."""
        from cellinspect.sources.registry import open_source

        cfg = self.station.source or recipe_source
        if isinstance(cfg, SyntheticSource) and self.mode is not TriggerMode.FREE_RUN:
            # Triggered synthetic parts: the part id the PLC latched picks the part, so a
            # simulated PLC with the same plan knows the truth (cellinspect plc-sim).
            return SimCamera(rendered_catalog(cfg.count, cfg.seed, cfg.defect_rate))
        live = cfg.type in LIVE_SOURCE_TYPES
        return SourceCamera(
            open_source(cfg),
            live=live,
            every_frame=self.mode is TriggerMode.FREE_RUN or not live,
            frame_timeout_s=self.station.trigger.frame_timeout_ms / 1000.0,
        ).start()

    def _start_modbus(self) -> None:
        from cellinspect.netaddr import is_loopback
        from cellinspect.plc.modbus_adapter import ModbusServer

        cfg = self.station.modbus
        if not is_loopback(cfg.host):
            log.warning(
                "Modbus TCP binds %s: Modbus has no authentication; anyone on that network "
                "can trigger, select recipes and read results. Keep it on the cell network.",
                cfg.host,
            )
        if self.interface.config.heartbeat_timeout_s is None:
            log.warning(
                "modbus.heartbeat_timeout_s is null: the PLC heartbeat (HR7) is not supervised; "
                "a PLC that stops or never starts will not put the station in its safe state"
            )
        self.modbus = ModbusServer(
            self.image,
            host=cfg.host,
            port=cfg.port,
            max_connections=cfg.max_connections,
            allowed_clients=cfg.allowed_clients,
            on_connect=self._plc_connected,
        )
        self.modbus_port = self.modbus.start()
        log.info("Modbus TCP server on %s:%d", cfg.host, self.modbus_port)

    def _plc_connected(self, host: str) -> None:
        """A Modbus client connected (the adapter logs it): the PLC heartbeat is supervised."""
        del host
        self.interface.handshake.plc_connected()
        self.metrics.plc_connected()

    def _start_opcua(self) -> None:
        from cellinspect.station.opcua_link import start_opcua

        self.opcua = start_opcua(self)
        if self._interface is not None:
            self._interface.on_record_failed = self.opcua.machine.fail

    def _start_api(self) -> None:
        from cellinspect.api.app import create_app
        from cellinspect.api.server import ApiServerThread

        if self.store is None or self.writer is None or self.settings is None:
            raise ConfigError(
                f"{self.where}: api.enabled needs store.enabled (it serves the store)"
            )
        app = create_app(
            self.settings,
            self.store,
            _LiveInspector(self),
            writer=self.writer,
            station=self,
        )
        services: ApiServices = app.state.services
        self.metrics.register(services.metrics.registry)  # GET /metrics serves the station's
        cfg = self.station.api
        self.api = ApiServerThread(app, cfg.host, cfg.port, allow_remote=cfg.allow_remote).start()
        log.info("API and review page on %s/review", self.api.url)

    # ------------------------------------------------------------------ recipes

    def _factory(self, number: int) -> Callable[[], ImageInspector]:
        def load() -> ImageInspector:
            entry = self.catalog[number]
            inspector = self._new_inspector(number)
            if self._injected_camera is None and self.station.source is None:
                current = self.catalog[self.active_recipe].recipe.source
                if entry.recipe.source != current:
                    try:
                        self._pending_camera = self._open_camera(entry.recipe.source)
                    except Exception:
                        close = getattr(inspector, "close", None)
                        if close is not None:
                            close()
                        raise
            return inspector

        return load

    def _on_recipe(self, number: int, new: ImageInspector, old: ImageInspector) -> None:
        """A recipe went live (station idle): its deadline, fail-safe and camera with it."""
        entry = self.catalog[number]
        iface = self.interface
        changes: dict[str, Any] = {
            "deadline_ms": entry.recipe.runtime.deadline_ms,
            "fail_safe": entry.recipe.decision.fail_safe.verdict,
            "recipe_number": number,
            **self._overrides,
        }
        iface.config = dataclasses.replace(iface.config, **changes)
        pending, self._pending_camera = self._pending_camera, None
        if pending is not None:
            previous, self.camera = self.camera, pending
            iface.camera = pending
            if isinstance(previous, SourceCamera):
                previous.close()
        self.active_recipe = number
        health_link.recipe_live(self, number, new)
        if self.shadow is not None:
            log.warning(
                "shadow %s: cleared, the recipe it was built for is no longer live",
                self.shadow.slot,
            )
            self.clear_shadow()
        if self.opcua is not None:
            from cellinspect.station.opcua_link import recipe_went_live

            recipe_went_live(self.opcua, number)
        close = getattr(old, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ shadow runs

    def set_shadow(
        self, slot: str, model_dir: Path, version: str, *, queue_size: int | None = None
    ) -> None:
        """Judge every posted part again with `model_dir` in the live recipe's `slot`.

        The candidate's verdicts go to `shadow_results` only (lifecycle/shadow.py); a shadow
        set before replaces the old one. Raises (nothing changed) when it cannot load.
        """
        from cellinspect.lifecycle.shadow import DEFAULT_QUEUE_SIZE, ShadowRunner
        from cellinspect.lifecycle.shadow_store import ShadowStore

        if self.store is None:
            raise ConfigError(f"{self.where}: shadow runs need store.enabled (rows are stored)")
        entry = self.catalog[self.active_recipe]
        runner = ShadowRunner.build(
            entry.path,
            entry.recipe,
            slot,
            model_dir,
            version,
            ShadowStore(self.store.engine),
            trusted_keys=self.trusted_model_keys,
            queue_size=queue_size or DEFAULT_QUEUE_SIZE,
            last_trigger=lambda: self.interface.last_accepted_mono,
        ).start()
        with self._shadow_lock:
            old, self.shadow = self.shadow, runner
            self.interface.shadow = runner.offer
        if old is not None:
            old.close()

    def clear_shadow(self) -> None:
        """Stop the shadow run (queued frames are recorded as skipped); no-op without one."""
        with self._shadow_lock:
            old, self.shadow = self.shadow, None
            if self._interface is not None:
                self._interface.shadow = None
        if old is not None:
            old.close()

    def select_recipe(self, number: int) -> ErrorCode:
        """API / OPC UA recipe select: same rules and codes as the PLC's command 1."""
        return self.interface.select_recipe(number)

    # ------------------------------------------------------------------ triggers

    def trigger(
        self, part_id: int | None = None, origin: str = "software", timeout_s: float | None = None
    ) -> InspectedFrame:
        """One part now (API, OPC UA): waits for the station to be free, then for the verdict."""
        pid = next(self._part_ids) if part_id is None else part_id
        wait = timeout_s if timeout_s is not None else self._job_timeout_s()
        future = self._submit(pid, 0, None, origin, wait)
        return future.result(timeout=wait)

    def _job_timeout_s(self) -> float:
        cfg = self.interface.config
        return cfg.deadline_ms / 1000.0 + self.station.trigger.frame_timeout_ms / 1000.0 + 30.0

    def _submit(
        self, part_id: int, encoder: int, item: SourceItem | None, origin: str, wait_s: float
    ) -> Future[InspectedFrame]:
        end = time.monotonic() + wait_s
        with self._trigger_lock:  # one station-side trigger at a time, in arrival order
            while True:
                try:
                    return self.interface.trigger(part_id, encoder, item=item, origin=origin)
                except StationBusyError:
                    refusal = self.interface.handshake.refusal()
                    if refusal is not None:  # in error or stopping: waiting will not help
                        raise StationBusyError(refusal) from None
                    if time.monotonic() > end:
                        raise
                    time.sleep(0.002)

    def _free_run_loop(self) -> None:
        previous: Future[InspectedFrame] | None = None

        def judge(item: SourceItem) -> None:
            nonlocal previous
            if previous is not None:
                _wait_quietly(previous)
            part_id = item.part_id if item.part_id is not None else next(self._part_ids)
            try:
                previous = self._submit(part_id, item.encoder or 0, item, "free_run", 3600.0)
            except StationBusyError as err:
                self._judge_unsubmitted(item, str(err))

        while not self.stop_requested.is_set():
            camera = self.camera  # a recipe with its own source may have replaced it
            assert isinstance(camera, SourceCamera), "free run needs a source camera"
            item = camera.next_item(0.2)
            if item is None:
                if camera.ended:
                    self._source_done(camera)
                    break
                continue
            judge(item)
        if isinstance(self.camera, SourceCamera):
            # Frames already read (a hot-folder file, a streamed frame) are judged, not lost.
            left = self.camera.stop_reading()
            if left:
                log.info("stop: judging %d frame(s) already read from the source", len(left))
            for item in left:
                judge(item)
        if previous is not None:
            _wait_quietly(previous)

    def _source_done(self, camera: SourceCamera) -> None:
        why = camera.last_error
        log.info("source %s ended%s", camera.name, f" ({why})" if why else "")
        self.source_ended.set()
        if self.exit_when_source_ends:
            self.stop_requested.set()

    def _judge_unsubmitted(self, item: SourceItem, why: str) -> None:
        """A frame the station could not take still becomes a (fail-safe) stored result."""
        failure = FrameFailure.instead_of(item, f"not inspected: {why}")
        iface = self.interface
        inspected = iface.stamp(iface.fail_safe_result(failure, failure.reason))
        if self.journal is not None:
            try:
                self.journal.append(inspected.result)
            except Exception as err:  # no output acts on it; the writer still tries the store
                self.unrecorded += 1
                log.error("station: result %s not journaled (%s)", inspected.result.result_id, err)
        self._on_result(inspected)

    # ------------------------------------------------------------------ outputs

    def record_upload(self, inspected: InspectedFrame) -> InspectedFrame:
        """An API upload's result, stamped and journaled before the reply carries its verdict.

        Raises (the route answers 503) when the journal cannot take it: the same rule as for a
        PLC part, nothing is given out that is not recorded.
        """
        stamped = self.interface.stamp(inspected)
        if self.journal is not None:
            self.journal.append(stamped.result)
        return stamped

    def _record(self, inspected: InspectedFrame) -> None:
        """The job path's durability step: journaled and fsynced before any output."""
        assert self.journal is not None
        self.journal.append(inspected.result)

    @property
    def results_lost(self) -> int:
        """Judged results that reached neither the journal nor the store (exit code 3)."""
        lost = self.unrecorded
        if self._interface is not None:
            lost += self._interface.results_lost
        if self.writer is not None:
            lost += self.writer.stats.dropped
        return lost

    def alarms(self) -> list[str]:
        """Conditions an operator must act on, for the status line and GET /station."""
        out: list[str] = []
        iface = self._interface
        if iface is not None and iface.record_error is not None:
            out.append(
                f"RECORD_FAILED: results cannot be recorded, triggers refused "
                f"({iface.record_error})"
            )
        if self.results_lost:
            out.append(f"RESULTS_LOST: {self.results_lost} result(s) not recorded")
        error = iface.handshake.active_error if iface is not None else None
        if error is not None and error is not ErrorCode.RECORD_FAILED:
            out.append(f"{error.name}: PLC interface in its safe state, triggers refused")
        if self.writer is not None and self.writer.stats.store_failing:
            out.append(
                "STORE_UNREACHABLE: the result store does not answer; results wait in the "
                f"journal ({self.writer.stats.journal_pending} pending), nothing is lost"
            )
        out.extend(self.health.alarm_lines())
        return out

    def _on_result(self, inspected: InspectedFrame) -> None:
        if self.mqtt is not None:
            try:  # in the outbox before the store commits it (and the journal forgets it)
                self.mqtt.result(inspected.result)
            except Exception:
                log.exception(
                    "station: MQTT outbox for result %s failed", inspected.result.result_id
                )
        if self.writer is not None:
            self.writer.submit(inspected)
        if self.extra_on_result is not None:
            self.extra_on_result(inspected)
        try:
            self.metrics.result(inspected)
        except Exception:  # metrics must never cost a result
            log.exception("station: metrics for result %s failed", inspected.result.result_id)

    def _on_outcome(self, inspected: InspectedFrame, job: TriggerJob) -> None:
        now = time.monotonic()
        self.counts.add(inspected, (now - job.accepted_mono) * 1000.0, now)
        try:
            self.health.observe(inspected)
        except Exception:  # health must never cost a result
            log.exception("station: health for result %s failed", inspected.result.result_id)
        if self.opcua is not None and job.origin != "opcua":
            self.opcua.publish_result(inspected)

    def _on_target(self, target: PickTarget) -> None:
        if self.robot is not None:
            self.robot.send(target)
        if self.extra_on_target is not None:
            self.extra_on_target(target)

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        self.stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (signal, source end); True if it was."""
        return self.stop_requested.wait(timeout)

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop triggers, finish in-flight parts, post and store them, then close the links."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_requested.set()
        iface = self._interface
        if self._free_run is not None:
            self._free_run.join(timeout=drain_timeout_s)
        if iface is not None:
            iface.handshake.stop_triggers()
            if not iface.wait_idle(drain_timeout_s):
                log.error("station: parts still in flight after %.0f s at stop", drain_timeout_s)
            iface.stop()
        for step, action in (
            ("camera", self._close_camera),
            ("shadow", self.clear_shadow),
            ("robot", self.robot.close if self.robot else None),
            ("store writer", self.writer.close if self.writer else None),
            ("journal", self.journal.close if self.journal else None),
            ("MQTT", self.mqtt.close if self.mqtt else None),
            ("forwarder", self.forwarder.close if self.forwarder else None),
            ("OPC UA", self.opcua.stop if self.opcua else None),
            ("API", self.api.stop if self.api else None),
            ("Modbus", self.modbus.stop if self.modbus else None),
            ("store", self.store.close if self.store else None),
            ("inspector", getattr(iface.inspector, "close", None) if iface else None),
        ):
            if action is None:
                continue
            try:
                action()
            except Exception:
                log.exception("station: closing the %s failed", step)

    def _close_camera(self) -> None:
        for camera in (self.camera, self._pending_camera):
            # SourceCamera (reader thread), SimCamera (read-ahead renders): no camera thread
            # may still be inside OpenCV when the process exits.
            close = getattr(camera, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> StationRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """A snapshot for the status line, the log and GET /station."""
        from cellinspect.station.status import snapshot

        return snapshot(self)


def _close_inspector(inspector: ImageInspector) -> None:
    """Close an inspector no part uses any more (after a model swap)."""
    close = getattr(inspector, "close", None)
    if close is not None:
        close()


def _wait_quietly(future: Future[InspectedFrame]) -> None:
    try:
        future.result(timeout=3600.0)
    except Exception:  # the job path logged it and posted the fail-safe result
        log.debug("free run: previous job ended with an error", exc_info=True)
