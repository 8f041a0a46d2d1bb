"""The rate search: doubling until a run is not clean, then bisecting."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cellinspect.entities import ImageU8, InspectedFrame
from cellinspect.line.benchmark import RateStep, find_max_rate, search_rate
from cellinspect.line.config import LineConfig
from cellinspect.plc.sim_camera import FolderCatalog
from tests.fakes import BlobInspector, write_samples


class TakesItsTime(BlobInspector):
    """30 ms per part: parts closer than that must find the station busy."""

    def inspect_image(
        self,
        image: ImageU8,
        name: str | None = None,
        part_id: int | None = None,
        encoder: int | None = None,
    ) -> InspectedFrame:
        threading.Event().wait(0.03)
        return super().inspect_image(image, name, part_id, encoder)


def _step(rate: float, clean: bool) -> RateStep:
    return RateStep(rate, clean, 0 if clean else 1, 0, True, 10.0, 20.0)


@pytest.mark.parametrize(
    ("limit", "start", "expected_steps", "best"),
    [
        (1000.0, 120.0, [120, 240, 480, 960, 1920, 1440, 1200, 1080], 960.0),
        (50.0, 120.0, [120], None),  # not even the first rate is clean
        (1e9, 120.0, [120, 240, 480], 480.0),  # clean up to the ceiling (max 500)
    ],
)
def test_rate_search_doubles_then_bisects(
    limit: float, start: float, expected_steps: list[float], best: float | None
) -> None:
    report = search_rate(
        lambda r: _step(r, r <= limit),
        start_per_min=start,
        max_per_min=500.0 if limit == 1e9 else 12_000.0,
    )
    assert [s.rate_per_min for s in report.steps] == expected_steps
    assert report.max_clean_rate_per_min == best


def test_a_rate_the_station_cannot_follow_is_reported_not_clean(tmp_path: Path) -> None:
    catalog = FolderCatalog(write_samples(tmp_path / "s", ["good", "dent", "good", "good"]))
    seen: list[RateStep] = []
    # 30 ms per part, parts 25 ms apart on average: some triggers must find the station busy.
    report = find_max_rate(
        TakesItsTime(),
        LineConfig(parts=12, gate_travel_s=0.4, deadline_ms=200.0),
        start_per_min=2400.0,
        max_per_min=2400.0,
        catalog=catalog,
        on_step=seen.append,
    )
    assert list(report.steps) == seen and len(seen) == 1
    assert not seen[0].clean and seen[0].missed_triggers > 0
    assert seen[0].audit_ok  # missed parts were rejected fail-safe, not mistaken
    assert report.max_clean_rate_per_min is None
