"""The demo stack (`make run`): envoy/stack.yaml with every demo upstream, exercised the way
the examples printed by examples/run_stack.py do — each layer answers through one Envoy, and
each filter only sees its own routes."""
from __future__ import annotations

import json

import httpx
import pytest

import harness

pytestmark = pytest.mark.timeout(120)

ALICE = "tg-demo-alice"


@pytest.fixture
def stack(procs):
    ports = {name: harness.free_port() for name in
             ("llm_provider_a", "llm_provider_b", "mcp_demo", "agent_echo", "agent_planner", "agent_researcher")}
    envoy = procs.envoy("stack.yaml", upstreams=ports, concurrency=2)
    p = ports
    procs.python("provider-a", "examples/fake_llm/server.py", ["--port", str(p["llm_provider_a"]), "--name", "provider-a"],
                 f"http://127.0.0.1:{p['llm_provider_a']}/healthz")
    procs.python("provider-b", "examples/fake_llm/server.py", ["--port", str(p["llm_provider_b"]), "--name", "provider-b"],
                 f"http://127.0.0.1:{p['llm_provider_b']}/healthz")
    procs.python("mcp", "examples/mcp_server/server.py", ["--port", str(p["mcp_demo"])],
                 f"http://127.0.0.1:{p['mcp_demo']}/_calls")
    procs.python("echo", "examples/a2a_agent/agent.py",
                 ["--port", str(p["agent_echo"]), "--name", "echo", "--public-url", f"http://127.0.0.1:{p['agent_echo']}/"],
                 f"http://127.0.0.1:{p['agent_echo']}/.well-known/agent-card.json")
    procs.python("planner", "examples/a2a_agent/agent.py",
                 ["--port", str(p["agent_planner"]), "--name", "planner",
                  "--public-url", f"http://127.0.0.1:{p['agent_planner']}/", "--delegate-to", f"{envoy.url}/agents/echo/"],
                 f"http://127.0.0.1:{p['agent_planner']}/.well-known/agent-card.json")
    return envoy, ports


def test_each_layer_answers_through_the_stack(stack):
    envoy, ports = stack
    gw = envoy.url

    chat = httpx.post(f"{gw}/v1/chat/completions", headers={"authorization": f"Bearer {ALICE}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}, timeout=10)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"].startswith("Hello from provider-a")

    with httpx.stream("POST", f"{gw}/v1/messages", timeout=10,
                      headers={"x-api-key": ALICE, "anthropic-version": "2023-06-01"},
                      json={"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as stream:
        assert stream.status_code == 200
        body = "".join(stream.iter_text())
    assert "event: message_stop" in body and "provider-b" in body

    mcp_headers = {"authorization": f"Bearer {ALICE}", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-06-18"}
    denied = httpx.post(f"{gw}/mcp", headers=mcp_headers, timeout=10, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "query_db", "arguments": {"table": "users", "sql": "select 1"}}})
    assert denied.json()["error"]["code"] == -32602, denied.text
    assert httpx.get(f"http://127.0.0.1:{ports['mcp_demo']}/_calls").json().get("query_db", 0) == 0

    card = httpx.get(f"{gw}/agents/planner/.well-known/agent-card.json", timeout=10).json()
    urls = [i["url"] for i in card["supportedInterfaces"]]
    assert urls and all(u == f"{gw}/agents/planner/" for u in urls), urls

    sent = httpx.post(f"{gw}/agents/planner/", timeout=30,
                      headers={"a2a-version": "1.0", "authorization": f"Bearer {ALICE}"},
                      json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
                          "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}})
    assert sent.status_code == 200, sent.text
    text = json.dumps(sent.json())
    assert "[planner] echo: hi" in text and "[echo] echo: hi" in text, text

    # 2 LLM calls, 1 MCP call, 4 A2A requests (planner card, planner hop, echo card, echo hop).
    envoy.wait_audit(2, where=lambda r: r["layer"] == "llm" and r.get("completed", True))
    envoy.wait_audit(1, where=lambda r: r["layer"] == "mcp")
    hops = envoy.wait_audit(2, where=lambda r: r["layer"] == "a2a" and r.get("method") == "SendMessage")
    assert sorted(r["hop"] for r in hops) == [1, 2], hops
    assert len({r["trace_id"] for r in hops}) == 1, hops
    # Each filter counted only its own requests.
    stats = envoy.stats()
    assert stats["wasmcustom.tollgate.llm.requests"] == 2
    assert stats["wasmcustom.tollgate.mcp.requests"] == 1
    assert stats["wasmcustom.tollgate.a2a.requests"] == 4  # card + planner hop + echo card + echo hop
    prom = envoy.prometheus()
    assert 'team="payments"' in prom and 'mcp_decision="deny"' in prom and 'a2a_target="planner"' in prom
