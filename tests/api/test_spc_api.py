"""GET /spc/...: control charts and Cp/Cpk on a store of real measured results.

The store holds what recipes/flange-measure.yaml measured on every sample image (the loaded
recipe gives the tolerances), plus, where a test needs an out-of-control point, a copy of a
real result with its outer diameter pushed far off.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellinspect.api import create_app
from cellinspect.entities import InspectedFrame, InspectionResult, Verdict
from cellinspect.health.spc import D2, capability
from cellinspect.health.spc_series import measurements_of
from cellinspect.runtime.inspector import Inspector
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore

from .helpers import auth_as

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "flange-measure.yaml"


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector.from_recipe(RECIPE)


@pytest.fixture(scope="module")
def measured(inspector: Inspector) -> list[InspectedFrame]:
    frames = []
    for path in sorted((ROOT / "sample_images").glob("*.bmp")):
        image = cv2.imread(str(path))
        assert image is not None
        frames.append(inspector.inspect_image(np.asarray(image, dtype=np.uint8), name=path.name))
    return frames


def results_of(frames: list[InspectedFrame]) -> list[InspectionResult]:
    return sorted((f.result for f in frames), key=lambda r: (r.captured_wall, r.result_id))


@pytest.fixture
def spc_store(
    settings: StationSettings, measured: list[InspectedFrame]
) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    s.add_many([InspectedFrame(f.result) for f in measured])
    yield s
    s.close()


@pytest.fixture
def spc_client(
    settings: StationSettings, spc_store: SqlResultStore, inspector: Inspector
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, spc_store, inspector), headers=auth_as("vic")) as c:
        yield c


def outer_values(results: list[InspectionResult]) -> list[float]:
    return [v for r in results if (v := measurements_of(r).get("outer_diameter_mm")) is not None]


def test_measurement_list_has_every_dimension_with_cp_cpk_from_the_recipe(
    spc_client: TestClient, measured: list[InspectedFrame]
) -> None:
    response = spc_client.get("/spc/measurements")
    assert response.status_code == 200
    body = response.json()
    assert body["recipe"] == "flange-measure"
    items = {m["name"]: m for m in body["items"]}
    for name in ("outer_diameter_mm", "bore_diameter_mm", "bolt_circle_diameter_mm"):
        assert name in items
    assert "hole0_diameter_mm" in items and "centre_x_mm" not in items
    values = outer_values(results_of(measured))
    outer = items["outer_diameter_mm"]
    assert outer["count"] == len(values) >= 30
    expected = capability(values, 59.7, 60.3)  # flange-measure: 60.0 +- 0.3
    assert outer["capability"]["lsl"] == pytest.approx(59.7)
    assert outer["capability"]["cp"] == pytest.approx(expected.cp)
    assert outer["capability"]["cpk"] == pytest.approx(expected.cpk)
    hole = items["hole0_diameter_mm"]["capability"]  # holes share hole_diameter_mm: 6.6 +- 0.3
    assert hole["usl"] == pytest.approx(6.9)


def test_individuals_chart_limits_and_points_follow_the_stored_measurements(
    spc_client: TestClient, measured: list[InspectedFrame]
) -> None:
    values = outer_values(results_of(measured))
    body = spc_client.get("/spc/measurements/outer_diameter_mm").json()
    assert [p["value"] for p in body["points"]] == pytest.approx(values)
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(values)) / (len(values) - 1)
    assert body["centre"] == pytest.approx(sum(values) / len(values))
    assert body["ucl"] == pytest.approx(body["centre"] + 3 * mr_bar / D2)
    assert body["mr_ucl"] == pytest.approx(3.267 * mr_bar)
    assert body["points"][0]["moving_range"] is None
    assert set(body["rules"]) == {"WE1", "WE2", "WE3", "WE4", "TREND6"}
    assert body["flagged"] == sum(bool(p["rules"]) for p in body["points"])


def test_a_part_far_off_size_is_flagged_beyond_three_sigma(
    spc_client: TestClient, spc_store: SqlResultStore, measured: list[InspectedFrame]
) -> None:
    results = results_of(measured)
    base = next(r for r in results if "outer_diameter_mm" in measurements_of(r))
    rois = tuple(
        dataclasses.replace(
            roi,
            scores={
                **roi.scores,
                "measure:outer_diameter_mm": roi.scores["measure:outer_diameter_mm"] + 1.5,
            },
        )
        if roi.roi == "measure"
        else roi
        for roi in base.rois
    )
    off = dataclasses.replace(
        base,
        result_id="off-size",
        rois=rois,
        captured_wall=results[-1].captured_wall + timedelta(seconds=1),
    )
    spc_store.add_many([InspectedFrame(off)])
    body = spc_client.get("/spc/measurements/outer_diameter_mm").json()
    last = body["points"][-1]
    assert last["result_id"] == "off-size"
    assert "WE1" in last["rules"]
    listed = {m["name"]: m for m in spc_client.get("/spc/measurements").json()["items"]}
    assert listed["outer_diameter_mm"]["flagged"] >= 1


def test_spec_limits_on_the_request_override_the_recipe(spc_client: TestClient) -> None:
    wide = spc_client.get("/spc/measurements/outer_diameter_mm?lsl=59&usl=61").json()
    narrow = spc_client.get("/spc/measurements/outer_diameter_mm").json()
    assert wide["capability"]["cp"] == pytest.approx(narrow["capability"]["cp"] * 2 / 0.6)
    assert spc_client.get("/spc/measurements/outer_diameter_mm?lsl=59").status_code == 422
    assert spc_client.get("/spc/measurements/outer_diameter_mm?lsl=61&usl=59").status_code == 422


def test_reject_rate_p_chart_counts_fails_per_subgroup(
    spc_client: TestClient, measured: list[InspectedFrame]
) -> None:
    results = results_of(measured)
    body = spc_client.get("/spc/reject-rate?subgroup=10").json()
    groups = body["subgroups"]
    assert len(groups) == len(results) // 10
    expected = [
        sum(r.verdict is Verdict.FAIL for r in results[i : i + 10]) for i in range(0, 40, 10)
    ]
    assert [g["rejected"] for g in groups] == expected[: len(groups)]
    assert body["centre"] == pytest.approx(sum(expected) / (10 * len(groups)))
    assert all(g["lcl"] <= body["centre"] <= g["ucl"] for g in groups)
    by_time = spc_client.get("/spc/reject-rate?bucket_s=3600").json()["subgroups"]
    assert sum(g["size"] for g in by_time) == len(results)


def test_filters_and_unknown_measurements(spc_client: TestClient) -> None:
    assert spc_client.get("/spc/measurements?recipe=other").json()["items"] == []
    assert spc_client.get("/spc/measurements?station_id=nowhere").json()["items"] == []
    assert spc_client.get("/spc/measurements/no_such_mm").status_code == 404
    assert spc_client.get("/spc/reject-rate?recipe=other").json()["subgroups"] == []


def test_spc_needs_a_reading_token(spc_client: TestClient) -> None:
    assert spc_client.get("/spc/measurements", headers={"Authorization": ""}).status_code == 401
    for path in ("/spc/measurements", "/spc/reject-rate", "/spc/measurements/outer_diameter_mm"):
        assert spc_client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert spc_client.get(path).status_code == 200  # a viewer may read


def test_limit_charts_the_newest_parts(
    spc_client: TestClient, measured: list[InspectedFrame]
) -> None:
    newest = results_of(measured)[-12:]
    body = spc_client.get("/spc/measurements/outer_diameter_mm?limit=12").json()
    assert [p["result_id"] for p in body["points"]] == [
        r.result_id for r in newest if "outer_diameter_mm" in measurements_of(r)
    ]
    groups = spc_client.get("/spc/reject-rate?limit=12&subgroup=4").json()["subgroups"]
    assert [g["rejected"] for g in groups] == [
        sum(r.verdict is Verdict.FAIL for r in newest[i : i + 4]) for i in range(0, 12, 4)
    ]


def test_a_baseline_fixes_the_limits_on_the_first_points(
    spc_client: TestClient, measured: list[InspectedFrame]
) -> None:
    values = outer_values(results_of(measured))
    body = spc_client.get("/spc/measurements/outer_diameter_mm?baseline=10").json()
    first = values[:10]
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(first)) / 9
    assert body["baseline"] == 10
    assert body["centre"] == pytest.approx(sum(first) / 10)
    assert body["ucl"] == pytest.approx(body["centre"] + 3 * mr_bar / D2)
    assert len(body["points"]) == len(values)  # every point still charted and judged
    assert spc_client.get("/spc/measurements/outer_diameter_mm").json()["baseline"] == len(values)

    too_long = spc_client.get(f"/spc/measurements/outer_diameter_mm?baseline={len(values) + 1}")
    assert too_long.status_code == 422 and "baseline must be" in too_long.json()["message"]
    rate = spc_client.get("/spc/reject-rate?subgroup=10&baseline=2").json()
    groups = rate["subgroups"]
    assert rate["baseline"] == 2
    assert rate["centre"] == pytest.approx(sum(g["rejected"] for g in groups[:2]) / 20)
