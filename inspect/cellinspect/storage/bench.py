"""Benchmark: results per second the store takes while the API answers queries.

A producer thread plays the station: it hands synthetic results with images to the
AsyncResultWriter (as fast as the writer accepts them, or at a fixed rate), while a reader
thread sends `GET /results` to a real uvicorn server on 127.0.0.1 over the same store.
Reported: committed results per second, the time `submit()` took (what the inspection path
pays), and the API's latency percentiles under that write load.

    python -m cellinspect.storage.bench --seconds 5 --size 320
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.stats import percentile
from cellinspect.storage.synthetic import CLASSES, synthetic_frame, synthetic_result
from cellinspect.storage.writer import AsyncResultWriter

# A line that mostly passes: 90 % PASS, 7 % FAIL, 3 % REVIEW.
MIX = [Verdict.PASS] * 90 + [Verdict.FAIL] * 7 + [Verdict.REVIEW] * 3


@dataclass(frozen=True, slots=True)
class BenchReport:
    seconds: float
    image_size: int
    target_rate: float | None
    submitted: int
    written: int
    spilled: int
    dropped: int
    results_per_s: float
    submit_p50_ms: float | None
    submit_p99_ms: float | None
    api_requests: int
    api_errors: int
    api_p50_ms: float | None
    api_p99_ms: float | None
    image_mb: float

    def lines(self) -> list[str]:
        rate = "as fast as accepted" if self.target_rate is None else f"{self.target_rate:g}/s"
        return [
            f"store: {self.written} results in {self.seconds:.1f} s "
            f"= {self.results_per_s:.0f} results/s ({self.image_size} px images, producer {rate})",
            f"submit(): p50 {_ms(self.submit_p50_ms)}, p99 {_ms(self.submit_p99_ms)} "
            f"(spilled {self.spilled}, dropped {self.dropped})",
            f"GET /results under load: {self.api_requests} requests, p50 {_ms(self.api_p50_ms)}, "
            f"p99 {_ms(self.api_p99_ms)}, errors {self.api_errors}",
            f"images kept: {self.image_mb:.1f} MB",
        ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _frames(count: int, size: int, offset: int) -> list[InspectedFrame]:
    """A pool of frames; ids are replaced per submit, so pixels repeat but results do not."""
    out = []
    for i in range(count):
        verdict = MIX[(i * 37) % len(MIX)]
        result = synthetic_result(
            offset + i,
            verdict,
            defect_class=CLASSES[i % len(CLASSES)],
            score=0.2 if verdict is Verdict.PASS else 0.8,
            prefix="b",
        )
        out.append(synthetic_frame(result, size=size))
    return out


def run_bench(
    data_dir: Path,
    seconds: float = 5.0,
    image_size: int = 320,
    rate: float | None = None,
    pool: int = 64,
) -> BenchReport:
    """Run producer and reader for `seconds`; everything lives under `data_dir`."""
    # Imported here: the API (FastAPI, uvicorn) is not needed by the store itself.
    from cellinspect.api.app import create_app
    from cellinspect.api.server import ApiServerThread

    settings = StationSettings(data_dir=data_dir, disk_budget_mb=None, api_token="bench")
    store = open_store(settings)
    writer = AsyncResultWriter(
        store,
        queue_size=settings.writer_queue_size,
        batch_size=settings.writer_batch_size,
        max_block_s=1.0,
        spill_path=settings.resolved_spill_file,
    )
    writer.start()
    server = ApiServerThread(create_app(settings, store, writer=writer), port=0).start()
    frames = _frames(pool, image_size, 0)
    stop = threading.Event()
    submit_ms: list[float] = []
    api_ms: list[float] = []
    api_errors = 0

    def produce() -> None:
        n = 0
        start = time.perf_counter()
        while not stop.is_set():
            template = frames[n % pool]
            result = synthetic_result(
                n,
                template.result.verdict,
                defect_class=template.result.defect_class,
                score=0.2 if template.result.verdict is Verdict.PASS else 0.8,
                prefix="b",
            )
            frame = InspectedFrame(result, template.image, template.overlay)
            t0 = time.perf_counter()
            writer.submit(frame)
            submit_ms.append((time.perf_counter() - t0) * 1000.0)
            n += 1
            if rate is not None:
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    stop.wait(delay)

    def read() -> None:
        nonlocal api_errors
        # the reads need a token once one is configured (viewer or better)
        auth = {"Authorization": "Bearer bench"}
        with httpx.Client(base_url=server.url, timeout=10.0, headers=auth) as client:
            while True:  # at least one request, even when a loaded machine starts us late
                t0 = time.perf_counter()
                response = client.get("/results", params={"verdict": ["fail", "review"]})
                api_ms.append((time.perf_counter() - t0) * 1000.0)
                api_errors += response.status_code != 200
                if stop.is_set():
                    break

    threads = [threading.Thread(target=produce), threading.Thread(target=read)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    writer.flush(60.0)
    elapsed = time.perf_counter() - began
    server.stop()
    writer.close()
    stats = writer.stats
    image_mb = store.image_bytes() / 1e6
    store.close()
    return BenchReport(
        seconds=elapsed,
        image_size=image_size,
        target_rate=rate,
        submitted=stats.submitted,
        written=stats.written,
        spilled=stats.spilled,
        dropped=stats.dropped,
        results_per_s=stats.written / elapsed,
        submit_p50_ms=percentile(submit_ms, 50),
        submit_p99_ms=percentile(submit_ms, 99),
        api_requests=len(api_ms),
        api_errors=api_errors,
        api_p50_ms=percentile(api_ms, 50),
        api_p99_ms=percentile(api_ms, 99),
        image_mb=image_mb,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="How long to load the store.")
    parser.add_argument("--size", type=int, default=320, help="Image side in pixels.")
    parser.add_argument("--rate", type=float, default=None, help="Results/s (default: max).")
    parser.add_argument("--dir", type=Path, default=None, help="Data folder (default: temp).")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cellinspect-bench-") as tmp:
        report = run_bench(args.dir or Path(tmp), args.seconds, args.size, args.rate)
    if args.json:
        import json

        print(json.dumps(asdict(report), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
