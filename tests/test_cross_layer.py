"""Cross-layer tracing through one Envoy with all three Tollgate filters: an A2A agent that,
while handling a message, calls the LLM endpoint and an MCP tool through the same Envoy
(forwarding the traceparent the gateway gave it) yields LLM and MCP audit records in the
A2A hop's trace, each a child of the A2A gateway span.

    /tmp/venvprobe/bin/python -m pytest tests/test_cross_layer.py -q

The Envoy config is the shipped envoy/stack.yaml: one listener, the three wasm filters in one
chain, each enabled only on its own routes (route-level `FilterConfig{disabled: true}`
elsewhere).
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import SendMessageRequest
from a2a.types.a2a_pb2 import Role

pytestmark = pytest.mark.timeout(90)

LLM_KEY = "tg-demo-alice"  # a virtual key in envoy/llm.yaml
LLM_MODEL = "gpt-4o-mini"  # routed to provider-a in envoy/llm.yaml


def start_demo_upstreams(procs, gw: str, ports: dict) -> None:
    """The fake LLM provider, the demo MCP server and the demo agent, which calls the LLM and
    the MCP server through the gateway `gw`."""
    procs.python("fake-llm", "examples/fake_llm/server.py", ["--port", str(ports["llm_provider_a"]), "--name", "provider-a"],
                 f"http://127.0.0.1:{ports['llm_provider_a']}/healthz")  # fmt: skip
    procs.python("mcp", "examples/mcp_server/server.py", ["--port", str(ports["mcp_demo"]), "--json-response"],
                 f"http://127.0.0.1:{ports['mcp_demo']}/_calls")  # fmt: skip
    agent_args = ["--port", str(ports["agent_echo"]), "--name", "tools", "--call-llm", f"{gw}/v1", "--call-mcp", f"{gw}/mcp"]
    procs.python("agent", "examples/a2a_agent/agent.py", agent_args,
                 f"http://127.0.0.1:{ports['agent_echo']}/.well-known/agent-card.json",
                 env={"AGENT_LLM_KEY": LLM_KEY, "AGENT_LLM_MODEL": LLM_MODEL})  # fmt: skip


async def _send(url: str, text: str) -> str:
    client = await create_client(url, client_config=ClientConfig(streaming=False))
    try:
        request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
        return "\n".join([get_stream_response_text(e) async for e in client.send_message(request)])
    finally:
        await client.close()


def test_agent_llm_and_mcp_calls_share_the_a2a_trace(procs, workdir, fleet_store) -> None:
    ports = {"llm_provider_a": harness.free_port(), "llm_provider_b": harness.free_port(),
             "mcp_demo": harness.free_port(), "agent_echo": harness.free_port(),
             "tollgate_limits": fleet_store["tollgate_limits"]}  # the stack's team budget is a fleet budget
    # The shipped stack, as `make run` starts it. Its MCP policy lets anyone call `echo`, which
    # the demo agent does without a credential of its own.
    envoy = procs.envoy("stack.yaml", upstreams=ports)
    gw = envoy.url
    start_demo_upstreams(procs, gw, ports)

    reply = asyncio.run(_send(f"{gw}/agents/echo", "cross the layers")).splitlines()

    assert reply[0] == "[tools] echo: cross the layers"
    assert reply[1].startswith("llm: ") and "error" not in reply[1], reply
    assert reply[2] == "mcp: cross the layers", reply
    [hop] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("method") == "SendMessage")
    trace_id, a2a_span = hop["trace_id"], hop["span_id"]
    llm = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm")
    mcp = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("tool") == "echo")
    assert all(r["decision"] == "allow" for r in mcp), mcp
    mcp = [r for r in envoy.audit_records() if r.get("layer") == "mcp"]
    by_layer: dict[str, list[dict[str, Any]]] = {"llm": llm, "mcp": mcp}
    for layer, records in by_layer.items():
        assert {r.get("trace_id") for r in records} == {trace_id}, (layer, records)
        assert {r.get("parent_span_id") for r in records} == {a2a_span}, (layer, records)
        assert all(r.get("span_id") not in (None, a2a_span) for r in records), (layer, records)
