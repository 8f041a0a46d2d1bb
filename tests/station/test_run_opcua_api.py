"""`cellinspect run` with a software trigger, driven over OPC UA and the API at once.

A real station subprocess: recipe catalog {1: flange, 2: flange-measure}, the shipped
sample_images folder as its (finite, queued) camera, its OPC UA server and API on free
127.0.0.1 ports. An asyncua client starts single jobs and reads each result the OPC 40100
way (a ResultReady event with the result as JSON), prepares recipes by number and by name;
an HTTP client triggers and selects recipes with and without the API token and reads the
status. After SIGTERM the station's own store must hold every result any client was given,
each stamped with the station id.

Waits are bounded guards (a hung station fails the test instead of hanging it); nothing is
asserted about how long anything took.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import BadInvalidState

from cellinspect.api.schemas import display_name, display_source
from cellinspect.entities import Verdict
from cellinspect.plc.opcua_server import NAMESPACE
from cellinspect.plc.registers import ResultCode
from tests.conftest import ROOT
from tests.station.runner import StationProcess, stored_results, write_station

STATION_ID = "opcua-api-1"
TOKEN = "station-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUARD_S = 120.0  # upper bound for any single wait; a guard, not an expectation
SAMPLES = sorted(p.name for p in (ROOT / "sample_images").glob("*.bmp"))


class Events:
    """asyncua subscription handler: every ResultReady event into a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.queue.get(), timeout=GUARD_S)


class Vision:
    """The station's OPC 40100-shaped nodes, found by browse name as a client would."""

    def __init__(self, client: Client, idx: int, nodes: dict[str, Node]) -> None:
        self.client, self.idx, self.nodes = client, idx, nodes

    @classmethod
    async def browse(cls, client: Client) -> Vision:
        idx = await client.get_namespace_index(NAMESPACE)
        system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        vsm = await system.get_child(f"{idx}:VisionStateMachine")
        auto = await vsm.get_child(f"{idx}:VisionAutomaticModeStateMachine")
        recipes = await system.get_child(f"{idx}:RecipeManagement")
        nodes = {
            "system": system,
            "auto": auto,
            "recipes": recipes,
            "state": await vsm.get_child(f"{idx}:CurrentState"),
            "sub_state": await auto.get_child(f"{idx}:CurrentState"),
            "prepared": await recipes.get_child(f"{idx}:PreparedRecipe"),
        }
        return cls(client, idx, nodes)

    async def states(self) -> tuple[str, str]:
        return await self.nodes["state"].read_value(), await self.nodes["sub_state"].read_value()

    async def prepared(self) -> str:
        value: str = await self.nodes["prepared"].read_value()
        return value

    async def wait_ready(self) -> None:
        """Until the single job's state change (after its event) reaches the address space."""
        for _ in range(int(GUARD_S / 0.05)):
            if await self.states() == ("Operational", "Ready"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never back to Operational/Ready: {await self.states()}")

    async def wait_prepared(self, recipe: str) -> None:
        """Until PreparedRecipe reads `recipe` (a change made elsewhere is published async)."""
        for _ in range(int(GUARD_S / 0.05)):
            if await self.prepared() == recipe:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"PreparedRecipe never {recipe!r}: {await self.prepared()!r}")

    async def start_single_job(self, meas: str, part: str) -> str:
        job_id: str = await self.nodes["auto"].call_method(
            f"{self.idx}:StartSingleJob",
            ua.Variant(meas, ua.VariantType.String),
            ua.Variant(part, ua.VariantType.String),
        )
        return job_id

    async def call(self, node: str, method: str) -> None:
        await self.nodes[node].call_method(f"{self.idx}:{method}")

    async def prepare(self, external_id: str) -> bool:
        completed: bool = await self.nodes["recipes"].call_method(
            f"{self.idx}:PrepareRecipe", ua.Variant(external_id, ua.VariantType.String)
        )
        return completed

    async def subscribe(self) -> Events:
        events = Events()
        sub = await self.client.create_subscription(20, events)
        etype = await self.client.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", f"{self.idx}:ResultReadyEventType"]
        )
        await sub.subscribe_events(self.nodes["system"], etype)
        return events


