"""OPC UA clients read the camera health the station publishes (VisionSystem/HealthLevel,
VisionSystem/HealthAlarms), found by browse name."""

from __future__ import annotations

import asyncio

from asyncua.client.client import Client

from cellinspect.entities import InspectedFrame
from cellinspect.plc.opcua_server import NAMESPACE, VisionOpcUaServer
from cellinspect.plc.vision_state import VisionStateMachine


def _no_jobs(meas: str, part: str) -> InspectedFrame:
    raise AssertionError("no job is started in this test")


async def _read(url: str) -> tuple[str, list[str]]:
    async with Client(url=url, timeout=30) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        system = await client.nodes.objects.get_child(f"{idx}:VisionSystem")
        level = await (await system.get_child(f"{idx}:HealthLevel")).read_value()
        lines = await (await system.get_child(f"{idx}:HealthAlarms")).read_value()
        return str(level), list(lines)


def test_health_level_and_alarm_lines_reach_opcua_clients() -> None:
    server = VisionOpcUaServer(
        VisionStateMachine(recipes=["flange"]), _no_jobs, host="127.0.0.1", port=0
    )
    server.start()
    try:
        assert asyncio.run(_read(server.url)) == ("ok", [""])
        line = "HEALTH_ALARM focus: change -0.2 (warn 0.1, alarm 0.15) since part 90"
        future = server.publish_health("alarm", [line])
        assert future is not None
        future.result(timeout=10)
        assert asyncio.run(_read(server.url)) == ("alarm", [line])
    finally:
        server.stop()
