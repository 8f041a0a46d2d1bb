"""`cellinspect line`: the whole simulated cell in one process, and its final report.

Runs the real station runtime (`cellinspect run`, stations/sim.yaml) with a simulated camera
(parts rendered or sample images, with ground truth) swapped in, and drives it with the
simulated PLC (real Modbus client, conveyor, photo-eye, FIFO tracking, reject gate). Store,
API and robot are the station file's; `on_result` and `on_target` see every result and pick
target as well.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinspect import shipped
from cellinspect.entities import InspectedFrame
from cellinspect.line.audit import LineReport, build_report
from cellinspect.line.config import LineConfig
from cellinspect.line.drift_report import drift_lead
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.registers import Reg, Status
from cellinspect.plc.robot import PickTarget, PlaneMapping
from cellinspect.plc.sim_camera import (
    FolderCatalog,
    PartCatalog,
    RenderCatalog,
    SimCamera,
    rendered_catalog,
)
from cellinspect.plc.sim_plc import PlcConfig, PlcCounters, SimPlc
from cellinspect.runtime.protocols import ImageInspector
from cellinspect.station.config import StationFile, TriggerMode, load_station
from cellinspect.station.runtime import StationRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LineProgress:
    """A live snapshot for the progress display."""

    elapsed_s: float
    config: LineConfig
    plc: PlcCounters
    station_busy: bool
    inspected: int = field(default=0)


def make_catalog(config: LineConfig) -> PartCatalog:
    if config.samples is not None:
        return FolderCatalog(config.samples, seed=config.seed)
    return rendered_catalog(
        config.parts,
        config.seed,
        config.defect_rate,
        new_defect=config.new_defect,
        new_defect_share=config.new_defect_share,
    )


def _labels(catalog: PartCatalog, count: int) -> Sequence[str]:
    return [catalog.label(pid) for pid in range(1, count + 1)]


def sim_station_file() -> Path:
    """The shipped stations/sim.yaml (this checkout's, or the wheel's copy): what `line` runs."""
    return shipped.sim_station()


def line_station(config: LineConfig, station: StationFile | None = None) -> StationFile:
    """The station file the line runs, with the line's own Modbus address and PLC trigger.

    Store and API stay as the file says when it is given (the `line` command); the default
    (tests, benchmarks) keeps no results and serves no API.
    """
    if station is None:
        base = load_station(sim_station_file())
        base = base.model_copy(
            update={
                "store": base.store.model_copy(update={"enabled": False}),
                "api": base.api.model_copy(update={"enabled": False}),
                "robot": base.robot.model_copy(update={"enabled": False}),
            }
        )
    else:
        base = station
    return base.model_copy(
        update={
            "trigger": base.trigger.model_copy(update={"mode": TriggerMode.PLC}),
            "modbus": base.modbus.model_copy(
                update={
                    "enabled": True,
                    "host": config.host,
                    "port": config.modbus_port,
                    "heartbeat_timeout_s": config.heartbeat_timeout_s,
                }
            ),
        }
    )


def run_cell(
    config: LineConfig,
    inspector: ImageInspector | None = None,
    catalog: PartCatalog | None = None,
    on_result: Callable[[InspectedFrame], None] | None = None,
    on_target: Callable[[PickTarget], None] | None = None,
    plane: PlaneMapping | None = None,
    progress: Callable[[LineProgress], None] | None = None,
    progress_every_s: float = 0.25,
    stop: threading.Event | None = None,
    station: StationFile | None = None,
    on_started: Callable[[StationRuntime], None] | None = None,
) -> LineReport:
    """Run the simulated cell until every part has passed the gate (or `stop` is set).

    The station is the real station runtime (`cellinspect run`) on the line's station file;
    only the camera (parts from `catalog`), the PLC with its conveyor and gate, and (when the
    station file enables it) the robot are simulated. `inspector` replaces the catalog's
    models (tests); None loads the station file's active recipe.
    """
    catalog = catalog or make_catalog(config)
    labels = _labels(catalog, config.parts)
    run_ms: list[float] = []  # session.run per inspection (one per shared trunk or model)

    def timed(inspected: InspectedFrame) -> None:
        if (ms := inspected.result.timings_ms.get("inference")) is not None:
            run_ms.append(ms)
        if on_result is not None:
            on_result(inspected)

    parts = place_parts(
        labels,
        config.pitch_mm,
        seed=config.seed,
        jitter=config.spacing_jitter,
        min_gap_mm=min(70.0, config.pitch_mm),
    )
    camera = SimCamera(
        catalog,
        drop_probability=config.drop_probability,
        drop_parts=config.drop_parts,
        seed=config.seed,
        drift=config.drift,
    )
    runtime = StationRuntime(
        line_station(config, station),
        where="line",
        camera=camera,
        make_overlays=station is not None and station.store.enabled,
        on_result=timed,
        on_target=on_target,
        inspector_factory=None if inspector is None else (lambda _number: inspector),
        interface_overrides={
            "deadline_ms": config.deadline_ms,
            "heartbeat_timeout_s": config.heartbeat_timeout_s,
            "fail_safe": config.fail_safe,
        },
        plane=plane,
    )
    stop = stop or threading.Event()
    started = time.monotonic()
    prefetch = None
    plc = None
    try:
        runtime.start()
        if on_started is not None:
            on_started(runtime)
        port = runtime.modbus_port
        assert port is not None, "the line's station serves Modbus"
        interface = runtime.interface
        plc = SimPlc(
            config.host,
            port,
            parts,
            config.conveyor(),
            PlcConfig(scan_ms=config.scan_ms, buffer_results=config.buffer_results),
            faults=config.faults,
        )
        prefetch = _Prefetcher(catalog, plc) if isinstance(catalog, RenderCatalog) else None
        if prefetch is not None:
            prefetch.start()
        plc.start()
        timeout = config.timeout_s or config.expected_duration_s * 3 + 10.0
        while not plc.join(timeout=progress_every_s):
            elapsed = time.monotonic() - started
            if progress is not None:
                progress(
                    LineProgress(
                        elapsed,
                        config,
                        plc.snapshot(),
                        bool(runtime.image.get(Reg.STATUS) & Status.BUSY),
                        len(interface.records),
                    )
                )
            if stop.is_set() or elapsed > timeout:
                plc.stop()
        if progress is not None:
            progress(
                LineProgress(
                    time.monotonic() - started,
                    config,
                    plc.snapshot(),
                    False,
                    len(interface.records),
                )
            )
    finally:
        if plc is not None:
            plc.stop()
            plc.join(timeout=5)
        if prefetch is not None:
            prefetch.stop()
        runtime.stop()
    if plc.error is not None:
        raise RuntimeError(f"simulated PLC failed: {plc.error}") from plc.error
    report = build_report(
        config,
        plc,
        runtime.interface,
        duration_s=time.monotonic() - started,
        port=port,
        robot=runtime.robot.counters if runtime.robot is not None else None,
    )
    if run_ms:
        report = dataclasses.replace(
            report,
            run_p50_ms=float(np.percentile(run_ms, 50)),
            run_p99_ms=float(np.percentile(run_ms, 99)),
        )
    if config.drift is None:
        return report
    return dataclasses.replace(report, drift=drift_lead(config.drift, runtime.health, report.audit))


class _Prefetcher:
    """Renders parts a few positions ahead of the photo-eye, off the trigger path."""

    def __init__(
        self, catalog: RenderCatalog, plc: SimPlc, ahead: int = 6, urgent: int = 2
    ) -> None:
        self.catalog = catalog
        self.plc = plc
        self.ahead = ahead
        self.urgent = urgent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="camera-prefetch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        done = 0
        total = len(self.catalog.labels)
        while not self._stop.is_set() and done < total:
            snap = self.plc.snapshot()
            target = min(total, snap.seen + self.ahead)
            # Render while the station is idle (every part seen has its result or was missed):
            # a render (~30 ms of CPU) beside an inspection made it ~2x slower at 2 parts/s.
            # Fewer than `urgent` parts ahead, it renders anyway: the trigger path never does.
            idle = snap.results + snap.missed_triggers >= snap.seen
            if done < target and (idle or done < snap.seen + self.urgent):
                done += 1
                self.catalog.prefetch([done])
            else:
                self._stop.wait(0.005)
