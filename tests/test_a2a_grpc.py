"""The A2A gRPC binding, issue 19 item 2, through the real Envoy 1.40 (shipped envoy/a2a.yaml:
the echo agent's gRPC route by authority `echo.grpc.agents`, HTTP/2 to the agent) with the
a2a-sdk's gRPC client (GrpcTransport) and server (GrpcHandler) in tests/a2a_test_agent.py:

- SendMessage is authorized (API key), tagged (the agent sees the chain headers as gRPC
  metadata, never the caller's key) and audited like JSON-RPC (binding `grpc`, ids read from
  the protobuf messages both ways, final state);
- SendStreamingMessage streams through, message by message;
- the task created over gRPC is its originator's: alice gets it, bob's CancelTask gets
  PERMISSION_DENIED, an unknown key UNAUTHENTICATED — and neither reaches the agent;
- a push config with the metadata address gets INVALID_ARGUMENT; a call that is not A2A is
  refused;
- the 0.3 service (`a2a.v1.A2AService`, the SDK's CompatGrpcTransport and CompatGrpcHandler)
  is read with its own field numbers (`name: tasks/{id}`, the nested push config).

    .venv/bin/python -m pytest tests/test_a2a_grpc.py -q
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

import harness
from a2a.client import ClientCallContext, ClientConfig, ClientFactory
from a2a.helpers import new_text_message
from a2a.types import AgentCard, GetTaskRequest, SendMessageRequest, a2a_pb2, a2a_pb2_grpc
from a2a.types.a2a_pb2 import Role
from google.protobuf.json_format import ParseDict

pytestmark = pytest.mark.timeout(90)

AGENT = "tests/a2a_test_agent.py"
AUTHORITY = "echo.grpc.agents"
ALICE = {"x-api-key": "tg-demo-alice"}
BOB = {"x-api-key": "tg-demo-bob"}


@dataclass
class Stack:
    envoy: harness.Envoy
    agent: str
    card: AgentCard

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.envoy.port}"

    def seen(self, method: str | None = None) -> list[dict[str, Any]]:
        return [s for s in httpx.get(self.agent + "/_seen", timeout=5).json()
                if s["transport"] == "grpc" and (method is None or s["method"] == method)]

    def wait(self, count: int = 1, **match: Any) -> list[dict]:
        return self.envoy.wait_audit(count, timeout=10, where=lambda r: all(r.get(k) == v for k, v in match.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("a2a-grpc")
    port, grpc_port = harness.free_port(), harness.free_port()
    started: list[harness.Proc] = []
    try:
        agent = harness.python_server("agent-echo", AGENT, ["--port", str(port), "--grpc-port", str(grpc_port)], workdir,
                                      f"http://127.0.0.1:{port}/.well-known/agent-card.json")
        started.append(agent)
        upstreams = {"agent_echo": port, "agent_echo_grpc": grpc_port,
                     "agent_planner": harness.free_port(), "agent_researcher": harness.free_port()}
        envoy = harness.Envoy(harness.load_envoy_config("a2a.yaml"), workdir, upstreams=upstreams)
        started.append(envoy.proc)
        card = ParseDict(httpx.get(f"http://127.0.0.1:{port}/.well-known/agent-card.json", timeout=5).json(), AgentCard(),
                         ignore_unknown_fields=True)
        # The client talks gRPC to the gateway, never to the agent.
        for interface in card.supported_interfaces:
            if interface.protocol_binding == "GRPC":
                interface.url = f"127.0.0.1:{envoy.port}"
        yield Stack(envoy, f"http://127.0.0.1:{port}", card)
    finally:
        for proc in reversed(started):
            proc.stop()


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[("grpc.default_authority", AUTHORITY)])


async def sdk_send(stack: Stack, text: str, headers: dict[str, str], streaming: bool = False) -> list[Any]:
    return await sdk_send_card(stack.card, text, headers, streaming)


async def sdk_send_card(card: AgentCard, text: str, headers: dict[str, str], streaming: bool = False) -> list[Any]:
    config = ClientConfig(streaming=streaming, supported_protocol_bindings=["GRPC"], grpc_channel_factory=channel)
    client = ClientFactory(config).create(card)
    try:
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        return [e async for e in client.send_message(request, context=ClientCallContext(service_parameters=headers))]
    finally:
        await client.close()


async def raw_call(stack: Stack, method: str, request: Any, headers: dict[str, str]) -> tuple[grpc.StatusCode, str]:
    """Calls the A2A service with the SDK's generated stub; returns the status and message."""
    async with channel(stack.target) as ch:
        stub = a2a_pb2_grpc.A2AServiceStub(ch)
        try:
            await getattr(stub, method)(request, metadata=[(k, v) for k, v in headers.items()] + [("a2a-version", "1.0")])
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""


