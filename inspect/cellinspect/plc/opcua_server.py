"""An OPC UA server (asyncua) exposing a subset shaped after OPC 40100 Machine Vision.

Address space (namespace ``urn:cellinspect:machinevision``)::

    Objects/VisionSystem
      VisionStateMachine            CurrentState (String), LastError (String)
        Halt(), Reset(), SelectModeAutomatic()
        VisionAutomaticModeStateMachine   CurrentState (String)
          StartSingleJob(MeasIdIn, PartIdIn) -> JobIdOut
          StartContinuous() -> JobIdOut, Stop(), Abort()
      RecipeManagement
        PrepareRecipe(ExternalId) -> IsCompleted, UnprepareRecipe()
        PreparedRecipe (String)
      ResultReadyEventType events from VisionSystem:
        ResultId, MeasId, PartId, JobId, RecipeId, ResultState (Int32), ResultContent (JSON),
        IsSimulated

Security (policies, the station certificate, users) comes from :class:`OpcUaSecurity`; without
it the server offers security mode None with anonymous sessions.

Method callbacks are plain ``async`` functions taking (parent NodeId, *Variant) and returning
a list of Variants or a StatusCode: no ``@uamethod`` (which shifts arguments when used on bound
methods), and nothing blocking in the server loop: jobs run in an executor thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from cellinspect.entities import InspectedFrame
from cellinspect.plc.errors import PlcError
from cellinspect.plc.opcua_security import OpcUaSecurity, file_format
from cellinspect.plc.registers import ResultCode
from cellinspect.plc.vision_state import InvalidTransitionError, VisionStateMachine

log = logging.getLogger(__name__)

NAMESPACE = "urn:cellinspect:machinevision"
JobRunner = Callable[[str, str], InspectedFrame]
"""(meas id, part id) -> inspected part: acquire one frame and inspect it (runs in a thread)."""

_EVENT_FIELDS: tuple[tuple[str, ua.VariantType], ...] = (
    ("ResultId", ua.VariantType.String),
    ("MeasId", ua.VariantType.String),
    ("PartId", ua.VariantType.String),
    ("JobId", ua.VariantType.String),
    ("RecipeId", ua.VariantType.String),
    ("ResultState", ua.VariantType.Int32),
    ("ResultContent", ua.VariantType.String),
    ("IsSimulated", ua.VariantType.Boolean),
)

_BAD_INVALID_STATE = ua.StatusCode(ua.UInt32(StatusCodes.BadInvalidState))

_Method = Callable[..., Awaitable[list[ua.Variant] | ua.StatusCode]]


def _arg(name: str, vtype: ua.VariantType) -> ua.Argument:
    a = ua.Argument()
    a.Name = name
    a.DataType = ua.NodeId(ua.Int32(vtype.value))
    a.ValueRank = -1
    a.Description = ua.LocalizedText(name)
    return a


async def _secure(server: Server, security: OpcUaSecurity) -> None:
    """Policies, identity tokens, certificate and key; the application URI from the certificate."""
    server.set_security_policy(security.policy_types)
    server.set_identity_tokens(security.identity_tokens)
    if security.certificate is not None and security.private_key is not None:
        assert security.application_uri is not None  # set by OpcUaSecurity with the certificate
        await server.set_application_uri(security.application_uri)
        cert, key = security.certificate, security.private_key
        await server.load_certificate(cert, format=file_format(cert))
        await server.load_private_key(key, format=file_format(key))


class VisionOpcUaServer:
    """Runs on its own thread and event loop; `port=0` picks a free port (see :attr:`port`).

    ``security`` sets the policies, certificate and users; None keeps asyncua's open server
    (security mode None, anonymous sessions).
    """

    def __init__(
        self,
        machine: VisionStateMachine,
        run_job: JobRunner,
        host: str = "127.0.0.1",
        port: int = 4840,
        simulated: bool = True,
        *,
        security: OpcUaSecurity | None = None,
    ) -> None:
        self.machine = machine
        self.run_job = run_job
        self.host = host
        self.port = port
        self.simulated = simulated
        self.security = security
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._event_gen: Any = None
        self._idx = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.results_published = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/cellinspect/"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="opcua-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        except (OSError, RuntimeError, TimeoutError, UaError, ValueError, TypeError) as err:
            self.stop()
            raise PlcError(
                f"OPC UA server: cannot start on {self.host}:{self.port}: {err}"
            ) from err
        self.machine.listeners.append(self._on_state)
        return self.port

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        self._loop = self._thread = self._server = None
        if self._on_state in self.machine.listeners:
            self.machine.listeners.remove(self._on_state)
        if loop is None or thread is None:
            return
        if server is not None:
            try:
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
            except (RuntimeError, TimeoutError, OSError) as err:
                log.warning("OPC UA server: stop did not finish cleanly: %s", err)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    def __enter__(self) -> VisionOpcUaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ address space

    async def _start(self) -> None:
        security = self.security
        server = Server(user_manager=security.user_manager() if security else None)
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/cellinspect/")
        server.set_server_name("cellinspect vision system")
        if security is not None:
            await _secure(server, security)
        self._idx = idx = await server.register_namespace(NAMESPACE)
        objects = server.get_objects_node()
        system = await objects.add_object(idx, "VisionSystem")
        vsm = await system.add_object(idx, "VisionStateMachine")
        auto = await vsm.add_object(idx, "VisionAutomaticModeStateMachine")
        recipes = await system.add_object(idx, "RecipeManagement")
        m = self.machine  # a machine already past Preoperational (a station) starts as it is
        self._nodes = {
            "system": system,
            "state": await vsm.add_variable(idx, "CurrentState", m.state.value),
            "auto": await auto.add_variable(idx, "CurrentState", m.auto.value if m.auto else ""),
            "error": await vsm.add_variable(idx, "LastError", m.error),
            "recipe": await recipes.add_variable(idx, "PreparedRecipe", m.recipe or ""),
            # camera health (docs/health.md): ok / warn / alarm, and one line per statistic
            "health": await system.add_variable(idx, "HealthLevel", "ok"),
            "health_alarms": await system.add_variable(idx, "HealthAlarms", [""]),
        }
        s = ua.VariantType.String
        await self._method(vsm, "Halt", self._halt)
        await self._method(vsm, "Reset", self._reset)
        await self._method(vsm, "SelectModeAutomatic", self._select_auto)
        await self._method(
            auto,
            "StartSingleJob",
            self._start_single_job,
            [_arg("MeasIdIn", s), _arg("PartIdIn", s)],
            [_arg("JobIdOut", s)],
        )
        await self._method(
            auto, "StartContinuous", self._start_continuous, [], [_arg("JobIdOut", s)]
        )
        await self._method(auto, "Stop", self._stop_continuous)
        await self._method(auto, "Abort", self._abort)
        await self._method(
            recipes,
            "PrepareRecipe",
            self._prepare_recipe,
            [_arg("ExternalId", s)],
            [_arg("IsCompleted", ua.VariantType.Boolean)],
        )
        await self._method(recipes, "UnprepareRecipe", self._unprepare_recipe)
        etype = await server.create_custom_event_type(
            idx, "ResultReadyEventType", ObjectIds.BaseEventType, list(_EVENT_FIELDS)
        )
        self._nodes["event_type"] = etype
        self._event_gen = await server.get_event_generator(etype, system.nodeid)
        await server.start()
        self._server = server
        if self.port == 0 and server.bserver is not None:
            self.port = int(server.bserver.port or 0)
        log.info(
            "OPC UA server on %s (%s)",
            self.url,
            self.security.describe() if self.security else "security mode None, anonymous",
        )

    async def _method(
        self,
        parent: Node,
        name: str,
        handler: _Method,
        inputs: Sequence[ua.Argument] = (),
        outputs: Sequence[ua.Argument] = (),
    ) -> None:
        await parent.add_method(self._idx, name, handler, list(inputs), list(outputs))

    def node_id(self, name: str) -> ua.NodeId:
        """NodeId of a named node (system, state, auto, error, recipe, health, health_alarms,
        event_type) for clients."""
        return self._nodes[name].nodeid

    # ------------------------------------------------------------------ state publishing

    def _on_state(self, *_: object) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._publish_state(), loop)

    async def _publish_state(self) -> None:
        m = self.machine
        await self._nodes["state"].write_value(m.state.value)
        await self._nodes["auto"].write_value(m.auto.value if m.auto else "")
        await self._nodes["error"].write_value(m.error)
        await self._nodes["recipe"].write_value(m.recipe or "")

    async def _guard(self, action: Callable[[], object]) -> list[ua.Variant] | ua.StatusCode:
        try:
            action()
        except InvalidTransitionError as err:
            log.info("OPC UA: %s", err)
            return _BAD_INVALID_STATE
        await self._publish_state()
        return []

    # ------------------------------------------------------------------ methods

    async def _halt(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.halt)

    async def _reset(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.reset)

    async def _select_auto(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.select_mode_automatic)

    async def _stop_continuous(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.stop)

    async def _abort(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.abort)

    async def _unprepare_recipe(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        return await self._guard(self.machine.unprepare_recipe)

    async def _prepare_recipe(
        self, parent: ua.NodeId, external_id: ua.Variant
    ) -> list[ua.Variant] | ua.StatusCode:
        recipe = str(external_id.Value)
        # In a thread: a station's machine loads the recipe (its models) before it is Ready.
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.machine.prepare_recipe, recipe)
        except InvalidTransitionError as err:
            log.info("OPC UA: %s", err)
            return _BAD_INVALID_STATE
        await self._publish_state()
        return [ua.Variant(True, ua.VariantType.Boolean)]

    async def _start_continuous(self, parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
        try:
            job_id = self.machine.start_continuous()
        except InvalidTransitionError:
            return _BAD_INVALID_STATE
        await self._publish_state()
        return [ua.Variant(job_id, ua.VariantType.String)]

    async def _start_single_job(
        self, parent: ua.NodeId, meas_id: ua.Variant, part_id: ua.Variant
    ) -> list[ua.Variant] | ua.StatusCode:
        try:
            job_id = self.machine.start_single_job()
        except InvalidTransitionError:
            return _BAD_INVALID_STATE
        await self._publish_state()
        meas, part = str(meas_id.Value or ""), str(part_id.Value or "")
        task = asyncio.get_running_loop().create_task(self._single_job(job_id, meas, part))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return [ua.Variant(job_id, ua.VariantType.String)]

    async def _single_job(self, job_id: str, meas: str, part: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            inspected = await loop.run_in_executor(None, self.run_job, meas, part)
        except Exception as err:
            log.exception("OPC UA: job %s failed", job_id)
            self.machine.fail(f"job {job_id}: {type(err).__name__}: {err}")
        else:
            await self._emit(inspected, job_id, meas, part)
            self.machine.job_done()
        await self._publish_state()

    def publish_health(self, level: str, lines: Sequence[str]) -> Future[None] | None:
        """From any thread: the camera health level and its alarm lines (HealthLevel/Alarms)."""
        loop = self._loop
        if loop is None or not loop.is_running() or "health" not in self._nodes:
            return None
        return asyncio.run_coroutine_threadsafe(
            self._write_health(level, list(lines) or [""]), loop
        )

    async def _write_health(self, level: str, lines: list[str]) -> None:
        await self._nodes["health"].write_value(level)
        await self._nodes["health_alarms"].write_value(lines)

    # ------------------------------------------------------------------ results

    async def _emit(self, inspected: InspectedFrame, job_id: str, meas: str, part: str) -> None:
        r = inspected.result
        ev = self._event_gen.event
        ev.ResultId = r.result_id
        ev.MeasId = meas
        ev.PartId = part or (str(r.part_id) if r.part_id is not None else "")
        ev.JobId = job_id
        ev.RecipeId = self.machine.recipe or r.recipe_name
        ev.ResultState = int(ResultCode.from_verdict(r.verdict))
        ev.ResultContent = json.dumps(r.to_dict())
        ev.IsSimulated = self.simulated
        await self._event_gen.trigger(message=f"result {r.result_id}: {r.verdict.value}")
        self.results_published += 1

    def publish_result(self, inspected: InspectedFrame, job_id: str = "") -> Future[None] | None:
        """From any thread (the PLC path in ContinuousExecution): send a ResultReady event."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return None
        part = str(inspected.result.part_id) if inspected.result.part_id is not None else ""
        return asyncio.run_coroutine_threadsafe(self._emit(inspected, job_id, "", part), loop)
