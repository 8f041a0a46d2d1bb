"""Commands of the running cell: the simulated line, the PLC simulator, the API, the export.

Registered on the main app by `cli/root.py`; kept apart so the batch-inspection commands
do not import the web and PLC stacks.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cellinspect import shipped
from cellinspect.cli.support import console, fail, shipped_default, shipped_if_missing, user_errors
from cellinspect.datagen.drift_kind import DriftKind
from cellinspect.export.dataset import ManifestFormat

if TYPE_CHECKING:
    from cellinspect.station.config import StationFile
    from cellinspect.station.runtime import StationRuntime

SettingsOpt = Annotated[
    Path | None,
    typer.Option("--settings", help="Station settings (YAML); CELLINSPECT_* variables override."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder for the SQLite database and kept images."),
]
LINE_RECIPE = Path("recipes/flange.yaml")
LINE_STATION = Path("stations/sim.yaml")


def line(
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="Run this recipe instead of the station's active one."),
    ] = None,
    station_file: Annotated[
        Path,
        typer.Option(
            "--station",
            help="Station file the simulated cell runs; the shipped one when the default is "
            "not here.",
            callback=shipped_default(LINE_STATION, shipped.SIM_STATION),
        ),
    ] = LINE_STATION,
    parts: Annotated[int, typer.Option(min=1, help="Parts to run through the cell.")] = 100,
    rate: Annotated[float, typer.Option(min=1.0, help="Parts per minute.")] = 120.0,
    seed: Annotated[int, typer.Option(help="Seed of the part sequence.")] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
    drop_probability: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Camera frames dropped (fault injection).")
    ] = 0.0,
    modbus_port: Annotated[int, typer.Option(help="Station Modbus port (0: a free one).")] = 0,
    api_port: Annotated[
        int | None, typer.Option(help="API / review page port (default: the station file's).")
    ] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not start the API.")] = False,
    no_store: Annotated[bool, typer.Option("--no-store", help="Keep no results.")] = False,
    no_robot: Annotated[
        bool, typer.Option("--no-robot", help="Do not start the simulated robot.")
    ] = False,
    settings_file: SettingsOpt = None,
    data_dir: DataDirOpt = None,
    samples: Annotated[
        Path | None, typer.Option(help="Serve these labelled images instead of rendering parts.")
    ] = None,
    benchmark: Annotated[
        bool, typer.Option("--benchmark", help="Find the highest part rate with no late result.")
    ] = False,
    drift: Annotated[
        DriftKind | None,
        typer.Option(
            help="Degrade the camera (focus, light, shift) or the parts (wear) slowly, from "
            "--drift-start on; the summary says when health alarmed and when errors rose."
        ),
    ] = None,
    drift_start: Annotated[
        int, typer.Option(min=1, help="Last undrifted part (the health baseline is before it).")
    ] = 60,
    drift_parts: Annotated[
        int, typer.Option(min=1, help="Parts over which the drift reaches full severity.")
    ] = 400,
    new_defect: Annotated[
        str | None,
        typer.Option(
            help="A defect kind the shipped models never saw (haze, hairline) on a share of the "
            "defective parts: the line changed (docs/benchmarks/adaptive-loop.md)."
        ),
    ] = None,
    new_defect_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of defective parts with --new-defect.")
    ] = 0.5,
) -> None:
    """The main job: `run` on the simulated cell (camera, PLC, conveyor, gate, robot), audited."""
    from cellinspect.line.command import make_drift, run_benchmark, run_line
    from cellinspect.line.console import live_progress, report_table

    with user_errors():
        if benchmark:
            result = run_benchmark(
                recipe or shipped_if_missing(LINE_RECIPE, shipped.RECIPE),
                on_step=lambda step: console.print(f"  {step}", highlight=False),
            )
            console.print(
                f"highest clean rate: {result.max_clean_rate_per_min:.0f} parts/min "
                "(no late result, no missed trigger)"
            )
            return
        if data_dir is None and shipped.is_packaged(station_file):
            data_dir = Path("cellinspect-data")  # here, not inside the installed package
        station = _line_station(station_file, api_port, no_api, no_store, settings_file, data_dir)
        stop = threading.Event()
        with live_progress(console) as progress:
            try:
                report = run_line(
                    recipe,
                    parts=parts,
                    rate_per_min=rate,
                    seed=seed,
                    modbus_port=modbus_port,
                    progress=progress,
                    samples=samples,
                    defect_rate=defect_rate,
                    drop_probability=drop_probability,
                    stop=stop,
                    station=station,
                    sim_robot=not no_robot,
                    on_started=_announce_line,
                    drift=None
                    if drift is None
                    else make_drift(drift, drift_start, drift_start + drift_parts),
                    new_defect=new_defect,
                    new_defect_share=new_defect_share,
                )
            except KeyboardInterrupt:
                stop.set()
                raise
    console.print(report_table(report))
    if not report.audit_ok:
        raise fail("the gate's action did not match the station's verdict for every part")


def _line_station(
    path: Path,
    api_port: int | None,
    no_api: bool,
    no_store: bool,
    settings_file: Path | None,
    data_dir: Path | None,
) -> StationFile:
    """The station file with the command line's overrides (store, API)."""
    from cellinspect.station.config import load_station

    station = load_station(path)
    api_update: dict[str, object] = {"enabled": station.api.enabled and not no_api and not no_store}
    if api_port is not None:
        api_update["port"] = api_port
    store_update: dict[str, object] = {"enabled": station.store.enabled and not no_store}
    if data_dir is not None:
        store_update["data_dir"] = data_dir.resolve()
    if settings_file is not None:
        store_update["settings"] = settings_file.resolve()
    return station.model_copy(
        update={
            "api": station.api.model_copy(update=api_update),
            "store": station.store.model_copy(update=store_update),
        }
    )


