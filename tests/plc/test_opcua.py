"""The OPC 40100-shaped state machine, and the OPC UA server driven by a real asyncua client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadInvalidState

from cellinspect.entities import InspectedFrame
from cellinspect.plc.opcua_server import VisionOpcUaServer
from cellinspect.plc.sim_camera import FolderCatalog
from cellinspect.plc.vision_state import (
    AutoState,
    InvalidTransitionError,
    VisionState,
    VisionStateMachine,
)
from tests.fakes import BlobInspector

# --------------------------------------------------------------------------- pure machine


def test_state_machine_walks_through_a_single_job() -> None:
    m = VisionStateMachine(recipes=["flange"])
    seen: list[str] = []
    m.listeners.append(lambda s, a: seen.append(m.label))
    assert m.label == "Preoperational"
    m.select_mode_automatic()
    m.prepare_recipe("flange")
    job = m.start_single_job()
    m.job_done()
    m.start_continuous()
    m.stop()
    m.unprepare_recipe()
    m.halt()
    m.reset()
    assert job == "job-1"
    assert seen == [
        "Operational/Initialized",
        "Operational/Ready",
        "Operational/SingleExecution",
        "Operational/Ready",
        "Operational/ContinuousExecution",
        "Operational/Ready",
        "Operational/Initialized",
        "Halted",
        "Preoperational",
    ]


@pytest.mark.parametrize(
    ("steps", "call"),
    [
        ([], "start_single_job"),
        ([], "reset"),
        (["select_mode_automatic"], "start_single_job"),
        (["select_mode_automatic"], "select_mode_automatic"),
        (["select_mode_automatic"], "stop"),
        (["select_mode_automatic"], "abort"),
        (["halt"], "halt"),
        (["halt"], "select_mode_automatic"),
    ],
)
def test_state_machine_refuses_transitions_out_of_place(steps: list[str], call: str) -> None:
    m = VisionStateMachine(recipes=["flange"])
    for step in steps:
        getattr(m, step)()
    before = m.label
    with pytest.raises(InvalidTransitionError, match=r"not allowed|already"):
        getattr(m, call)()
    assert m.label == before


def test_unknown_recipe_is_refused_and_errors_need_reset() -> None:
    m = VisionStateMachine(recipes=["flange"])
    m.select_mode_automatic()
    with pytest.raises(InvalidTransitionError, match="unknown recipe"):
        m.prepare_recipe("gear")
    assert m.auto is AutoState.INITIALIZED
    m.fail("camera lost")
    assert m.state is VisionState.ERROR and m.error == "camera lost"
    m.reset()
    assert m.state is VisionState.PREOPERATIONAL and m.error == ""


# --------------------------------------------------------------------------- over OPC UA


@pytest.fixture
def server(samples: Path) -> Iterator[VisionOpcUaServer]:
    catalog = FolderCatalog(samples)
    inspector = BlobInspector()

    def run_job(meas: str, part: str) -> InspectedFrame:
        pid = int(part)
        return inspector.inspect_image(catalog.image(pid), catalog.name(pid), part_id=pid)

    srv = VisionOpcUaServer(
        VisionStateMachine(recipes=["flange"]), run_job, host="127.0.0.1", port=0
    )
    srv.start()
    yield srv
    srv.stop()


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)


async def _session(srv: VisionOpcUaServer) -> None:
    async with Client(url=srv.url, timeout=5) as client:
        idx = await client.get_namespace_index("urn:cellinspect:machinevision")
        system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        vsm = await system.get_child(f"{idx}:VisionStateMachine")
        auto = await vsm.get_child(f"{idx}:VisionAutomaticModeStateMachine")
        recipes = await system.get_child(f"{idx}:RecipeManagement")
        state = await vsm.get_child(f"{idx}:CurrentState")
        sub_state = await auto.get_child(f"{idx}:CurrentState")

        async def states() -> tuple[str, str]:
            return await state.read_value(), await sub_state.read_value()

        assert await states() == ("Preoperational", "")
        with pytest.raises(BadInvalidState):
            await auto.call_method(f"{idx}:StartSingleJob", "m0", "1")
        await vsm.call_method(f"{idx}:SelectModeAutomatic")
        assert await states() == ("Operational", "Initialized")
        with pytest.raises(BadInvalidState):
            await recipes.call_method(f"{idx}:PrepareRecipe", "gear")
        assert await recipes.call_method(f"{idx}:PrepareRecipe", "flange") is True
        assert await states() == ("Operational", "Ready")

        events = Events()
        sub = await client.create_subscription(20, events)
        etype = await client.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:ResultReadyEventType"]
        )
        await sub.subscribe_events(system, etype)
        job_id = await auto.call_method(
            f"{idx}:StartSingleJob", ua.Variant("meas-7", ua.VariantType.String), "2"
        )
        assert job_id == "job-1"
        event = await asyncio.wait_for(events.queue.get(), timeout=5)
        assert event.JobId == "job-1" and event.MeasId == "meas-7" and event.PartId == "2"
        assert event.ResultState == 2 and event.RecipeId == "flange"  # part 2 is a scratch
        content = json.loads(event.ResultContent)
        assert content["verdict"] == "fail" and content["defect_class"] == "scratch"
        assert event.ResultId == content["result_id"] and event.IsSimulated is True
        for _ in range(100):
            if await states() == ("Operational", "Ready"):
                break
            await asyncio.sleep(0.01)
        assert await states() == ("Operational", "Ready")
        await vsm.call_method(f"{idx}:Halt")
        assert await states() == ("Halted", "")
        await vsm.call_method(f"{idx}:Reset")
        assert await states() == ("Preoperational", "")
        await sub.delete()


def test_opcua_state_machine_start_single_job_and_result_event(
    server: VisionOpcUaServer,
) -> None:
    asyncio.run(_session(server))
    assert server.results_published == 1


def test_results_from_the_plc_path_are_published(server: VisionOpcUaServer) -> None:
    inspected = BlobInspector().inspect_image(
        __import__("numpy").zeros((8, 8, 3), dtype="uint8"), part_id=42
    )
    future = server.publish_result(inspected, job_id="continuous")
    assert future is not None
    future.result(timeout=5)
    assert server.results_published == 1
