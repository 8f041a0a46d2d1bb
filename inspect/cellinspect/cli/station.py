"""`cellinspect run STATION.yaml`: the station as a long-running process.

Runs until SIGINT or SIGTERM (or, with --until-source-ends, until a finite source is done),
then stops in order so that nothing judged is lost: see StationRuntime.stop().
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from cellinspect.cli.support import fail, user_errors

log = logging.getLogger(__name__)

StationArg = Annotated[
    Path, typer.Argument(help="Station file (YAML), e.g. stations/example.yaml.")
]


RESULTS_LOST_EXIT = 3
"""Exit code of `cellinspect run` when judged results reached neither journal nor store."""


def run(
    station_file: StationArg,
    until_source_ends: Annotated[
        bool,
        typer.Option(
            "--until-source-ends",
            help="Stop once a finite source (files, folder, video) has been inspected.",
        ),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Log level: debug, info, warning, error.")
    ] = "info",
) -> None:
    """Run a station: its recipe's camera, stream or folder, its PLC, OPC UA, robot, store, API."""
    from cellinspect.station.config import load_station
    from cellinspect.station.runtime import StationRuntime
    from cellinspect.station.status import StatusReporter, configure_logging

    # OpenCV's FFmpeg backend prints its own lines ("[tcp @ 0x...] Connection refused") to
    # stderr, which would break one-JSON-object-per-line; the stream source already records
    # every failed attempt as a fail-safe result with the reason, so FFmpeg stays quiet.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise fail(f"--log-level: unknown level {log_level!r}")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)  # restored at the end: the caller's logging
    configure_logging(sys.stderr, level)
    try:
        with user_errors():
            station = load_station(station_file)
            runtime = StationRuntime(
                station, where=str(station_file), exit_when_source_ends=until_source_ends
            )
            stop_signal: list[str] = []

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                stop_signal.append(signal.Signals(signum).name)
                runtime.request_stop()

            previous = {
                sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            reporter: StatusReporter | None = None
            try:
                runtime.start()
                _announce(runtime)
                reporter = StatusReporter(runtime).start()
                while not runtime.wait(0.5):
                    pass
            finally:
                why = stop_signal[0] if stop_signal else "source ended"
                log.info("station %s: stopping (%s)", station.station_id, why)
                runtime.stop()
                if reporter is not None:
                    reporter.stop()  # after the stop: its last line shows the final counts
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                _farewell(runtime)
        if runtime.results_lost:
            # A supervisor must see that results were lost, not a clean exit (docs/deploy.md).
            log.error("station %s: %d result(s) lost", station.station_id, runtime.results_lost)
            raise typer.Exit(RESULTS_LOST_EXIT)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def _announce(runtime: object) -> None:
    from cellinspect.station.runtime import StationRuntime

    assert isinstance(runtime, StationRuntime)
    snap = runtime.status()
    where = {
        name: info.get("address") or info.get("endpoint") or info.get("url") or info.get("name")
        for name, info in snap["links"].items()
        if name in {"modbus", "opcua", "api", "camera"}
    }
    links = ", ".join(f"{name} {value}" for name, value in where.items())
    # The snapshot rides along as structured data: a supervisor (or a test) reads the bound
    # ports from this one line when the station file asked for port 0.
    log.info(
        "station %s running recipe %d (%s), trigger %s; %s",
        snap["station_id"],
        snap["recipe"]["number"],
        snap["recipe"]["name"],
        snap["trigger"],
        links,
        extra={"status": snap, "event": "running"},
    )


def _farewell(runtime: object) -> None:
    from cellinspect.entities import Verdict
    from cellinspect.station.runtime import StationRuntime

    assert isinstance(runtime, StationRuntime)
    v = runtime.counts.verdicts
    store = ""
    if runtime.writer is not None:
        s = runtime.writer.stats
        store = f"; store: {s.written} written, {s.spilled} spilled, {s.dropped} dropped"
    robot = ""
    if runtime.robot is not None:
        rc = runtime.robot.counters
        robot = (
            f"; robot: {rc.acknowledged} acknowledged of {rc.sent} sent, {rc.timed_out} timed out"
        )
    log.info(
        "station %s stopped: %d parts (pass %d, fail %d, review %d)%s%s",
        runtime.station.station_id,
        runtime.counts.parts,
        v[Verdict.PASS],
        v[Verdict.FAIL],
        v[Verdict.REVIEW],
        store,
        robot,
        extra={"status": runtime.status(), "event": "stopped"},
    )


def register(app: typer.Typer) -> None:
    """Add `run` to the main app."""
    app.command("run")(run)