def test_send_message_is_authorized_tagged_and_audited(stack: Stack) -> None:
    events = asyncio.run(sdk_send(stack, "hello over grpc", ALICE))
    task = events[-1].task
    assert task.status.state == a2a_pb2.TaskState.TASK_STATE_COMPLETED
    assert "echo: hello over grpc" in task.artifacts[0].parts[0].text
    seen = stack.seen("SendMessage")[-1]
    assert seen["path"] == "/lf.a2a.v1.A2AService/SendMessage"
    headers = seen["headers"]
    assert headers["x-tollgate-a2a-hop"] == "1"
    assert headers["x-tollgate-a2a-caller"] == "alice"
    assert headers["x-tollgate-a2a-chain"] == "echo"
    # A first turn: the agent generates the context, so no context header and no route key.
    assert "x-tollgate-a2a-context-id" not in headers and "x-tollgate-a2a-route-key" not in headers
    assert headers["x-tollgate-a2a-message-id"]
    assert headers["traceparent"].startswith("00-")
    assert "x-api-key" not in headers, "the caller's key reached the agent"
    [record] = stack.wait(1, binding="grpc", method="SendMessage", task_id=task.id)
    assert record["decision"] == "allow"
    assert record["caller"] == "alice" and record["identity"]["principal"] == "alice"
    assert record["dialect"] == "1.0"
    assert record["context_id"] == task.context_id
    assert record["task_state"] == "completed"
    assert record["hop"] == 1 and record["chain"] == ["echo"]
    assert record["grpc_status"] == 0, "the agent's grpc-status, from its trailers"
    assert record["message_id"] == headers["x-tollgate-a2a-message-id"]
    assert record["trace_id"] == headers["traceparent"].split("-")[1]
    harness.wait_until(lambda: stack.envoy.stat(
        "wasmcustom.tollgate.a2a.calls.target.echo.method.SendMessage.state.completed") >= 1, 5, "calls metric")


def test_streaming_passes_message_by_message(stack: Stack) -> None:
    events = asyncio.run(sdk_send(stack, "stream me", ALICE, streaming=True))
    assert len(events) >= 3, events
    task_id = events[0].task.id
    assert events[-1].status_update.status.state == a2a_pb2.TaskState.TASK_STATE_COMPLETED
    [record] = stack.wait(1, binding="grpc", method="SendStreamingMessage", task_id=task_id)
    assert record["decision"] == "allow"
    assert record["streaming"] is True
    assert record["events"] == len(events)
    assert record["task_state"] == "completed"
    assert stack.seen("SendStreamingMessage")


def test_tasks_are_their_originators_over_grpc(stack: Stack) -> None:
    task = asyncio.run(sdk_send(stack, "mine", ALICE))[-1].task
    # Recorded from the gRPC answer: alice may read it...
    code, _ = asyncio.run(raw_call(stack, "GetTask", GetTaskRequest(id=task.id), ALICE))
    assert code == grpc.StatusCode.OK
    # ...bob may not cancel it, and an unknown key is not anybody.
    code, message = asyncio.run(raw_call(stack, "CancelTask", a2a_pb2.CancelTaskRequest(id=task.id), BOB))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.PERMISSION_DENIED, "A2A_NOT_TASK_ORIGINATOR"), message
    code, message = asyncio.run(raw_call(stack, "GetTask", GetTaskRequest(id=task.id), {"x-api-key": "nope"}))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.UNAUTHENTICATED, "A2A_UNAUTHENTICATED"), message
    assert stack.seen("CancelTask") == []
    assert [s["method"] for s in stack.seen("GetTask")] == ["GetTask"]
    [record] = stack.wait(1, binding="grpc", method="CancelTask", task_id=task.id)
    assert (record["decision"], record["reason"], record["caller"]) == ("deny", "A2A_NOT_TASK_ORIGINATOR", "bob")
    assert record["rule_id"] == "cancel-own-tasks"
    assert record["grpc_status"] == 7
    stack.wait(1, binding="grpc", method="GetTask", reason="A2A_UNAUTHENTICATED")
    # Alice may cancel her own task; the agent refuses (it is completed): its own grpc-status
    # reaches her and the record.
    code, _ = asyncio.run(raw_call(stack, "CancelTask", a2a_pb2.CancelTaskRequest(id=task.id), ALICE))
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED)
    [record] = stack.wait(1, binding="grpc", method="CancelTask", task_id=task.id, caller="alice")
    assert record["decision"] == "allow"
    assert record["grpc_status"] == code.value[0]
    assert [s["method"] for s in stack.seen("CancelTask")] == ["CancelTask"]


