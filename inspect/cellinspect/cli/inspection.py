"""Batch jobs on image files: `inspect` (verdicts and result files), `bench`, `generate`."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from cellinspect.cli.support import (
    DEFAULT_RECIPE,
    RecipeOpt,
    console,
    print_input_notes,
    progress_bar,
    user_errors,
)

if TYPE_CHECKING:
    from cellinspect.entities import InspectedFrame, InspectionResult
    from cellinspect.runtime.pipeline import PipelineStats


def _summary_table(stats: PipelineStats, peak_mb: float) -> Table:
    from cellinspect.entities import Verdict

    table = Table(title="Inspection summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("parts", str(stats.count))
    for verdict in Verdict:
        table.add_row(verdict.value, str(stats.verdicts[verdict]))
    table.add_row("errors (fail-safe)", str(stats.errors))
    table.add_row("dropped", str(stats.dropped))
    table.add_row("throughput", f"{stats.throughput:.1f} parts/s")
    p50, p99 = stats.percentile(50), stats.percentile(99)
    table.add_row("latency p50", "-" if p50 is None else f"{p50:.1f} ms")
    table.add_row("latency p99", "-" if p99 is None else f"{p99:.1f} ms")
    table.add_row("peak memory", f"{peak_mb:.0f} MB")
    return table


VERDICT_STYLE = {"pass": "green", "review": "yellow", "fail": "bold red"}


def _reasons(result: InspectionResult) -> Table:
    """Every reason (the error first), one bullet each, wrapped with a hanging indent."""
    lines = [f"error: {result.error}"] if result.error else []
    lines += [r for r in result.reasons if r != result.error]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for line in lines or ["-"]:
        grid.add_row("•", Text(line))
    return grid


def flagged_table(flagged: Sequence[InspectedFrame]) -> Table:
    """Parts not passed: file, verdict (with class and score) and all their reasons; it stays
    readable at 80 columns because long names and reasons wrap inside their cells."""
    table = Table(title="Parts not passed", show_lines=True)
    table.add_column("file", overflow="fold", max_width=22)
    table.add_column("verdict", overflow="fold", max_width=18)
    table.add_column("reasons", ratio=1)
    for item in flagged:
        r = item.result
        verdict = Text(r.verdict.value.upper(), style=VERDICT_STYLE.get(r.verdict.value, ""))
        for extra in (r.defect_class, None if r.score is None else f"score {r.score:.3g}"):
            if extra:
                verdict.append(f"\n{extra}")
        name = Path(r.path).name if r.path else str(r.frame_id)
        table.add_row(Text(name), verdict, _reasons(r))
    return table


def inspect(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files, video files (every frame) and/or folders.")
    ],
    recipe: RecipeOpt = DEFAULT_RECIPE,
    jsonl: Annotated[
        Path | None,
        typer.Option(
            "--jsonl",
            help="Append results as JSON Lines; files it already holds a result for "
            "(same recipe) are skipped, so a run resumes.",
        ),
    ] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write results as CSV.")] = None,
    overlays: Annotated[
        Path | None,
        typer.Option(
            "--overlays",
            help="Write heatmap overlays here, under a banner with verdict, score and class.",
        ),
    ] = None,
    overlays_for_pass: Annotated[
        bool, typer.Option("--overlays-for-pass", help="Also write overlays of PASS parts.")
    ] = False,
    pattern: Annotated[str, typer.Option(help="Glob for files inside folders.")] = "*",
    recursive: Annotated[bool, typer.Option(help="Descend into sub-folders.")] = False,
    show: Annotated[int, typer.Option(help="List up to N non-PASS parts at the end.")] = 20,
) -> None:
    """Inspect images with a recipe: progress, summary table, result files."""
    from cellinspect.config import load_recipe
    from cellinspect.entities import Verdict
    from cellinspect.runtime.bench import peak_rss_mb
    from cellinspect.runtime.inspector import Inspector
    from cellinspect.runtime.outputs import ResultFiles, recorded_paths
    from cellinspect.runtime.pipeline import run_pipeline
    from cellinspect.sources.files import FileListSource
    from cellinspect.sources.registry import source_for_paths

    with user_errors():
        loaded = load_recipe(recipe)
        outputs = loaded.outputs
        overlays_dir = overlays or outputs.overlays_dir
        inspector = Inspector.from_recipe(
            recipe, make_overlays=overlays_dir is not None, recipe=loaded
        )
        source = source_for_paths(paths, pattern=pattern, recursive=recursive)
        results_jsonl = jsonl or outputs.results_jsonl
        if results_jsonl is not None and isinstance(source, FileListSource):
            done = recorded_paths(results_jsonl, inspector.recipe_sha256)
            todo = [p for p in source.paths if p.resolve() not in done]
            if len(todo) < len(source.paths):
                console.print(
                    f"resuming {results_jsonl}: {len(source.paths) - len(todo)} file(s) "
                    "already recorded there are skipped"
                )
                source = FileListSource(todo, name=source.name)
        total = len(getattr(source, "paths", ())) or None
        flagged: list[InspectedFrame] = []
        stop = threading.Event()
        with (
            ResultFiles(
                results_jsonl,
                csv_out or outputs.results_csv,
                overlays_dir,
                overlays_for_pass or outputs.overlays_for_pass,
            ) as files,
            progress_bar() as progress,
        ):
            task = progress.add_task("inspecting", total=total)

            def on_result(inspected: InspectedFrame) -> None:
                files.write(inspected)
                progress.advance(task)
                if inspected.result.verdict is not Verdict.PASS:
                    flagged.append(inspected)

            try:
                stats = run_pipeline(source, inspector, on_result, stop)
            except KeyboardInterrupt:
                stop.set()
                raise
    if flagged and show > 0:
        console.print(flagged_table(flagged[:show]))
    console.print(_summary_table(stats, peak_rss_mb()))
    print_input_notes()
    if files.overlays_written:
        console.print(f"overlays: {files.overlays_written} written to {overlays_dir}")


def bench(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Image files and/or folders (sub-folders too, e.g. class folders)."),
    ],
    recipe: RecipeOpt = DEFAULT_RECIPE,
    repeats: Annotated[int, typer.Option(min=1, help="Passes over the images.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report.")] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Line-rate mode: bare session.run, the inspector in a loop and the inspector "
            "with parts this many seconds apart, side by side (first 10 images per block).",
        ),
    ] = None,
) -> None:
    """Per-stage latency p50/p99, throughput, peak memory, and overhead vs bare session.run."""
    from cellinspect.runtime.bench import run_bench
    from cellinspect.runtime.inspector import Inspector

    if interval is not None:
        _bench_line_rate(paths, recipe, repeats, interval, json_out)
        return
    with user_errors():
        inspector = Inspector.from_recipe(recipe)
        with progress_bar() as progress:
            task = progress.add_task("benchmarking", total=None)
            report = run_bench(
                inspector,
                paths,
                repeats,
                lambda d, t: progress.update(task, completed=d, total=t),
            )
    data = report.to_dict()
    table = Table(title=f"bench: {report.images} images x {report.repeats} passes")
    table.add_column("stage")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    stages = data["stages_ms"]
    assert isinstance(stages, dict)
    for stage_name, values in stages.items():
        table.add_row(stage_name, f"{values['p50']:.3f}", f"{values['p99']:.3f}")
    table.add_row(
        "bare session.run",
        f"{report.median(report.bare_run_ms):.3f}",
        f"{report.p99(report.bare_run_ms):.3f}",
    )
    table.add_row(
        "end to end (decode+total)",
        f"{report.median(report.end_to_end_ms):.3f}",
        f"{report.p99(report.end_to_end_ms):.3f}",
    )
    console.print(table)
    console.print(
        f"end-to-end / bare session.run: {report.e2e_to_bare:.3f}  "
        f"(pipeline overhead {report.overhead_ratio * 100:.1f}% of session.run)"
    )
    console.print(f"pipeline throughput: {report.pipeline_throughput:.1f} images/s")
    console.print(f"peak memory: {report.peak_rss_mb:.0f} MB")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _bench_line_rate(
    paths: list[Path], recipe: Path, repeats: int, interval: float, json_out: Path | None
) -> None:
    """`bench --interval`: is a station that idles between parts as fast as the loop?"""
    from cellinspect.runtime.bench import run_line_rate_bench
    from cellinspect.runtime.inspector import Inspector

    with user_errors():
        inspector = Inspector.from_recipe(recipe)
        with progress_bar() as progress:
            task = progress.add_task("benchmarking", total=None)
            report = run_line_rate_bench(
                inspector,
                paths,
                interval,
                repeats,
                progress=lambda d, t: progress.update(task, completed=d, total=t),
            )
    data = report.to_dict()
    table = Table(title=f"bench: {report.images} images x {report.repeats} blocks each")
    for column in ("per part", "p50 ms", "p99 ms", "p99 / p50", "p50 / bare"):
        table.add_column(column, justify="left" if column == "per part" else "right")
    bare = report.figures(report.bare_ms)["p50"]
    trunks = ", ".join(report.trunks) or "none"
    for label, values in (
        (f"bare session.run (shared trunks: {trunks})", report.bare_ms),
        ("inspector, back to back", report.loop_ms),
        (f"inspector, parts {interval:g} s apart", report.line_ms),
    ):
        f = report.figures(values)
        table.add_row(
            label,
            f"{f['p50']:.2f}",
            f"{f['p99']:.2f}",
            f"{f['p99_over_p50']:.2f}",
            f"{f['p50'] / bare:.2f}",
        )
    console.print(table)
    console.print(
        f"process CPU per part: {data['loop_cpu_ms_p50']:.1f} ms back to back, "
        f"{data['line_cpu_ms_p50']:.1f} ms at line rate"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def generate(
    out: Annotated[Path, typer.Argument(help="Folder to write images and labels.csv into.")],
    count: Annotated[int, typer.Option(min=0, help="Number of parts.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same parts.")] = 0,
    defect_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Defective share.")] = 0.4,
    class_folders: Annotated[
        bool, typer.Option(help="Write good/, scratch/, ... sub-folders (for training).")
    ] = False,
    classes: Annotated[
        list[str] | None, typer.Option("--class", help="Only these defect classes (repeat).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a set generated before in the same folder.")
    ] = False,
    image_format: Annotated[
        str, typer.Option("--format", help="png (compressed) or bmp (uncompressed, fast).")
    ] = "png",
) -> None:
    """Render synthetic flange parts (good and defective) with labels and true dimensions."""
    from cellinspect.datagen.flange import DEFECT_CLASSES, generate_dataset

    with user_errors(), progress_bar() as progress:
        task = progress.add_task("rendering", total=count)
        labels = generate_dataset(
            out,
            count=count,
            seed=seed,
            defect_rate=defect_rate,
            layout="class_folders" if class_folders else "flat",
            progress=lambda d, t: progress.update(task, completed=d, total=t),
            classes=tuple(classes) if classes else DEFECT_CLASSES,
            overwrite=overwrite,
            image_format=image_format,  # type: ignore[arg-type]  # checked by generate_dataset
        )
    console.print(f"wrote {count} parts; labels in {labels}")


def register(app: typer.Typer) -> None:
    """Add `inspect`, `bench` and `generate` to the main app."""
    app.command("inspect")(inspect)
    app.command("bench")(bench)
    app.command("generate")(generate)
