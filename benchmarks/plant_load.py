"""Plant scale, measured: N simulated stations against one PostgreSQL, one broker, one hub.

`python -m benchmarks.plant_load --stations 1 5 20 --rate 10 --seconds 20 [--find-max]`
starts a private PostgreSQL, a private Mosquitto and a `cellinspect hub` process, all on
127.0.0.1 (tests/servers/*, tests/plant/forward_rig.py), or is given loopback ones
(`--central-url`, `--hub-url` + `--hub-token`, `--mqtt-port`; any other host is refused).

Each simulated station is a thread (spread over a few worker processes) doing what a real
station does per part: a synthetic result (captured now; a FAIL with a small reject image for
`--reject` of the parts) stored in its own SQLite store (`SqlResultStore.add_many`), queued
on its MQTT outbox (`MqttLink.result`), and shipped by its own `Forwarder` (the real
store-and-forward thread: central `add_many` + image PUT to the hub) every `--interval` s.

Measured in this process, while the stations run:

- ingest: rows/s appearing in the central `results` table (slope of the count over the run);
- lag: capture time -> row visible centrally (polled every 0.25 s), p50/p99;
- MQTT lag: capture time -> message received by a subscriber on the result topics, p50/p99;
- hub API: GET /results?station_id=...&limit=50 latency, p50/p99, 5 requests/s;
- exactly once: after the drain every offered result is central once, none twice.

A run is *sustained* when every offered result arrived, ingest >= 90 % of the offered rate
(the slope of the central count; the forwarders' 2 s batches make it step), lag p99 <=
`--max-lag` s and no station's parts were more than 1 s late
(p99) on their schedule (the generator itself kept up).
`--find-max` then doubles N from the largest sustained one and bisects, bounded by
`--max-stations`. Prints a table and writes JSON (`--out`). All servers, stations and
measurements share this machine: the figures are for it, not for a plant's servers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_STATIONS = 200
MAX_SECONDS = 120.0
MAX_RATE = 100.0
POLL_S = 0.25
API_PERIOD_S = 0.2
DRAIN_S = 60.0


# ---------------------------------------------------------------------- bounds


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1; nothing else is load-tested."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_loopback(what: str, url: str | None) -> None:
    if url is None:
        return
    host = urllib.parse.urlsplit(url if "//" in url else f"//{url}").hostname or ""
    if not is_loopback(host):
        raise SystemExit(f"plant_load: {what} {host!r} is not a loopback address; refused")


# ---------------------------------------------------------------------- stations (workers)

_MIGRATE = threading.Lock()


@dataclass(frozen=True)
class WorkerJob:
    stations: list[str]
    rate: float
    seconds: float
    reject: float
    image_px: int
    interval_s: float
    central_url: str
    hub_url: str
    token: str
    mqtt_port: int
    work_dir: str
    seed: int


class _Gate:
    """Stations start their schedule together, once every station of every worker is set up."""

    def __init__(self, stations: int) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.stations = stations
        self.begin = threading.Event()
        self.start_at = 0.0

    def arrive(self) -> None:
        with self.lock:
            self.arrived += 1

    def wait(self) -> float:
        self.arrive()
        if not self.begin.wait(180):
            raise RuntimeError("no start signal")
        return self.start_at


def _station(job: WorkerJob, station: str, out: dict[str, Any], gate: _Gate) -> None:
    from cellinspect.entities import Verdict
    from cellinspect.plant.forwarder import Forwarder
    from cellinspect.plant.mqtt_config import MqttConfig
    from cellinspect.plant.mqtt_link import MqttLink
    from cellinspect.plant.mqtt_topics import StationIdentity
    from cellinspect.settings import StationSettings
    from cellinspect.storage.factory import open_store
    from cellinspect.storage.synthetic import synthetic_frame, synthetic_result

    folder = Path(job.work_dir) / station
    with _MIGRATE:  # alembic's migration context is process-global: one store at a time
        store = open_store(
            StationSettings(data_dir=folder, pass_sample_rate=0.0, disk_budget_mb=None)
        )
    forwarder = Forwarder(
        store,
        job.central_url,
        folder / "forward",
        hub_url=job.hub_url,
        token=job.token,
        interval_s=job.interval_s,
    ).start()
    link = MqttLink(
        MqttConfig(enabled=True, host="127.0.0.1", port=job.mqtt_port, client_id=f"lg-{station}"),
        StationIdentity(station, site="bench", line="L1"),
        folder / "mqtt-outbox.sqlite",
    ).start()
    rng = random.Random(f"{job.seed}-{station}")
    parts = int(job.seconds * job.rate)
    late: list[float] = []
    rejects = 0
    try:
        start_at = gate.wait()
        for i in range(parts):
            wait = start_at + i / job.rate - time.time()
            if wait > 0:
                time.sleep(wait)
            late.append(max(-wait, 0.0))
            fail = rng.random() < job.reject
            rejects += fail
            result = synthetic_result(
                i,
                Verdict.FAIL if fail else Verdict.PASS,
                defect_class="scratch",
                captured=datetime.now(UTC),
                prefix=f"{station}-",
                station_id=station,
                source=station,
            )
            store.add_many([synthetic_frame(result, size=job.image_px, with_images=fail)])
            link.result(result)
    finally:
        link.close()
        forwarder.close(drain_s=DRAIN_S)
        out[station] = {
            "offered": parts,
            "rejects": rejects,
            "behind_p99_s": _pct(late, 0.99) or 0.0,
            "forwarded": forwarder.stats.forwarded,
            "images_sent": forwarder.stats.images_sent,
            "forward_error": forwarder.stats.last_error,
        }
        store.close()


def worker(job: WorkerJob, results: Any, ready: Any, go: Any, start_at: Any) -> None:
    """One process running its stations as threads; puts {station: summary} on `results`.

    Puts 1 on `ready` once its stations are set up (stores migrated, links started), then
    waits for `go`; `start_at` (time.time()) is then the first part's due time.
    """
    out: dict[str, Any] = {}
    gate = _Gate(len(job.stations))

    def guarded(station: str) -> None:
        try:
            _station(job, station, out, gate)
        except Exception as err:  # reported, not a hang of the run
            if not gate.begin.is_set():
                gate.arrive()
            out.setdefault(station, {"failed": f"{type(err).__name__}: {err}"[:300]})

    threads = [
        threading.Thread(target=guarded, args=(s,), name=s, daemon=True) for s in job.stations
    ]
    for t in threads:
        t.start()
    while gate.arrived < gate.stations:
        time.sleep(0.05)
    ready.put(1)
    if go.wait(180):
        gate.start_at = float(start_at.value)
    gate.begin.set()
    for t in threads:
        t.join(job.seconds + DRAIN_S + 60)
    results.put(out)


# ---------------------------------------------------------------------- measuring (main)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class CentralPoller(threading.Thread):
    """Rows appearing centrally after `after_id`: visible time minus capture time."""

    def __init__(self, url: str, prefix: str, after_id: int) -> None:
        super().__init__(daemon=True, name="central-poller")
        from sqlalchemy import create_engine

        self.engine = create_engine(url, pool_pre_ping=True)
        self.prefix = prefix
        self.after = after_id
        self.lags: list[float] = []
        self.counts: list[tuple[float, int]] = []  # (time.time(), cumulative rows)
        self.seen = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from sqlalchemy import select

        from cellinspect.storage.models import ResultRow

        while not self.stop.is_set():
            stmt = (
                select(ResultRow.id, ResultRow.captured_wall)
                .where(ResultRow.id > self.after, ResultRow.result_id.like(f"{self.prefix}%"))
                .order_by(ResultRow.id)
            )
            with self.engine.connect() as conn:
                rows = list(conn.execute(stmt))
            now = time.time()
            for pk, captured in rows:
                captured = captured if captured.tzinfo else captured.replace(tzinfo=UTC)
                self.lags.append(max(now - captured.timestamp(), 0.0))
                self.after = max(self.after, int(pk))
            self.seen += len(rows)
            self.counts.append((now, self.seen))
            self.stop.wait(POLL_S)

    def ingest_rate(self, t0: float, t1: float) -> float | None:
        """Least-squares slope of the central row count over [t0, t1] (rows/s)."""
        pts = [(t, n) for t, n in self.counts if t0 <= t <= t1]
        if len(pts) < 3:
            return None
        mean_t = statistics.fmean(t for t, _ in pts)
        mean_n = statistics.fmean(n for _, n in pts)
        den = sum((t - mean_t) ** 2 for t, _ in pts)
        num = sum((t - mean_t) * (n - mean_n) for t, n in pts)
        return round(num / den, 2) if den else None


class MqttWatcher:
    """A subscriber on the result topics: capture time -> received, per result id."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.prefix = prefix
        self.lags: dict[str, float] = {}
        self.duplicates = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lg-watch-{prefix}")
        self.client.on_message = self._message
        self.client.on_connect = self._connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("MQTT watcher: no connection to the broker")

    def _connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe("cellinspect/+/+/+/+/result", qos=1)
        self.ready.set()

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        rid = str(body.get("result_id", ""))
        if not rid.startswith(self.prefix):
            return
        if rid in self.lags:
            self.duplicates += 1
            return
        captured = datetime.fromisoformat(body["captured_wall"])
        self.lags[rid] = max(now - captured.timestamp(), 0.0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class ApiProbe(threading.Thread):
    """GET /results?station_id=... on the hub, one station after the other, 5 per second."""

    def __init__(self, hub_url: str, token: str, stations: list[str]) -> None:
        super().__init__(daemon=True, name="api-probe")
        self.hub_url = hub_url
        self.token = token
        self.stations = stations
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            station = self.stations[i % len(self.stations)]
            i += 1
            query = urllib.parse.urlencode({"station_id": station, "limit": 50})
            request = urllib.request.Request(
                f"{self.hub_url}/results?{query}",
                headers={"Authorization": f"Bearer {self.token}"},
            )
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as reply:
                    reply.read()
                self.latencies.append((time.perf_counter() - began) * 1000)
            except (urllib.error.URLError, OSError):
                self.errors += 1
            self.stop.wait(API_PERIOD_S)


@dataclass
class RunReport:
    stations: int
    rate_per_station: float
    seconds: float
    offered: int
    offered_rate: float
    arrived: int
    duplicates: int
    ingest_rate: float | None
    lag_p50_s: float | None
    lag_p99_s: float | None
    mqtt_received: int
    mqtt_duplicates: int
    mqtt_lag_p50_s: float | None
    mqtt_lag_p99_s: float | None
    api_requests: int
    api_errors: int
    api_p50_ms: float | None
    api_p99_ms: float | None
    rejects: int
    images_sent: int
    behind_p99_s: float  # the worst station's schedule lateness, p99 of its parts
    sustained: bool
    wall_s: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Plant:
    central_url: str
    hub_url: str
    token: str
    mqtt_port: int
    work_dir: Path


def _central_count(url: str, prefix: str) -> tuple[int, int]:
    """(rows, distinct result ids) centrally for one run's prefix."""
    from sqlalchemy import create_engine, func, select

    from cellinspect.storage.models import ResultRow

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.count(func.distinct(ResultRow.result_id))).where(
                    ResultRow.result_id.like(f"{prefix}%")
                )
            ).one()
            return int(row[0]), int(row[1])
    finally:
        engine.dispose()


