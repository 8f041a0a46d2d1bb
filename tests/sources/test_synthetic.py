"""The synthetic source: frames rendered on the fly, truth in order, stops on close()."""

from __future__ import annotations

import numpy as np
import pytest

from cellinspect import config
from cellinspect.datagen.flange import DEFECT_CLASSES, plan_parts, render_part
from cellinspect.entities import Frame
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.synthetic import SyntheticSource, open_synthetic


def test_is_a_frame_source() -> None:
    assert isinstance(SyntheticSource(count=1), FrameSource)


@pytest.mark.parametrize(("count", "seed", "rate"), [(0, 0, 0.3), (1, 2, 1.0), (5, 7, 0.4)])
def test_yields_count_frames_with_labels_in_order(count: int, seed: int, rate: float) -> None:
    source = SyntheticSource(count=count, seed=seed, defect_rate=rate)
    assert source.state is SourceState.CREATED
    assert source.name == f"synthetic:seed={seed}"
    specs = plan_parts(count, seed, rate)
    assert source.labels == [s.label for s in specs]
    items = list(source.frames())
    assert len(items) == count
    state: SourceState = source.state
    assert state is SourceState.CLOSED
    for item, spec in zip(items, specs, strict=True):
        assert isinstance(item, Frame)
        assert item.frame_id == spec.index
        assert item.source == source.name
        assert item.path is None
        assert np.array_equal(item.image, render_part(spec))


def test_state_is_open_while_frames_flow() -> None:
    source = SyntheticSource(count=2)
    stream = source.frames()
    next(stream)
    assert source.state is SourceState.OPEN
    source.close()


def test_close_stops_the_stream() -> None:
    source = SyntheticSource(count=10, seed=1)
    stream = source.frames()
    first = next(stream)
    assert isinstance(first, Frame) and first.frame_id == 0
    source.close()
    source.close()  # idempotent
    assert list(stream) == []
    assert source.state is SourceState.CLOSED


def test_closed_before_start_yields_nothing() -> None:
    source = SyntheticSource(count=3)
    source.close()
    assert list(source.frames()) == []
    assert source.state is SourceState.CLOSED


def test_frames_may_be_called_once() -> None:
    source = SyntheticSource(count=1)
    list(source.frames())
    with pytest.raises(SourceError, match="only once"):
        source.frames()


def test_factory_reads_the_recipe_section() -> None:
    cfg = config.SyntheticSource(count=4, seed=3, defect_rate=1.0)
    source = open_synthetic(cfg)
    assert source.name == "synthetic:seed=3"
    assert len(source.labels) == 4
    assert set(source.labels) <= set(DEFECT_CLASSES)
    assert [s.index for s in source.specs] == [0, 1, 2, 3]


def test_unusable_settings_are_a_source_error() -> None:
    with pytest.raises(SourceError, match="synthetic:seed=-1: cannot plan parts: seed"):
        open_synthetic(config.SyntheticSource(count=2, seed=-1))