async def _status(http: httpx.AsyncClient, parts: int) -> dict[str, Any]:
    """GET /station once it counts `parts` parts.

    The count follows the result: a client holds its result as soon as the verdict is
    posted, and the station counts it when it hands the result on to the store a moment later.
    """
    for _ in range(int(GUARD_S / 0.05)):
        status: dict[str, Any] = (
            (await http.get("/station", headers=AUTH)).raise_for_status().json()
        )
        if status["parts"] >= parts:
            assert status["parts"] == parts, status
            assert sum(status["verdicts"].values()) == parts, status
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"GET /station never counted {parts} parts")


def _same_result(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same result, whether or not it came from the API, which names no server folder."""

    def seen(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "path": display_name(r["path"]), "source": display_source(r["source"])}

    return seen(one) == seen(other)


def _content(event: Any) -> dict[str, Any]:
    """The result an OPC UA client got, checked against the event's own fields."""
    content: dict[str, Any] = json.loads(event.ResultContent)
    assert event.ResultId == content["result_id"]
    assert event.ResultState == int(ResultCode.from_verdict(Verdict(content["verdict"])))
    assert event.IsSimulated is False  # a real station, not the simulator
    return content


async def _drive(opcua_url: str, api_url: str, given: list[dict[str, Any]]) -> None:
    """Every client interaction; each result handed to a client is appended to `given`."""
    async with (
        Client(url=opcua_url, timeout=GUARD_S) as client,
        httpx.AsyncClient(base_url=api_url, timeout=GUARD_S) as http,
    ):
        vision = await Vision.browse(client)
        # The station starts Operational/Ready with its active recipe prepared.
        assert await vision.states() == ("Operational", "Ready")
        assert await vision.prepared() == "1"
        events = await vision.subscribe()

        # --- StartSingleJob: one queued frame, the result as a ResultReady event
        job_id = await vision.start_single_job("meas-1", "101")
        event = await events.next()
        content = _content(event)
        assert (event.JobId, event.MeasId, event.PartId) == (job_id, "meas-1", "101")
        assert event.RecipeId == "1"
        assert content["recipe_name"] == "flange-default"
        assert content["part_id"] == 101
        given.append(content)
        await vision.wait_ready()

        # --- PrepareRecipe: refused mid-job (and the station keeps its recipe), by number,
        # an unknown one refused, then by name
        await vision.call("auto", "StartContinuous")
        assert await vision.states() == ("Operational", "ContinuousExecution")
        with pytest.raises(BadInvalidState):
            await vision.prepare("2")
        assert (await http.get("/station", headers=AUTH)).json()["recipe"]["number"] == 1
        await vision.call("auto", "Stop")
        assert await vision.states() == ("Operational", "Ready")
        assert await vision.prepared() == "1"
        assert await vision.prepare("2") is True
        assert await vision.prepared() == "2"
        for unknown in ("gear", "99", ""):
            with pytest.raises(BadInvalidState):
                await vision.prepare(unknown)
        assert await vision.prepared() == "2"
        assert await vision.states() == ("Operational", "Ready")
        assert await vision.prepare("flange-measure") is True
        assert await vision.prepared() == "flange-measure"

        job_id = await vision.start_single_job("meas-2", "")  # no part id: the station numbers it
        event = await events.next()
        content = _content(event)
        assert (event.JobId, event.MeasId, event.RecipeId) == (job_id, "meas-2", "flange-measure")
        assert content["recipe_name"] == "flange-measure"
        assert content["part_id"] is not None and event.PartId == str(content["part_id"])
        given.append(content)
        await vision.wait_ready()

        # --- the API: status, token rules, trigger, recipe select
        status = await _status(http, 2)
        assert status["station_id"] == STATION_ID and status["trigger"] == "software"
        assert status["recipe"] == {"number": 2, "name": "flange-measure"}
        assert status["links"]["opcua"]["endpoint"] == opcua_url
        assert status["links"]["api"]["url"] == api_url

        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"X-API-Token": "nope"}):
            r = await http.post("/station/trigger", json={"part_id": 7}, headers=headers)
            assert r.status_code == 401, r.text
            r = await http.post("/station/recipe", json={"number": 1}, headers=headers)
            assert r.status_code == 401, r.text
        await _status(http, 2)  # refused: nothing ran

        r = await http.post("/station/trigger", json={"part_id": 301}, headers=AUTH)
        assert r.status_code == 200, r.text
        api_result: dict[str, Any] = r.json()
        assert api_result["station_id"] == STATION_ID and api_result["line"] == "test-line"
        assert api_result["part_id"] == 301 and api_result["recipe_name"] == "flange-measure"
        given.append(api_result)
        # A result started by the API reaches OPC UA clients too (no job id: not theirs).
        event = await events.next()
        assert _same_result(_content(event), api_result) and event.JobId == ""

        r = await http.post("/station/recipe", json={"number": 9}, headers=AUTH)
        assert r.status_code == 409 and "RECIPE_NOT_FOUND" in r.text, r.text
        r = await http.post("/station/recipe", json={"number": 0}, headers=AUTH)
        assert r.status_code == 422, r.text
        r = await http.post("/station/recipe", json={"number": 1}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json() == {"number": 1, "code": "NONE"}
        # OPC UA clients see the recipe the API selected as the prepared one.
        await vision.wait_prepared("1")
        assert await vision.states() == ("Operational", "Ready")

        r = await http.post("/station/trigger", json={}, headers={"X-API-Token": TOKEN})
        assert r.status_code == 200, r.text
        api_result = r.json()
        assert api_result["station_id"] == STATION_ID
        assert api_result["recipe_name"] == "flange-default"
        given.append(api_result)
        event = await events.next()
        assert _same_result(_content(event), api_result)

        # The next OPC UA job runs with it, and its result says so.
        job_id = await vision.start_single_job("meas-3", "102")
        event = await events.next()
        content = _content(event)
        assert content["recipe_name"] == "flange-default" and content["part_id"] == 102
        assert (event.JobId, event.RecipeId) == (job_id, "1")
        given.append(content)
        await vision.wait_ready()
        assert await vision.prepared() == "1"

        assert len(given) == 5
        status = await _status(http, 5)
        assert status["recipe"] == {"number": 1, "name": "flange-default"}
        assert events.queue.empty()  # one event per result, no more


def test_software_trigger_over_opcua_and_api(tmp_path: Path) -> None:
    station_file = write_station(
        tmp_path / "station.yaml",
        station_id=STATION_ID,
        recipes={
            1: str(ROOT / "recipes" / "flange.yaml"),
            2: str(ROOT / "recipes" / "flange-measure.yaml"),
        },
        active_recipe=1,
        trigger={"mode": "software"},
        opcua={  # explicitly open: the default is Basic256Sha256 with users only
            "enabled": True,
            "host": "127.0.0.1",
            "port": 0,
            "security_policies": ["none"],
            "allow_anonymous": True,
        },
        api={"enabled": True, "host": "127.0.0.1", "port": 0},
    )
    given: list[dict[str, Any]] = []
    with StationProcess(station_file, env={"CELLINSPECT_API_TOKEN": TOKEN}) as station:
        running = station.wait_running()
        assert running["trigger"] == "software" and running["parts"] == 0
        # Software trigger with a folder: frames wait in a queue, so no part is judged yet.
        assert running["links"]["camera"]["name"].startswith("folder:")
        asyncio.run(
            _drive(running["links"]["opcua"]["endpoint"], running["links"]["api"]["url"], given)
        )
        assert station.stop() == 0, station.log_text()
    stopped = station.stopped()["status"]
    assert stopped["parts"] == len(given) == 5
    assert stopped["links"]["store"]["written"] == 5
    assert stopped["links"]["store"]["spilled"] == stopped["links"]["store"]["dropped"] == 0

    # One queued frame per trigger, in the folder's order, whoever triggered.
    assert [Path(r["path"]).name for r in given] == SAMPLES[: len(given)]
    assert len({r["result_id"] for r in given}) == len(given)

    stored = {s.result.result_id: s.result for s in stored_results(tmp_path / "data")}
    assert len(stored) == len(given)
    for result in given:
        kept = stored[result["result_id"]]
        assert kept.station_id == STATION_ID and kept.line == "test-line"
        assert _same_result(kept.to_dict(), result)  # the API's own carry file names only
    of_station = stored_results(tmp_path / "data", STATION_ID)
    assert {s.result.result_id for s in of_station} == set(stored)