def _max_id(url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from cellinspect.storage.models import ResultRow

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.max(ResultRow.id))) or 0)
    finally:
        engine.dispose()


def run_once(plant: Plant, n: int, args: argparse.Namespace, tag: str) -> RunReport:
    """N stations at `args.rate` parts/s for `args.seconds`; measured, drained, checked."""
    began = time.monotonic()
    prefix = f"{tag}n{n}-"
    stations = [f"{prefix}st{i:03d}" for i in range(n)]
    procs = max(1, min(n, args.procs))
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    ready = ctx.Queue()
    go = ctx.Event()
    shared_start = ctx.Value("d", 0.0)
    jobs = [
        WorkerJob(
            stations=stations[p::procs],
            rate=args.rate,
            seconds=args.seconds,
            reject=args.reject,
            image_px=args.image_px,
            interval_s=args.interval,
            central_url=plant.central_url,
            hub_url=plant.hub_url,
            token=plant.token,
            mqtt_port=plant.mqtt_port,
            work_dir=str(plant.work_dir / f"{tag}n{n}"),
            seed=args.seed,
        )
        for p in range(procs)
    ]
    poller = CentralPoller(plant.central_url, prefix, _max_id(plant.central_url))
    watcher = MqttWatcher(plant.mqtt_port, prefix)
    probe = ApiProbe(plant.hub_url, plant.token, stations)
    workers = [
        ctx.Process(target=worker, args=(job, results, ready, go, shared_start), daemon=True)
        for job in jobs
    ]
    for w in workers:
        w.start()
    for _ in workers:  # every station set up (imports, migrations, connections)
        ready.get(timeout=180)
    start_at = time.time() + 1.0
    shared_start.value = start_at
    go.set()
    poller.start()
    while time.time() < start_at:
        time.sleep(0.05)
    probe.start()
    summary: dict[str, Any] = {}
    deadline = time.monotonic() + args.seconds + DRAIN_S + 90
    while len(summary) < n and time.monotonic() < deadline:
        try:
            summary.update(results.get(timeout=1.0))
        except Exception:  # queue.Empty; a dead worker shows as missing stations
            if not any(w.is_alive() for w in workers) and results.empty():
                break
    end_gen = start_at + args.seconds
    probe.stop.set()
    offered = sum(int(s["offered"]) for s in summary.values()) if summary else 0
    expected = int(args.seconds * args.rate) * n
    wait_until = time.monotonic() + 10
    while poller.seen < expected and time.monotonic() < wait_until:
        time.sleep(POLL_S)
    poller.stop.set()
    poller.join(10)
    probe.join(40)
    time.sleep(0.5)
    watcher.close()
    for w in workers:
        w.join(10)
        if w.is_alive():
            w.terminate()
    rows, distinct = _central_count(plant.central_url, prefix)
    notes: list[str] = []
    if len(summary) < n:
        notes.append(f"{n - len(summary)} station(s) did not report")
    failed = {s["failed"] for s in summary.values() if "failed" in s}
    notes.extend(f"station failed: {e}" for e in sorted(failed))
    summary = {k: v for k, v in summary.items() if "failed" not in v}
    errors = {s["forward_error"] for s in summary.values() if s["forward_error"]}
    notes.extend(f"forwarder: {e}" for e in sorted(errors))
    ingest = poller.ingest_rate(
        start_at + min(args.interval + 1.0, args.seconds / 3), end_gen + 1.0
    )
    lag99 = _pct(poller.lags, 0.99)
    behind = max((float(s["behind_p99_s"]) for s in summary.values()), default=0.0)
    offered_rate = n * args.rate
    sustained = (
        offered == expected
        and distinct == expected
        and rows == distinct
        and ingest is not None
        and ingest >= 0.9 * offered_rate
        and lag99 is not None
        and lag99 <= args.max_lag
        and behind <= 1.0
    )
    mqtt = list(watcher.lags.values())
    return RunReport(
        stations=n,
        rate_per_station=args.rate,
        seconds=args.seconds,
        offered=offered,
        offered_rate=offered_rate,
        arrived=distinct,
        duplicates=rows - distinct,
        ingest_rate=ingest,
        lag_p50_s=_pct(poller.lags, 0.5),
        lag_p99_s=lag99,
        mqtt_received=len(mqtt),
        mqtt_duplicates=watcher.duplicates,
        mqtt_lag_p50_s=_pct(mqtt, 0.5),
        mqtt_lag_p99_s=_pct(mqtt, 0.99),
        api_requests=len(probe.latencies),
        api_errors=probe.errors,
        api_p50_ms=_pct(probe.latencies, 0.5),
        api_p99_ms=_pct(probe.latencies, 0.99),
        rejects=sum(int(s["rejects"]) for s in summary.values()),
        images_sent=sum(int(s["images_sent"]) for s in summary.values()),
        behind_p99_s=behind,
        sustained=sustained,
        wall_s=round(time.monotonic() - began, 1),
        notes=notes,
    )


