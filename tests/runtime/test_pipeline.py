"""The station loop: nothing lost, drops counted and turned into fail-safe results."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cellinspect.entities import Frame, InspectedFrame, SourceItem, Verdict
from cellinspect.runtime.inspector import Inspector
from cellinspect.runtime.pipeline import run_pipeline
from cellinspect.sources.base import SourceState
from cellinspect.sources.registry import source_for_paths
from tests.runtime.conftest import grey_part


def test_every_file_gives_one_result_in_order(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    seen: list[InspectedFrame] = []
    stats = run_pipeline(source_for_paths([station["images"]]), inspector, seen.append)
    names = [Path(i.result.path or "").name for i in seen]
    assert names == ["a_good.png", "b_scratch.png", "c_empty.png", "d_text.png", "e_good.png"]
    assert stats.count == 5 and stats.errors == 2 and stats.dropped == 0
    assert stats.verdicts[Verdict.PASS] == 2 and stats.verdicts[Verdict.FAIL] == 3
    assert stats.percentile(50) is not None


class _FastLiveSource:
    """A live source that produces frames faster than a slow consumer can take them."""

    name = "live"

    def __init__(self, count: int) -> None:
        self.count = count
        self._closed = threading.Event()

    @property
    def state(self) -> SourceState:
        return SourceState.CLOSED if self._closed.is_set() else SourceState.OPEN

    def frames(self) -> Iterator[SourceItem]:
        for i in range(self.count):
            if self._closed.is_set():
                return
            yield Frame(image=grey_part(), frame_id=i, source=self.name, part_id=i)

    def close(self) -> None:
        self._closed.set()


def test_live_source_drops_are_counted_and_fail_safe(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    seen: list[InspectedFrame] = []

    def slow(item: InspectedFrame) -> None:
        seen.append(item)
        time.sleep(0.01)

    stats = run_pipeline(_FastLiveSource(60), inspector, slow, queue_size=2, drop_when_full=True)
    assert stats.count == 60  # every frame has a result, dropped or not
    assert stats.dropped > 0
    dropped = [i.result for i in seen if i.result.error and "dropped" in i.result.error]
    assert len(dropped) == stats.dropped
    assert all(r.verdict is Verdict.FAIL for r in dropped)
    assert sorted(i.result.part_id for i in seen) == list(range(60))


def test_batched_pipeline_keeps_order_and_count(station: dict[str, Path]) -> None:
    inspector = Inspector.from_recipe(station["recipe"])
    seen: list[InspectedFrame] = []
    stats = run_pipeline(
        source_for_paths([station["images"]] * 3), inspector, seen.append, batch_size=4
    )
    assert stats.count == 15
    names = [Path(i.result.path or "").name for i in seen]
    assert names == ["a_good.png", "b_scratch.png", "c_empty.png", "d_text.png", "e_good.png"] * 3
