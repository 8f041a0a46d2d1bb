"""Entry points behind `cellinspect line` and `cellinspect plc-sim`, for the CLI to call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from cellinspect.config import SyntheticSource, load_recipe
from cellinspect.datagen.drift import Drift, DriftKind
from cellinspect.entities import InspectedFrame
from cellinspect.line.audit import LineReport
from cellinspect.line.benchmark import BenchmarkReport, RateStep, find_max_rate
from cellinspect.line.cell import (
    LineProgress,
    line_station,
    run_cell,
    sim_station_file,
)
from cellinspect.line.config import LineConfig
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.robot import HomographyPlane, PickTarget, PlaneMapping, SimRobot
from cellinspect.plc.sim_camera import rendered_catalog
from cellinspect.plc.sim_plc import LinkFault, PlcConfig, PlcCounters, SimPlc
from cellinspect.station.config import StationFile, TriggerMode, load_station
from cellinspect.station.runtime import StationRuntime


def plane_from_file(path: Path | str) -> PlaneMapping:
    """Pick poses in plane mm from a plane calibration file (calibration/plane.py format)."""
    from cellinspect.calibration.plane import load_plane_calibration

    return HomographyPlane(load_plane_calibration(path).homography)


def with_active_recipe(station: StationFile, recipe_path: Path | str) -> StationFile:
    """The station file with its active catalog entry pointing at another recipe file."""
    recipes = dict(station.recipes)
    recipes[station.active_recipe] = Path(recipe_path).resolve()
    return station.model_copy(update={"recipes": recipes})


def make_drift(kind: DriftKind, start_part: int, full_part: int) -> Drift:
    """`--drift`: the fault ramps from `start_part` to full severity at `full_part`."""
    return Drift(kind, start_part, full_part)


def run_line(
    recipe_path: Path | str | None = None,
    parts: int = 100,
    rate_per_min: float = 120.0,
    seed: int = 0,
    modbus_port: int = 0,
    on_result: Callable[[InspectedFrame], None] | None = None,
    on_target: Callable[[PickTarget], None] | None = None,
    progress: Callable[[LineProgress], None] | None = None,
    samples: Path | None = None,
    deadline_ms: float | None = None,
    defect_rate: float = 0.3,
    drop_probability: float = 0.0,
    faults: Sequence[LinkFault] = (),
    plane_calibration: Path | None = None,
    stop: threading.Event | None = None,
    station: StationFile | None = None,
    sim_robot: bool = False,
    on_started: Callable[[StationRuntime], None] | None = None,
    drift: Drift | None = None,
    new_defect: str | None = None,
    new_defect_share: float = 0.5,
) -> LineReport:
    """The main job: the station runtime on the simulated cell, until `parts` passed the gate.

    `station` is the station file to run (None: stations/sim.yaml with no store, no API);
    `recipe_path` replaces its active recipe. The deadline defaults to the recipe's
    `runtime.deadline_ms`; its `decision.fail_safe` decides what a dropped frame becomes.
    `sim_robot` starts a simulated robot and points the station's robot link at it.
    `drift` degrades the simulated camera or the parts slowly (docs/health.md).
    `new_defect` turns a seeded `new_defect_share` of the defective parts into a defect kind
    the shipped models never saw (docs/benchmarks/adaptive-loop.md).
    """
    base = line_station(LineConfig(modbus_port=modbus_port), station)
    if recipe_path is not None:
        base = with_active_recipe(base, recipe_path)
    recipe = load_recipe(base.recipes[base.active_recipe])
    config = LineConfig(
        parts=parts,
        rate_per_min=rate_per_min,
        seed=seed,
        defect_rate=defect_rate,
        deadline_ms=deadline_ms or recipe.runtime.deadline_ms,
        fail_safe=recipe.decision.fail_safe.verdict,
        drop_probability=drop_probability,
        faults=tuple(faults),
        samples=samples,
        modbus_port=modbus_port,
        drift=drift,
        new_defect=new_defect,
        new_defect_share=new_defect_share,
    )
    plane = plane_from_file(plane_calibration) if plane_calibration else None
    robot = SimRobot() if sim_robot else None
    try:
        if robot is not None:
            port = robot.start()
            base = base.model_copy(
                update={
                    "robot": base.robot.model_copy(
                        update={"enabled": True, "host": robot.host, "port": port}
                    )
                }
            )
        return run_cell(
            config,
            catalog=None,
            on_result=on_result,
            on_target=on_target,
            plane=plane,
            progress=progress,
            stop=stop,
            station=base,
            on_started=on_started,
        )
    finally:
        if robot is not None:
            robot.stop()


def run_plc_sim(
    host: str = "127.0.0.1",
    port: int = 502,
    parts: int = 100,
    rate_per_min: float = 120.0,
    seed: int = 0,
    defect_rate: float = 0.3,
    scan_ms: float = 10.0,
    gate_travel_s: float = 1.5,
    progress: Callable[[PlcCounters], None] | None = None,
    stop: threading.Event | None = None,
) -> PlcCounters:
    """`cellinspect plc-sim`: drive a running station's Modbus server with the simulated line.

    Ground truth comes from the same part plan (seed, defect rate) that a station's simulated
    camera renders, so escapes and false rejects are counted against the truth.
    """
    config = LineConfig(
        parts=parts,
        rate_per_min=rate_per_min,
        seed=seed,
        defect_rate=defect_rate,
        scan_ms=scan_ms,
        gate_travel_s=gate_travel_s,
    )
    labels = rendered_catalog(parts, seed, defect_rate).labels
    belt = place_parts(labels, config.pitch_mm, seed=seed, jitter=config.spacing_jitter)
    plc = SimPlc(host, port, belt, config.conveyor(), PlcConfig(scan_ms=scan_ms))
    stop = stop or threading.Event()
    plc.start()
    while not plc.join(timeout=0.25):
        if progress is not None:
            progress(plc.snapshot())
        if stop.is_set():
            plc.stop()
    if plc.error is not None:
        raise RuntimeError(f"simulated PLC failed: {plc.error}") from plc.error
    return plc.snapshot()


def run_benchmark(
    recipe_path: Path | str,
    parts_per_step: int = 100,
    start_per_min: float = 120.0,
    max_per_min: float = 12_000.0,
    seed: int = 0,
    on_step: Callable[[RateStep], None] | None = None,
) -> BenchmarkReport:
    """`cellinspect line --benchmark`: the highest clean part rate on this machine."""
    from cellinspect.runtime.inspector import Inspector

    recipe = load_recipe(recipe_path)
    inspector = Inspector.from_recipe(recipe_path, recipe=recipe)
    base = LineConfig(
        parts=parts_per_step,
        seed=seed,
        deadline_ms=recipe.runtime.deadline_ms,
        fail_safe=recipe.decision.fail_safe.verdict,
    )
    # Rendered once up front: rendering must not compete with the station being measured.
    catalog = rendered_catalog(parts_per_step, seed, base.defect_rate, cache_size=parts_per_step)
    catalog.prefetch(range(1, parts_per_step + 1))
    try:
        return find_max_rate(
            inspector, base, start_per_min, max_per_min, catalog=catalog, on_step=on_step
        )
    finally:
        inspector.close()


def serve_station(
    recipe_path: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 502,
    parts: int = 100,
    seed: int = 0,
    defect_rate: float = 0.3,
    stop: threading.Event | None = None,
    ready: Callable[[int], None] | None = None,
    station_file: Path | None = None,
) -> StationRuntime:
    """The simulated station alone (stations/sim.yaml: rendered parts on the PLC's part ids).

    What `cellinspect run stations/sim.yaml` runs, with the part plan (seed, defect rate)
    that `run_plc_sim` also uses, so the two processes agree on which part id is which part.
    Blocks until `stop` is set; `ready` gets the bound Modbus port.
    """
    station = load_station(station_file or sim_station_file())
    if recipe_path is not None:
        station = with_active_recipe(station, recipe_path)
    station = station.model_copy(
        update={
            "source": SyntheticSource(count=parts, seed=seed, defect_rate=defect_rate),
            "trigger": station.trigger.model_copy(update={"mode": TriggerMode.PLC}),
            "modbus": station.modbus.model_copy(
                update={"enabled": True, "host": host, "port": port}
            ),
            "store": station.store.model_copy(update={"enabled": False}),
            "api": station.api.model_copy(update={"enabled": False}),
        }
    )
    runtime = StationRuntime(station, where="station", make_overlays=False)
    stop = stop or threading.Event()
    runtime.start()
    try:
        if ready is not None and runtime.modbus_port is not None:
            ready(runtime.modbus_port)
        stop.wait()
    finally:
        runtime.stop()
    return runtime