# ---------------------------------------------------------------------- servers


class _Servers:
    """The private PostgreSQL, Mosquitto and hub this run starts (none that were given)."""

    def __init__(self, args: argparse.Namespace, work_dir: Path) -> None:
        self.closers: list[Any] = []
        central = args.central_url
        if central is None:
            pg = _bench_postgres()
            self.closers.append(pg.close)
            pg.start()
            central = pg.url(pg.create_database()).render_as_string(hide_password=False)
        hub_url, token = args.hub_url, args.hub_token
        if hub_url is None:
            from tests.plant.forward_rig import HubProcess

            hub = HubProcess(work_dir / "hub", central)
            self.closers.append(hub.close)
            hub_url, token = hub.url, hub.token
        elif token is None:
            raise SystemExit("plant_load: --hub-url needs --hub-token (a station's token)")
        port = args.mqtt_port
        if port is None:
            from tests.servers.mosquitto import MosquittoServer, find_broker

            broker = find_broker()
            if broker is None:
                raise SystemExit("plant_load: mosquitto not found (apt-get install mosquitto)")
            mq = MosquittoServer(broker)
            self.closers.append(mq.close)
            mq.start()
            port = mq.port
        self.plant = Plant(central, hub_url, token, port, work_dir)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception as err:  # a cleanup failure must not hide the report
                print(f"plant_load: cleanup: {err}", file=sys.stderr)


