"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cellinspect.storage.writer import WriterStats

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _WriterCollector(Collector):
    def __init__(self, stats: Callable[[], WriterStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        depth = GaugeMetricFamily(
            "cellinspect_writer_queue_depth", "Results waiting to be committed."
        )
        depth.add_metric([], stats.queue_depth)
        yield depth
        outcomes = CounterMetricFamily(
            "cellinspect_writer_results",
            "Results handed to the writer, by what became of them.",
            labels=["outcome"],
        )
        for outcome, value in (
            ("written", stats.written),
            ("duplicate", stats.duplicates),
            ("spilled", stats.spilled),
            ("dropped", stats.dropped),
            ("replayed", stats.replayed),
        ):
            outcomes.add_metric([outcome], value)
        yield outcomes


class ApiMetrics:
    """HTTP, inspection and review counters plus the writer's figures."""

    def __init__(self, writer_stats: Callable[[], WriterStats | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cellinspect_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cellinspect_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.inspections = Counter(
            "cellinspect_api_inspections",
            "Images inspected through POST /inspections, by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        self.reviews = Counter(
            "cellinspect_reviews",
            "QA labels submitted, by label.",
            ["label"],
            registry=self.registry,
        )
        self.registry.register(_WriterCollector(writer_stats))


class MetricsMiddleware:
    """Pure ASGI middleware (streams pass through untouched) timing every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