def _announce_line(runtime: StationRuntime) -> None:
    if runtime.api is not None:
        console.print(
            f"review page: {runtime.api.url}/review   API docs: {runtime.api.url}/docs",
            highlight=False,
        )
        if runtime.settings is not None:
            from cellinspect.api.server import access_summary, has_credentials

            colour = "" if has_credentials(runtime.settings) else "[yellow]"
            text = access_summary(runtime.settings)
            console.print(f"{colour}{text}{'[/]' if colour else ''}", highlight=False)
            console.print(f"results in {runtime.settings.display_db_url}", markup=False)


def plc_sim(
    host: Annotated[str, typer.Option(help="Station address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Station Modbus port.")] = 502,
    parts: Annotated[int, typer.Option(min=1)] = 100,
    rate: Annotated[float, typer.Option(min=1.0, help="Parts per minute.")] = 120.0,
    seed: Annotated[int, typer.Option()] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
    scan_ms: Annotated[float, typer.Option(min=1.0, help="PLC scan time.")] = 10.0,
) -> None:
    """A simulated PLC with conveyor, photo-eye and reject gate, against a real station."""
    from cellinspect.line.command import run_plc_sim
    from cellinspect.line.console import plc_counters_table

    with user_errors():
        counters = run_plc_sim(host, port, parts, rate, seed, defect_rate, scan_ms)
    console.print(plc_counters_table(counters))


def serve(
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="Recipe for POST /inspections.")
    ] = None,
    settings_file: SettingsOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Allow a non-loopback address (needs a token).")
    ] = False,
) -> None:
    """The results API and the QA review page."""
    from cellinspect.api.server import serve as run
    from cellinspect.settings import load_settings

    with user_errors():
        run(load_settings(settings_file), recipe, host, port, allow_remote=allow_remote)


def export(
    out: Annotated[Path, typer.Argument(help="Folder for <label>/<id>.png and the manifest.")],
    settings_file: SettingsOpt = None,
    include_unreviewed_above: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Also unreviewed results the model scored this high."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export in OUT.")] = False,
    manifest: Annotated[ManifestFormat, typer.Option(help="csv or jsonl")] = ManifestFormat.CSV,
    recipes: Annotated[
        list[Path] | None,
        typer.Option(
            "--recipe",
            "-r",
            help="Recipe file that judged the results (repeatable): its preprocessing and "
            "ROIs go into export.json, so `train` and `fit-anomaly` cut the images as it does.",
        ),
    ] = None,
) -> None:
    """Reviewed results as a class-folder dataset plus manifest and export.json (how each
    image was prepared), ready for training."""
    from cellinspect.export.command import format_report, run_export
    from cellinspect.settings import load_settings

    with user_errors():
        report = run_export(
            load_settings(settings_file),
            out,
            include_unreviewed_above,
            overwrite,
            manifest,
            recipes or [],
        )
    console.print(format_report(report))


def register(app: typer.Typer) -> None:
    """Add the cell's commands to the main app."""
    app.command("line")(line)
    app.command("plc-sim")(plc_sim)
    app.command("serve")(serve)
    app.command("export")(export)
