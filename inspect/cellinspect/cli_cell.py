"""Commands of the running cell: the simulated line, the PLC simulator, the API, the export.

Registered on the main app by `cellinspect.cli`; kept apart so the batch-inspection commands
do not import the web and PLC stacks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cellinspect.cli_support import console, fail, user_errors
from cellinspect.export.dataset import ManifestFormat

if TYPE_CHECKING:
    from cellinspect.entities import InspectedFrame

SettingsOpt = Annotated[
    Path | None,
    typer.Option("--settings", help="Station settings (YAML); CELLINSPECT_* variables override."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder for the SQLite database and kept images."),
]
LINE_RECIPE = Path("recipes/flange.yaml")


@contextmanager
def result_store(
    settings_file: Path | None, data_dir: Path | None, api_port: int | None, recipe: Path
) -> Iterator[Callable[[InspectedFrame], None]]:
    """Open the store, its background writer and (unless api_port is None) the API beside it.

    Yields the `on_result` hook for the station loop: it only queues, it never waits for the
    database. Everything is flushed and closed on the way out.
    """
    from cellinspect.api.app import create_app, make_writer
    from cellinspect.api.server import ApiServerThread, load_inspector
    from cellinspect.settings import load_settings
    from cellinspect.storage.factory import open_store

    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    settings = load_settings(settings_file, **overrides)
    store = open_store(settings)
    writer = make_writer(settings, store)
    writer.start()
    server = None
    try:
        if api_port is not None:
            app = create_app(settings, store, load_inspector(recipe), writer=writer)
            server = ApiServerThread(app, settings.host, api_port).start()
            console.print(
                f"review page: {server.url}/review   API docs: {server.url}/docs   "
                f"(store: {settings.resolved_db_url})"
            )
            if settings.token_value() is None:
                console.print(
                    "[yellow]no CELLINSPECT_API_TOKEN set: the review page can read but not "
                    "save labels[/]"
                )

        def on_result(inspected: InspectedFrame) -> None:
            writer.submit(inspected)  # queues (or spills); never waits for the database

        yield on_result
    finally:
        if server is not None:
            server.stop()
        writer.close()
        stats = writer.stats
        console.print()
        console.print(
            f"store: {stats.written} results written, {stats.spilled} spilled, "
            f"{stats.dropped} dropped ({settings.resolved_db_url})"
        )
        store.close()


def line(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Station recipe.")] = LINE_RECIPE,
    parts: Annotated[int, typer.Option(min=1, help="Parts to run through the cell.")] = 100,
    rate: Annotated[float, typer.Option(min=1.0, help="Parts per minute.")] = 120.0,
    seed: Annotated[int, typer.Option(help="Seed of the part sequence.")] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
    drop_probability: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Camera frames dropped (fault injection).")
    ] = 0.0,
    modbus_port: Annotated[int, typer.Option(help="Station Modbus port (0: a free one).")] = 0,
    api_port: Annotated[int, typer.Option(help="API / review page port (0: a free one).")] = 8000,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not start the API.")] = False,
    no_store: Annotated[bool, typer.Option("--no-store", help="Keep no results.")] = False,
    settings_file: SettingsOpt = None,
    data_dir: DataDirOpt = None,
    samples: Annotated[
        Path | None, typer.Option(help="Serve these labelled images instead of rendering parts.")
    ] = None,
    benchmark: Annotated[
        bool, typer.Option("--benchmark", help="Find the highest part rate with no late result.")
    ] = False,
) -> None:
    """The main job: camera, station, Modbus, simulated PLC, conveyor and gate, store and API."""
    from cellinspect.line.command import run_benchmark, run_line
    from cellinspect.line.console import live_progress, report_table

    with user_errors():
        if benchmark:
            result = run_benchmark(
                recipe, on_step=lambda step: console.print(f"  {step}", highlight=False)
            )
            console.print(
                f"highest clean rate: {result.max_clean_rate_per_min:.0f} parts/min "
                "(no late result, no missed trigger)"
            )
            return
        stop = threading.Event()
        store_ctx = (
            _no_store()
            if no_store
            else result_store(settings_file, data_dir, None if no_api else api_port, recipe)
        )
        with store_ctx as on_result, live_progress(console) as progress:
            try:
                report = run_line(
                    recipe,
                    parts=parts,
                    rate_per_min=rate,
                    seed=seed,
                    modbus_port=modbus_port,
                    on_result=on_result,
                    progress=progress,
                    samples=samples,
                    defect_rate=defect_rate,
                    drop_probability=drop_probability,
                    stop=stop,
                    make_overlays=not no_store,
                )
            except KeyboardInterrupt:
                stop.set()
                raise
    console.print(report_table(report))
    if not report.audit_ok:
        raise fail("the gate's action did not match the station's verdict for every part")


@contextmanager
def _no_store() -> Iterator[Callable[[InspectedFrame], None] | None]:
    yield None


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

    with user_errors():
        counters = run_plc_sim(host, port, parts, rate, seed, defect_rate, scan_ms)
    console.print(counters)


def station(
    recipe: Annotated[Path, typer.Option("--recipe", "-r")] = LINE_RECIPE,
    modbus_port: Annotated[int, typer.Option(help="Modbus TCP port on 127.0.0.1.")] = 502,
    parts: Annotated[int, typer.Option(min=1, help="Parts the simulated camera can serve.")] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
) -> None:
    """The station alone with its Modbus server, for `cellinspect plc-sim` or a real PLC."""
    from cellinspect.line.command import serve_station

    with user_errors():
        serve_station(
            recipe,
            port=modbus_port,
            parts=parts,
            seed=seed,
            defect_rate=defect_rate,
            ready=lambda p: console.print(f"station Modbus server on 127.0.0.1:{p}"),
        )


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
) -> None:
    """Reviewed results as a class-folder dataset plus manifest, ready for training."""
    from cellinspect.export.command import format_report, run_export
    from cellinspect.settings import load_settings

    with user_errors():
        report = run_export(
            load_settings(settings_file), out, include_unreviewed_above, overwrite, manifest
        )
    console.print(format_report(report))


def register(app: typer.Typer) -> None:
    """Add the cell's commands to the main app."""
    app.command("line")(line)
    app.command("plc-sim")(plc_sim)
    app.command("station")(station)
    app.command("serve")(serve)
    app.command("export")(export)
