"""A real Prometheus server scrapes a running `cellinspect run` station driven by a simulated PLC.

The station is a subprocess (PLC trigger over Modbus, synthetic parts, store, API on free
ports, an API token set); `run_plc_sim` drives it with a conveyor and photo-eye over real
Modbus TCP. Prometheus (the Debian package's binary) runs on a free 127.0.0.1 port with a
generated config that scrapes the station's /metrics every 0.5 s with the token. Once a
scrape taken after the last part shows nothing in flight, Prometheus' HTTP API is asked for
the verdict counts, and they must equal what the station stored. Without the binary the test
is skipped, except with CELLINSPECT_REQUIRE_SERVERS=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cellinspect.line.command import run_plc_sim
from tests.conftest import ROOT
from tests.station.runner import StationProcess, stored_results, write_station

REQUIRE_ENV = "CELLINSPECT_REQUIRE_SERVERS"
PARTS = 8
SEED = 4
DEFECT_RATE = 0.4
TOKEN = "metrics-test-token-0123456789abcdef"
WAIT_S = 120.0


def _prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if path is None:
        reason = "no prometheus binary (apt-get install prometheus; scripts/bootstrap.sh --dev)"
        if os.environ.get(REQUIRE_ENV, "") == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1: a missing server fails the run")
        pytest.skip(reason)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus server in `folder` scraping `target` (host:port) every 0.5 s."""

    def __init__(self, binary: str, folder: Path, target: str, token: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "500ms", "scrape_timeout": "450ms"},
            "scrape_configs": [
                {
                    "job_name": "cellinspect",
                    "metrics_path": "/metrics",
                    "authorization": {"type": "Bearer", "credentials": token},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        path = folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / "prometheus.log").open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
        self.log_path = folder / "prometheus.log"

    def wait_ready(self) -> None:
        end = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"prometheus exited\n{self.log_text()}"
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, f"prometheus not ready\n{self.log_text()}"
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` gives now (each item: metric labels and value)."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        return [
            {"labels": r["metric"], "value": float(r["value"][1])} for r in body["data"]["result"]
        ]

    def scalar(self, promql: str) -> float | None:
        rows = self.query(promql)
        assert len(rows) <= 1, rows
        return rows[0]["value"] if rows else None

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    return _prometheus_binary()


@pytest.fixture
def station_file(tmp_path: Path) -> Path:
    return write_station(
        tmp_path / "station.yaml",
        recipes={1: str(ROOT / "recipes" / "flange.yaml")},
        source={"type": "synthetic", "count": 100, "seed": SEED, "defect_rate": DEFECT_RATE},
        trigger={"mode": "plc"},
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": 30.0},
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
    )


@pytest.fixture
def station(station_file: Path) -> Iterator[StationProcess]:
    with StationProcess(station_file, env={"CELLINSPECT_API_TOKEN": TOKEN}) as proc:
        yield proc


def _wait_final_scrape(prom: Prometheus, after_wall: float) -> None:
    """Until Prometheus holds a scrape taken after `after_wall` with nothing in flight."""
    end = time.monotonic() + WAIT_S
    idle = "cellinspect_station_jobs_in_flight + cellinspect_station_dispatch_queue_depth"
    while True:
        taken = prom.scalar(f"timestamp({idle})")
        if taken is not None and taken > after_wall and prom.scalar(idle) == 0.0:
            return
        assert time.monotonic() < end, f"no idle scrape after the run\n{prom.log_text()}"
        time.sleep(0.25)


def test_prometheus_scrapes_verdicts_equal_to_the_stored_results(
    tmp_path: Path, prometheus_binary: str, station: StationProcess
) -> None:
    station.wait_running()
    api_port = station.port("api")
    prom = Prometheus(prometheus_binary, tmp_path / "prometheus", f"127.0.0.1:{api_port}", TOKEN)
    try:
        prom.wait_ready()
        plc = run_plc_sim(
            port=station.port("modbus"),
            parts=PARTS,
            rate_per_min=240.0,
            seed=SEED,
            defect_rate=DEFECT_RATE,
            gate_travel_s=0.8,
        )
        assert plc.gated == PARTS
        station.wait_parts(plc.results, timeout=WAIT_S)
        _wait_final_scrape(prom, time.time())
        assert prom.scalar('up{job="cellinspect"}') == 1.0
        by_verdict = {
            row["labels"]["verdict"]: row["value"]
            for row in prom.query("sum by (verdict) (cellinspect_station_verdicts_total)")
        }
        by_reason = {
            row["labels"]["reason"]: row["value"]
            for row in prom.query("sum by (reason) (cellinspect_station_verdicts_total)")
        }
        posted = prom.scalar("sum(cellinspect_station_posted_total)")
        latency_count = prom.scalar("cellinspect_station_part_latency_seconds_count")
        missed = prom.scalar("cellinspect_station_missed_triggers_total")
        plc_states = prom.query('cellinspect_station_link_state{link="plc"} == 1')
        heartbeat_age = prom.scalar("cellinspect_station_plc_heartbeat_age_seconds")
        models = prom.query("cellinspect_station_model_info")
        p50 = prom.scalar(
            "histogram_quantile(0.5, sum by (le) (cellinspect_station_part_latency_seconds_bucket))"
        )
    finally:
        prom.stop()
    assert station.stop() == 0, station.log_text()
    stopped = station.stopped()["status"]

    stored = stored_results(tmp_path / "data")
    assert len(stored) >= PARTS - plc.missed_triggers > 0
    assert by_verdict == {
        v: float(n) for v, n in Counter(s.result.verdict.value for s in stored).items()
    }
    stored_missed = sum("missed trigger" in (s.result.error or "") for s in stored)
    assert by_reason.get("missed_trigger", 0.0) == stored_missed == missed
    assert posted == latency_count == stopped["parts"]
    assert sum(by_verdict.values()) == stopped["parts"] + stored_missed
    assert p50 is not None and p50 > 0.0
    assert len(plc_states) == 1, plc_states  # exactly one PLC state is current
    assert heartbeat_age is not None and heartbeat_age >= 0.0  # the PLC connected
    assert {m["labels"]["model"] for m in models} == {"flange-anomaly", "flange-classifier"}
