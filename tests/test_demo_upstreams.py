"""The demo upstreams (examples/mcp_server, examples/a2a_agent) tested directly, without Envoy,
with the real SDK clients: what the gateway tests rely on must hold before a gateway is added.

    /tmp/venvprobe/bin/python -m pytest tests/test_demo_upstreams.py -q
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from a2a.client import ClientCallContext, ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import SendMessageRequest, StreamResponse
from a2a.types.a2a_pb2 import Role, TaskState
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[1]
MCP_SERVER = REPO / "examples" / "mcp_server" / "server.py"
A2A_AGENT = REPO / "examples" / "a2a_agent" / "agent.py"
FAKE_LLM = REPO / "examples" / "fake_llm" / "server.py"

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# What Envoy would send: the gateway's own authority, which the SDK's DNS-rebinding guard rejects
# by default for a 127.0.0.1 bind.
GATEWAY_HOST = "127.0.0.1:10000"
MCP_INIT_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# --- process fixtures ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Upstream:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


def start_upstream(script: Path, args: list[str], ready_path: str, env: dict[str, str] | None = None) -> Upstream:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"{script.stem}-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    upstream = Upstream(f"http://127.0.0.1:{port}", proc, Path(log.name))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(upstream.base_url + ready_path, timeout=1).status_code == 200:
                return upstream
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_upstream(upstream)
    raise RuntimeError(f"{script.name} {args} did not become ready:\n{upstream.log_path.read_text()}")


def stop_upstream(upstream: Upstream) -> None:
    upstream.proc.terminate()  # signals exactly this PID
    try:
        upstream.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        upstream.proc.kill()
        upstream.proc.wait()


@pytest.fixture(scope="module", params=["sse", "json"])
def mcp_server(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    args = ["--json-response"] if request.param == "json" else []
    upstream = start_upstream(MCP_SERVER, args, "/_calls")
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="module")
def echo_mcp_server() -> Iterator[Upstream]:
    """The MCP server the delegating agent calls (JSON mode)."""
    upstream = start_upstream(MCP_SERVER, ["--json-response"], "/_calls")
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[Upstream]:
    """The project's fake LLM provider (examples/fake_llm), which records every request."""
    upstream = start_upstream(FAKE_LLM, ["--name", "demo-llm"], "/healthz")
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="module")
def agent_b() -> Iterator[Upstream]:
    upstream = start_upstream(A2A_AGENT, ["--name", "agent-b"], "/.well-known/agent-card.json")
    yield upstream
    stop_upstream(upstream)


@pytest.fixture(scope="module")
def agent_a(agent_b: Upstream, echo_mcp_server: Upstream, fake_llm: Upstream) -> Iterator[Upstream]:
    """A delegating agent: calls agent B, the LLM and the MCP `echo` tool for every message."""
    args = [
        "--name", "agent-a",
        "--delegate-to", agent_b.base_url + "/",
        "--call-llm", fake_llm.base_url + "/v1",
        "--call-mcp", echo_mcp_server.base_url + "/mcp",
    ]  # fmt: skip
    env = {"AGENT_LLM_KEY": "test-llm-key", "AGENT_LLM_MODEL": "demo-model"}
    upstream = start_upstream(A2A_AGENT, args, "/.well-known/agent-card.json", env=env)
    yield upstream
    stop_upstream(upstream)


# --- MCP -----------------------------------------------------------------------------------