def test_push_webhook_and_non_a2a_calls_are_refused(stack: Stack) -> None:
    task = asyncio.run(sdk_send(stack, "push", ALICE))[-1].task
    config = a2a_pb2.TaskPushNotificationConfig(task_id=task.id, url="http://169.254.169.254/latest/meta-data/")
    code, message = asyncio.run(raw_call(stack, "CreateTaskPushNotificationConfig", config, ALICE))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "A2A_PUSH_URL_REFUSED"), message
    assert stack.seen("CreateTaskPushNotificationConfig") == []
    [record] = stack.wait(1, binding="grpc", method="CreateTaskPushNotificationConfig", task_id=task.id)
    assert record["push_url_refused"] == "metadata"

    async def health() -> grpc.StatusCode:
        async with channel(stack.target) as ch:
            call = ch.unary_unary("/lf.a2a.v1.A2AService/DropTables", request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                await call(b"", metadata=list(ALICE.items()))
            except grpc.aio.AioRpcError as err:
                return err.code()
        return grpc.StatusCode.OK

    assert asyncio.run(health()) == grpc.StatusCode.INVALID_ARGUMENT
    assert stack.seen("DropTables") == []


def test_the_0_3_service_is_read_with_its_own_field_numbers(stack: Stack) -> None:
    from a2a.compat.v0_3 import a2a_v0_3_pb2 as v03, a2a_v0_3_pb2_grpc as v03_grpc

    card = AgentCard()
    card.CopyFrom(stack.card)
    for interface in card.supported_interfaces:
        if interface.protocol_binding == "GRPC":
            interface.protocol_version = "0.3"
    # The SDK's 0.3 client (CompatGrpcTransport) against the SDK's 0.3 server, through Envoy.
    events = asyncio.run(sdk_send_card(card, "hello 0.3", ALICE))
    task = events[-1].task
    assert "echo: hello 0.3" in task.artifacts[0].parts[0].text
    assert stack.seen("SendMessage")[-1]["path"] == "/a2a.v1.A2AService/SendMessage"
    [record] = stack.wait(1, binding="grpc", dialect="0.3", method="SendMessage", task_id=task.id)
    assert (record["decision"], record["caller"], record["context_id"]) == ("allow", "alice", task.context_id)
    assert record["task_state"] == "completed"

    async def call(method: str, request: Any, headers: dict[str, str]) -> tuple[grpc.StatusCode, str]:
        async with channel(stack.target) as ch:
            try:
                await getattr(v03_grpc.A2AServiceStub(ch), method)(request, metadata=list(headers.items()))
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""

    # `name: tasks/{id}` names the task: alice's own passes, bob's cancel is refused.
    assert asyncio.run(call("GetTask", v03.GetTaskRequest(name=f"tasks/{task.id}"), ALICE))[0] == grpc.StatusCode.OK
    code, message = asyncio.run(call("CancelTask", v03.CancelTaskRequest(name=f"tasks/{task.id}"), BOB))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.PERMISSION_DENIED, "A2A_NOT_TASK_ORIGINATOR"), message
    # The push URL nested in config.push_notification_config.url.
    create = v03.CreateTaskPushNotificationConfigRequest(
        parent=f"tasks/{task.id}", config_id="c1",
        config=v03.TaskPushNotificationConfig(push_notification_config=v03.PushNotificationConfig(url="http://[::ffff:127.0.0.1]:2375/")))
    code, message = asyncio.run(call("CreateTaskPushNotificationConfig", create, ALICE))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "A2A_PUSH_URL_REFUSED"), message
    [record] = stack.wait(1, binding="grpc", dialect="0.3", method="CreateTaskPushNotificationConfig", task_id=task.id)
    assert record["push_url_refused"] == "loopback"
    assert not [s for s in stack.seen() if s["path"].startswith("/a2a.v1.A2AService/") and s["method"] in ("CancelTask", "CreateTaskPushNotificationConfig")]
