"""`cellinspect bench`: where the time goes, per stage, against bare session.run.

The overhead figure compares, on the same images, the end-to-end time per image (decode,
preprocessing, model input, session.run, post-processing, decision, result) with the time of
session.run alone on already-prepared tensors. Medians, not means: these machines are shared.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinspect.entities import Frame
from cellinspect.errors import SourceError
from cellinspect.inference.runner import Tensor
from cellinspect.runtime.inspector import Inspector, Runs
from cellinspect.runtime.pipeline import run_pipeline
from cellinspect.sources.decode import decode_image_file
from cellinspect.sources.listing import list_folder
from cellinspect.sources.registry import source_for_paths
from cellinspect.sources.video import is_video_path

Progress = Callable[[int, int], None]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class BenchReport:
    images: int
    repeats: int
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    bare_run_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    pipeline_throughput: float = 0.0
    peak_rss_mb: float = 0.0

    def median(self, values: Sequence[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    def p99(self, values: Sequence[float]) -> float:
        return float(np.percentile(values, 99)) if values else float("nan")

    @property
    def overhead_ratio(self) -> float:
        """(end-to-end - bare session.run) / bare session.run, from medians."""
        bare = self.median(self.bare_run_ms)
        return (self.median(self.end_to_end_ms) - bare) / bare

    @property
    def e2e_to_bare(self) -> float:
        return self.median(self.end_to_end_ms) / self.median(self.bare_run_ms)

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "repeats": self.repeats,
            "stages_ms": {
                k: {"p50": self.median(v), "p99": self.p99(v)} for k, v in self.stages_ms.items()
            },
            "bare_session_run_ms": {
                "p50": self.median(self.bare_run_ms),
                "p99": self.p99(self.bare_run_ms),
            },
            "end_to_end_ms": {
                "p50": self.median(self.end_to_end_ms),
                "p99": self.p99(self.end_to_end_ms),
            },
            "end_to_end_over_bare": self.e2e_to_bare,
            "overhead_ratio": self.overhead_ratio,
            "pipeline_throughput_per_s": self.pipeline_throughput,
            "peak_rss_mb": self.peak_rss_mb,
        }


def _bare_run_ms(batches: Sequence[tuple[Runs, Tensor]]) -> float:
    """session.run time alone for one frame's tensors, prepared beforehand."""
    total = 0.0
    for runner, batch in batches:
        t = time.perf_counter()
        runner.run(batch)
        total += (time.perf_counter() - t) * 1000.0
    return total


def run_bench(
    inspector: Inspector,
    paths: Sequence[Path],
    repeats: int = 3,
    progress: Progress | None = None,
) -> BenchReport:
    """Time every stage over `repeats` passes of the images.

    Each repeat is one end-to-end pass over all images followed by one bare session.run pass
    over the same images, so slow drifts of a shared machine hit both alike. (Interleaving per
    image was tried: alternating two workloads image by image slows both by about a third,
    through cache and thread wake-up effects, and measures neither.)
    """
    files = _expand(paths)
    report = BenchReport(images=len(files), repeats=repeats)
    total_steps = len(files) * repeats * 2
    step = 0
    for _ in range(repeats):
        frames = []
        for frame_id, path in enumerate(files):
            t = time.perf_counter()
            image = decode_image_file(path)
            decode_ms = (time.perf_counter() - t) * 1000.0
            frame = Frame(image=image, frame_id=frame_id, source="bench", path=str(path))
            result = inspector.inspect(frame).result
            report.stages_ms.setdefault("decode", []).append(decode_ms)
            for stage, ms in result.timings_ms.items():
                report.stages_ms.setdefault(stage, []).append(ms)
            report.end_to_end_ms.append(decode_ms + result.timings_ms.get("total", 0.0))
            frames.append(frame)
            step += 1
            if progress is not None:
                progress(step, total_steps)
        prepared = [inspector.model_batches(frame.image) for frame in frames]
        for batches in prepared:
            report.bare_run_ms.append(_bare_run_ms(batches))
            step += 1
            if progress is not None:
                progress(step, total_steps)
    stats = run_pipeline(source_for_paths(files), inspector, lambda _r: None, threading.Event())
    report.pipeline_throughput = stats.throughput
    report.peak_rss_mb = peak_rss_mb()
    return report