async def mcp_add_twice(url: str, mode: str) -> tuple[str, list[str], list[Any]]:
    async with httpx2.AsyncClient(headers={"Host": GATEWAY_HOST}) as http:
        async with McpClient(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            results = [await client.call_tool("add", {"a": 2, "b": n}) for n in (3, 4)]
            return client.protocol_version, tools, [r.structured_content["result"] for r in results]


@pytest.mark.parametrize(("mode", "revision"), [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")])
def test_mcp_sdk_client_lists_tools_and_counts_calls(mcp_server: Upstream, mode: str, revision: str) -> None:
    httpx.post(mcp_server.base_url + "/_calls/reset").raise_for_status()

    version, tools, sums = asyncio.run(mcp_add_twice(mcp_server.base_url + "/mcp", mode))

    assert version == revision
    assert tools == ["add", "echo", "query_db", "transfer", "delete_row", "admin_reset"]
    assert sums == [5, 6]
    assert httpx.get(mcp_server.base_url + "/_calls").json() == {"add": 2}


def test_mcp_tool_schemas_prompts_and_resources(mcp_server: Upstream) -> None:
    async def inspect() -> tuple[dict[str, Any], list[str], list[str], str]:
        async with McpClient(mcp_server.base_url + "/mcp", mode="legacy") as client:
            schemas = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
            prompts = [prompt.name for prompt in (await client.list_prompts()).prompts]
            resources = [str(resource.uri) for resource in (await client.list_resources()).resources]
            secret = (await client.read_resource("file:///secret/keys.txt")).contents[0].text
            return schemas, prompts, resources, secret

    schemas, prompts, resources, secret = asyncio.run(inspect())

    assert schemas["query_db"]["required"] == ["table", "sql"]
    assert schemas["transfer"]["properties"]["amount"]["type"] == "number"
    assert schemas["delete_row"]["properties"]["id"]["type"] == "integer"
    assert schemas["admin_reset"].get("properties", {}) == {}
    assert prompts == ["greeting"]
    assert resources == ["file:///data/readme.txt", "file:///secret/keys.txt"]
    assert "sk-demo" in secret


@pytest.mark.parametrize("revision", ["2025-03-26", "2025-06-18", "2025-11-25"])
def test_mcp_initialize_answers_in_configured_framing_for_any_host(mcp_server: Upstream, revision: str) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": revision, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    response = httpx.post(
        mcp_server.base_url + "/mcp", headers={**MCP_INIT_HEADERS, "Host": GATEWAY_HOST}, json=initialize
    )

    assert response.status_code == 200, response.text  # not 421: DNS-rebinding guard is off
    assert response.headers["mcp-session-id"]
    json_mode = "--json-response" in mcp_server.proc.args
    if json_mode:
        assert response.headers["content-type"].startswith("application/json")
        message = response.json()
    else:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = next(line for line in response.text.splitlines() if line.startswith("data:"))
        message = json.loads(data.removeprefix("data:"))
    assert message["result"]["protocolVersion"] == revision


# --- A2A -----------------------------------------------------------------------------------


def payload_kind(event: StreamResponse) -> str:
    return event.WhichOneof("payload")


async def a2a_send(url: str, text: str, streaming: bool, headers: dict[str, str] | None = None) -> list[StreamResponse]:
    client = await create_client(url, client_config=ClientConfig(streaming=streaming))
    try:
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        context = ClientCallContext(service_parameters=headers) if headers else None
        return [event async for event in client.send_message(request, context=context)]
    finally:
        await client.close()


def test_a2a_card_lists_1_0_and_0_3_interfaces(agent_b: Upstream) -> None:
    card = httpx.get(agent_b.base_url + "/.well-known/agent-card.json").json()

    assert card["name"] == "agent-b"
    assert [(i["protocolVersion"], i["url"]) for i in card["supportedInterfaces"]] == [
        ("1.0", agent_b.base_url + "/"),
        ("0.3", agent_b.base_url + "/"),
    ]
    assert card["url"] == agent_b.base_url + "/"  # 0.3 field, from the 0.3 interface


def test_a2a_1_0_send_message(agent_b: Upstream) -> None:
    httpx.post(agent_b.base_url + "/_seen/reset").raise_for_status()

    events = asyncio.run(a2a_send(agent_b.base_url, "hello", streaming=False))

    assert [payload_kind(e) for e in events] == ["task"]
    task = events[0].task
    assert task.context_id
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_stream_response_text(events[0]) == "[agent-b] echo: hello"
    seen = httpx.get(agent_b.base_url + "/_seen").json()
    assert [(s["method"], s["headers"]["a2a-version"]) for s in seen] == [("SendMessage", "1.0")]


def test_a2a_1_0_streaming_message(agent_b: Upstream) -> None:
    events = asyncio.run(a2a_send(agent_b.base_url, "hello", streaming=True))

    assert [payload_kind(e) for e in events] == ["task", "status_update", "artifact_update", "status_update"]
    assert events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert events[1].status_update.status.state == TaskState.TASK_STATE_WORKING
    assert get_stream_response_text(events[2]) == "[agent-b] echo: hello"
    assert events[3].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    context_id = events[0].task.context_id
    assert context_id and all(getattr(e, payload_kind(e)).context_id == context_id for e in events)


def test_a2a_0_3_message_send_and_stream(agent_b: Upstream) -> None:
    def request(method: str) -> dict[str, Any]:
        parts = [{"kind": "text", "text": "hi"}]
        message = {"kind": "message", "messageId": f"m-{method}", "role": "user", "parts": parts}
        return {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"message": message}}

    sent = httpx.post(agent_b.base_url + "/", headers={"A2A-Version": "0.3"}, json=request("message/send")).json()

    assert sent["result"]["kind"] == "task"
    assert sent["result"]["contextId"]
    assert sent["result"]["status"]["state"] == "completed"
    assert sent["result"]["artifacts"][0]["parts"][0]["text"] == "[agent-b] echo: hi"

    with httpx.stream(
        "POST",
        agent_b.base_url + "/",
        headers={"A2A-Version": "0.3", "Accept": "text/event-stream"},
        json=request("message/stream"),
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        results = [json.loads(line[5:])["result"] for line in response.iter_lines() if line.startswith("data:")]

    assert [r["kind"] for r in results] == ["task", "status-update", "artifact-update", "status-update"]
    assert results[-1]["status"]["state"] == "completed" and results[-1]["final"] is True
    assert len({r["contextId"] for r in results}) == 1


def test_a2a_delegation_forwards_traceparent(agent_a: Upstream, agent_b: Upstream) -> None:
    httpx.post(agent_b.base_url + "/_seen/reset").raise_for_status()
    inbound = {"traceparent": TRACEPARENT, "x-tollgate-test": "hop-1", "x-unrelated": "dropped"}

    events = asyncio.run(a2a_send(agent_a.base_url, "relay me", streaming=False, headers=inbound))

    reply = get_stream_response_text(events[-1]).splitlines()
    assert reply[:2] == ["[agent-a] echo: relay me", "delegate: [agent-b] echo: relay me"]
    seen_by_b = httpx.get(agent_b.base_url + "/_seen").json()
    assert [s["method"] for s in seen_by_b] == ["SendMessage"]
    assert seen_by_b[0]["headers"]["traceparent"] == TRACEPARENT
    assert seen_by_b[0]["headers"]["x-tollgate-test"] == "hop-1"
    assert "x-unrelated" not in seen_by_b[0]["headers"]


def test_a2a_agent_calls_llm_and_mcp_with_traceparent(
    agent_a: Upstream, echo_mcp_server: Upstream, fake_llm: Upstream
) -> None:
    httpx.post(echo_mcp_server.base_url + "/_calls/reset").raise_for_status()
    httpx.post(fake_llm.base_url + "/_fake/reset").raise_for_status()

    events = asyncio.run(a2a_send(agent_a.base_url, "tool time", streaming=True, headers={"traceparent": TRACEPARENT}))

    artifact = next(e for e in events if payload_kind(e) == "artifact_update")
    reply = get_stream_response_text(artifact).splitlines()
    assert reply[2:] == ["llm: Hello from demo-llm model demo-model: tool time", "mcp: tool time"]
    assert httpx.get(echo_mcp_server.base_url + "/_calls").json() == {"echo": 1}
    [llm_request] = httpx.get(fake_llm.base_url + "/_fake/requests").json()
    assert llm_request["path"] == "/v1/chat/completions"
    assert llm_request["headers"]["traceparent"] == TRACEPARENT
    assert llm_request["headers"]["authorization"] == "Bearer test-llm-key"
    assert llm_request["body"]["model"] == "demo-model"
