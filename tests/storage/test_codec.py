"""Stored result JSON converts back into the same InspectionResult, or fails by name."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from cellinspect.entities import InspectionResult, Verdict
from cellinspect.storage.codec import (
    latency_ms,
    model_versions,
    result_from_dict,
    result_from_json,
    result_to_json,
)
from cellinspect.storage.errors import StoreError
from cellinspect.storage.synthetic import EPOCH, synthetic_result


@pytest.mark.parametrize("verdict", list(Verdict))
def test_round_trip(verdict: Verdict) -> None:
    result = synthetic_result(3, verdict, defect_class="dent", part_id=9)
    assert result_from_json(result_to_json(result)) == result


def test_round_trip_of_a_fail_safe_result() -> None:
    result = InspectionResult(
        result_id="x",
        frame_id=0,
        source="api",
        verdict=Verdict.FAIL,
        reasons=("frame not read: truncated PNG",),
        captured_wall=EPOCH,
        recipe_name="r",
        recipe_sha256="0" * 64,
        error="truncated PNG",
    )
    assert result_from_json(result_to_json(result)) == result


def test_round_trip_keeps_station_pick_and_plane_calibration() -> None:
    result = replace(
        synthetic_result(4, Verdict.FAIL, defect_class="crack"),
        station_id="st-07",
        line="line-2",
        site="plant-north",
        plane_calibration_id="plane-1",
        plane_calibration_sha256="c" * 64,
        pick_x_mm=12.5,
        pick_y_mm=-3.25,
        pick_angle_deg=90.0,
        pick_frame="robot_base",
    )
    assert result_from_json(result_to_json(result)) == result
    assert result.to_dict()["station_id"] == "st-07"


def test_json_written_before_station_id_reads_with_none() -> None:
    d = synthetic_result(2).to_dict()
    for key in ("station_id", "line", "site"):
        del d[key]
    got = result_from_dict(d)
    assert (got.station_id, got.line, got.site) == (None, None, None)
    assert got == synthetic_result(2)


def _without(key: str) -> dict[str, Any]:
    d = synthetic_result(1).to_dict()
    del d[key]
    return d


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[]", "expected an object"),
        (json.dumps(_without("result_id")), "missing key 'result_id'"),
        (json.dumps(_without("captured_wall")), "missing key 'captured_wall'"),
        (json.dumps({**synthetic_result(1).to_dict(), "verdict": "maybe"}), "'maybe'"),
        (json.dumps({**synthetic_result(1).to_dict(), "captured_wall": "yesterday"}), "yesterday"),
        (json.dumps({**synthetic_result(1).to_dict(), "pick": {"x_mm": "left"}}), "left"),
    ],
)
def test_broken_json_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        result_from_json(text)


def test_result_from_dict_of_a_non_mapping_field() -> None:
    with pytest.raises(StoreError):
        result_from_dict({**synthetic_result(1).to_dict(), "rois": [1]})


def test_model_versions_and_latency() -> None:
    r = synthetic_result(1, latency_ms=20.0)
    assert model_versions(r) == "anomaly@1.0.0;classifier@1.0.0"
    assert latency_ms(r) == 20.0
    assert latency_ms(replace(r, timings_ms={"a": 1.5, "b": 2.5})) == 4.0
    assert latency_ms(replace(r, timings_ms={})) is None
