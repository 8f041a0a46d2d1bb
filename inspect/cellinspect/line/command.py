"""Entry points behind `cellinspect line` and `cellinspect plc-sim`, for the CLI to call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from cellinspect.config import load_recipe
from cellinspect.entities import InspectedFrame
from cellinspect.line.audit import LineReport
from cellinspect.line.benchmark import BenchmarkReport, RateStep, find_max_rate
from cellinspect.line.cell import LineConfig, LineProgress, rendered_catalog, run_cell
from cellinspect.plc.conveyor import place_parts
from cellinspect.plc.modbus_adapter import ModbusServer
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.robot import HomographyPlane, PickTarget, PlaneMapping
from cellinspect.plc.sim_camera import SimCamera
from cellinspect.plc.sim_plc import LinkFault, PlcConfig, PlcCounters, SimPlc
from cellinspect.plc.station_interface import StationConfig, StationInterface


def plane_from_file(path: Path | str) -> PlaneMapping:
    """Pick poses in plane mm from a plane calibration file (calibration/plane.py format)."""
    from cellinspect.calibration.plane import load_plane_calibration

    return HomographyPlane(load_plane_calibration(path).homography)


def run_line(
    recipe_path: Path | str,
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
    make_overlays: bool = False,
) -> LineReport:
    """The main job: the simulated cell on a recipe, until `parts` have passed the gate.

    The deadline defaults to the recipe's `runtime.deadline_ms`; its `decision.fail_safe`
    decides what a dropped frame becomes. `make_overlays` draws heatmaps for the review page.
    """
    from cellinspect.runtime.inspector import Inspector

    recipe = load_recipe(recipe_path)
    inspector = Inspector.from_recipe(recipe_path, recipe=recipe, make_overlays=make_overlays)
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
    )
    plane = plane_from_file(plane_calibration) if plane_calibration else None
    try:
        return run_cell(
            config,
            inspector,
            on_result=on_result,
            on_target=on_target,
            plane=plane,
            progress=progress,
            stop=stop,
        )
    finally:
        inspector.close()


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
    recipe_path: Path | str,
    host: str = "127.0.0.1",
    port: int = 502,
    parts: int = 100,
    seed: int = 0,
    defect_rate: float = 0.3,
    deadline_ms: float | None = None,
    on_result: Callable[[InspectedFrame], None] | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[int], None] | None = None,
) -> StationInterface:
    """The station alone: Modbus server plus a simulated camera, for `cellinspect plc-sim`.

    Its camera renders the same part plan (seed, defect rate) as `run_plc_sim`, so the two
    processes agree on which part id is which part. Blocks until `stop` is set; `ready` gets
    the bound port.
    """
    from cellinspect.runtime.inspector import Inspector

    recipe = load_recipe(recipe_path)
    inspector = Inspector.from_recipe(recipe_path, recipe=recipe)
    catalog = rendered_catalog(parts, seed, defect_rate)
    catalog.prefetch(range(1, 1 + catalog.read_ahead))
    image = RegisterImage()
    station = StationInterface(
        image,
        SimCamera(catalog),
        inspector,
        StationConfig(
            deadline_ms=deadline_ms or recipe.runtime.deadline_ms,
            fail_safe=recipe.decision.fail_safe.verdict,
        ),
        on_result=on_result,
    )
    server = ModbusServer(image, host=host, port=port)
    stop = stop or threading.Event()
    bound = server.start()
    station.start()
    try:
        if ready is not None:
            ready(bound)
        stop.wait()
    finally:
        station.stop()
        server.stop()
        inspector.close()
    return station