def _expand(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded (sub-folders too, so class folders count) in the order
    the folder source uses. A path that is missing, or that holds no images, is a SourceError."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [p for p in list_folder(path, recursive=True) if not is_video_path(p)]
            if not found:
                raise SourceError(f"no images in {path} (sub-folders searched too)")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise SourceError(f"path not found: {path}")
    if not files:
        raise SourceError("no images to benchmark: name image files or folders")
    return files


@dataclass
class LineRateReport:
    """Three ways of timing the same frames, side by side (milliseconds per part).

    `bare`: session.run alone on prepared tensors (one run per shared trunk, or per model);
    `loop`: the whole inspector per part, back to back; `line`: the whole inspector per part
    with parts spaced `interval_s` apart, the station idling in between as on a line.
    `*_cpu` is the process CPU time per part (all threads), to tell work from waiting.
    """

    images: int
    repeats: int
    interval_s: float
    trunks: list[str]
    bare_ms: list[float] = field(default_factory=list)
    loop_ms: list[float] = field(default_factory=list)
    line_ms: list[float] = field(default_factory=list)
    loop_cpu_ms: list[float] = field(default_factory=list)
    line_cpu_ms: list[float] = field(default_factory=list)

    def figures(self, values: Sequence[float]) -> dict[str, float]:
        p50 = float(np.median(values)) if values else float("nan")
        p99 = float(np.percentile(values, 99)) if values else float("nan")
        return {"p50": p50, "p99": p99, "p99_over_p50": p99 / p50 if p50 else float("nan")}

    def to_dict(self) -> dict[str, object]:
        bare = self.figures(self.bare_ms)["p50"]
        rows = {"bare": self.bare_ms, "loop": self.loop_ms, "line": self.line_ms}
        return {
            "images": self.images,
            "repeats": self.repeats,
            "interval_s": self.interval_s,
            "shared_trunks": self.trunks,
            **{f"{k}_ms": self.figures(v) for k, v in rows.items()},
            "loop_cpu_ms_p50": self.figures(self.loop_cpu_ms)["p50"],
            "line_cpu_ms_p50": self.figures(self.line_cpu_ms)["p50"],
            "loop_over_bare": self.figures(self.loop_ms)["p50"] / bare,
            "line_over_bare": self.figures(self.line_ms)["p50"] / bare,
            "line_over_loop": self.figures(self.line_ms)["p50"] / self.figures(self.loop_ms)["p50"],
        }


def _timed_inspect(inspector: Inspector, frame: Frame) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one whole inspection."""
    cpu, wall = time.process_time(), time.perf_counter()
    inspector.inspect(frame)
    return (time.perf_counter() - wall) * 1000.0, (time.process_time() - cpu) * 1000.0


def run_line_rate_bench(
    inspector: Inspector,
    paths: Sequence[Path],
    interval_s: float = 0.5,
    repeats: int = 3,
    limit: int | None = 10,
    progress: Progress | None = None,
) -> LineRateReport:
    """Bare session.run, the inspector in a loop, and the inspector at line rate, in blocks.

    Each repeat runs one block of each over the same decoded frames, in a rotating order, so
    a drift of a shared machine hits all three alike. At line rate every part starts at its
    slot (`interval_s` after the previous slot) and only the inspection itself is timed.
    """
    files = _expand(paths)[:limit] if limit else _expand(paths)
    frames = [
        Frame(image=decode_image_file(p), frame_id=i, source="bench", path=str(p))
        for i, p in enumerate(files)
    ]
    prepared = [inspector.model_batches(f.image) for f in frames]
    report = LineRateReport(
        images=len(frames),
        repeats=repeats,
        interval_s=interval_s,
        trunks=[t.name for t in inspector.trunks],
    )
    total, step = 3 * repeats * len(frames), 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(step, total)

    def bare() -> None:
        for batches in prepared:
            report.bare_ms.append(_bare_run_ms(batches))
            tick()

    def loop() -> None:
        for frame in frames:
            wall, cpu = _timed_inspect(inspector, frame)
            report.loop_ms.append(wall)
            report.loop_cpu_ms.append(cpu)
            tick()

    def line() -> None:
        slot = time.perf_counter()
        for frame in frames:
            slot += interval_s
            time.sleep(max(0.0, slot - time.perf_counter()))
            wall, cpu = _timed_inspect(inspector, frame)
            report.line_ms.append(wall)
            report.line_cpu_ms.append(cpu)
            tick()

    blocks = [bare, loop, line]
    for r in range(repeats):
        for block in blocks[r % 3 :] + blocks[: r % 3]:
            block()
    return report