def _bench_postgres() -> Any:
    """The test PostgreSQL with room for one connection per station (max_connections 50 there)."""
    from tests.servers.postgres import PostgresServer

    return PostgresServer(max_connections=300, shared_buffers="128MB")


# ---------------------------------------------------------------------- report


COLUMNS = (
    ("N", "stations", "{}"),
    ("offered/s", "offered_rate", "{:.0f}"),
    ("ingest/s", "ingest_rate", "{:.1f}"),
    ("arrived", "arrived", "{}"),
    ("dup", "duplicates", "{}"),
    ("lag p50 s", "lag_p50_s", "{:.2f}"),
    ("lag p99 s", "lag_p99_s", "{:.2f}"),
    ("mqtt p50 s", "mqtt_lag_p50_s", "{:.3f}"),
    ("mqtt p99 s", "mqtt_lag_p99_s", "{:.3f}"),
    ("api p50 ms", "api_p50_ms", "{:.0f}"),
    ("api p99 ms", "api_p99_ms", "{:.0f}"),
    ("late p99 s", "behind_p99_s", "{:.2f}"),
    ("ok", "sustained", "{}"),
)


def table(reports: list[RunReport]) -> str:
    """A Markdown table of the runs."""
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    lines = [head, rule]
    for r in reports:
        values = asdict(r)
        cells = []
        for _, key, fmt in COLUMNS:
            v = values[key]
            cells.append(
                "-"
                if v is None
                else ("yes" if v is True else "NO" if v is False else fmt.format(v))
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find_max(plant: Plant, args: argparse.Namespace, done: list[RunReport]) -> int | None:
    """Largest sustained N: double from the best so far, then bisect (a few runs at most)."""
    ok = [r.stations for r in done if r.sustained]
    bad = [r.stations for r in done if not r.sustained]
    low = max(ok, default=0)
    high = min((b for b in bad if b > low), default=None)
    runs = 0
    while runs < args.max_runs:
        if high is None:
            n = min(max(low * 2, 1), args.max_stations)
            if n == low:
                break
        elif high - low <= max(1, low // 10):
            break
        else:
            n = (low + high) // 2
        runs += 1
        report = run_once(plant, n, args, tag=f"m{runs}")
        done.append(report)
        print(table([report]).splitlines()[-1], flush=True)
        if report.sustained:
            low = n
        else:
            high = n
    return low or None


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.plant_load", description=__doc__.split("\n")[0]
    )
    p.add_argument("--stations", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--rate", type=float, default=10.0, help="parts/s per station")
    p.add_argument("--seconds", type=float, default=20.0, help="generation time per run")
    p.add_argument("--reject", type=float, default=0.07, help="share of parts with a reject image")
    p.add_argument("--image-px", type=int, default=128, help="reject image side (PNG, noise)")
    p.add_argument(
        "--interval", type=float, default=2.0, help="forwarder interval_s (default as shipped)"
    )
    p.add_argument("--procs", type=int, default=4, help="worker processes for the stations")
    p.add_argument("--max-lag", type=float, default=5.0, help="lag p99 bound for 'sustained' (s)")
    p.add_argument("--find-max", action="store_true", help="search the largest sustained N")
    p.add_argument("--max-stations", type=int, default=MAX_STATIONS)
    p.add_argument("--max-runs", type=int, default=5, help="runs the --find-max search may take")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--central-url", help="a loopback PostgreSQL URL (default: start one)")
    p.add_argument("--hub-url", help="a loopback hub (default: start one on --central-url)")
    p.add_argument("--hub-token", help="a station token of that hub (also used to read)")
    p.add_argument("--mqtt-port", type=int, help="a broker on 127.0.0.1 (default: start one)")
    p.add_argument("--out", type=Path, default=Path("plant_load.json"), help="JSON report")
    args = p.parse_args(argv)
    if not 1 <= args.max_stations <= MAX_STATIONS:
        p.error(f"--max-stations: 1..{MAX_STATIONS}")
    if any(not 1 <= n <= args.max_stations for n in args.stations):
        p.error(f"--stations: each 1..{args.max_stations}")
    if not 0 < args.seconds <= MAX_SECONDS:
        p.error(f"--seconds: over 0, at most {MAX_SECONDS}")
    if not 0 < args.rate <= MAX_RATE:
        p.error(f"--rate: over 0, at most {MAX_RATE}")
    if not 0 <= args.reject <= 1:
        p.error("--reject: 0..1")
    if args.procs < 1:
        p.error("--procs: at least 1")
    check_loopback("--central-url", args.central_url)
    check_loopback("--hub-url", args.hub_url)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="cellinspect-plant-load-"))
    servers = _Servers(args, work)
    reports: list[RunReport] = []
    largest: int | None = None
    try:
        print(table([]), flush=True)
        for n in args.stations:
            report = run_once(servers.plant, n, args, tag="s")
            reports.append(report)
            print(table([report]).splitlines()[-1], flush=True)
        if args.find_max:
            largest = find_max(servers.plant, args, reports)
    finally:
        servers.close()
        shutil.rmtree(work, ignore_errors=True)
    doc = {
        "command": "python -m benchmarks.plant_load "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("hub_token", "central_url", "out")
        },
        "runs": [asdict(r) for r in reports],
        "largest_sustained": largest,
    }
    print()
    print(table(reports))
    if args.find_max:
        print(f"largest N sustained at {args.rate:g} parts/s per station: {largest}")
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"JSON: {args.out}")
    return doc


if __name__ == "__main__":
    main()
