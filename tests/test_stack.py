"""The demo stack (`make run`): envoy/stack.yaml with every demo upstream, Redis and
tollgate-limits (the team budget is a fleet budget), exercised the way the examples printed by
examples/run_stack.py do — each layer answers through one Envoy, and each filter only sees its
own routes; the team's spend survives a restart of the Envoy."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

import harness

pytestmark = pytest.mark.timeout(120)

ALICE = "tg-demo-alice"
def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5).stdout.strip()


@pytest.fixture
def stack(procs, fleet_store):
    ports = {name: harness.free_port() for name in
             ("llm_provider_a", "llm_provider_b", "mcp_demo", "agent_echo", "agent_planner", "agent_researcher")}
    ports["tollgate_limits"] = fleet_store["tollgate_limits"]
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
    # query_db is in alice's tools/list (an argument-conditional rule): refused, not "Unknown tool".
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, -31403), denied.text
    assert denied.json()["error"]["message"] == "Not allowed: tools/call query_db with these arguments", denied.text
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


def test_team_budget_spend_survives_an_envoy_restart(stack, fleet_store, procs):
    """The shipped `team-monthly-budget` is a calendar-month fleet budget: what alice's team
    spent is in Redis, so a new Envoy (a `make run` restart) refuses against it."""
    envoy, ports = stack
    chat = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "spend please"}]}
    r = httpx.post(f"{envoy.url}/v1/chat/completions", headers={"authorization": f"Bearer {ALICE}"}, json=chat, timeout=10)
    assert r.status_code == 200, r.text
    record = envoy.wait_audit(1, where=lambda r: r["layer"] == "llm" and r.get("completed", True))[-1]
    spent = record["cost_micro_usd"]
    assert spent > 0 and record["priced"] is True and not record.get("limits_degraded")
    # The reservation is settled to the real cost in Redis (the month's counter of team payments).
    keys: list[str] = []

    def settled() -> bool:
        keys[:] = [k for k in redis_cli(fleet_store["redis"], "--scan", "--pattern", "*team-monthly-budget.cost*").splitlines() if k]
        return len(keys) == 1 and redis_cli(fleet_store["redis"], "GET", keys[0]) == str(spent)
    harness.wait_until(settled, 10, f"the spend ({spent}) settled in Redis")
    assert "subject=payments" in keys[0] and "window=month@" in keys[0], keys
    envoy.stop()

    # A new Envoy with the same store; the cap (not part of the counter's identity) now leaves
    # less room than one more request needs: refused against the spend the old Envoy left.
    cfg = harness.load_envoy_config("stack.yaml")
    plugin = harness.plugin_config(cfg, "tollgate.llm")
    (budget,) = [l for l in plugin["limits"] if l["id"] == "team-monthly-budget"]
    assert (budget["window"], budget["on_store_failure"], plugin["store"]["cluster"]) == ("month", "fail_closed", "tollgate_limits")
    budget["cost_micro_usd_per_window"] = spent + record["reserved"]["cost_micro_usd"] - 1
    again = procs.envoy(cfg, upstreams=ports, plugin_configs={"tollgate.llm": plugin}, name="restarted")
    r = httpx.post(f"{again.url}/v1/chat/completions", headers={"authorization": f"Bearer {ALICE}"}, json=chat, timeout=10)
    assert r.status_code == 429, r.text
    refused = again.wait_audit(1, where=lambda r: r["layer"] == "llm")[-1]
    assert (refused["rule_id"], refused["limit"]["used"]) == ("team-monthly-budget", spent), refused
