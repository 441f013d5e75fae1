"""One identity across the three layers (issue 19 item 1), through the shipped envoy/stack.yaml
(one Envoy 1.40, the three filters) with real a2a-sdk agents, the real `openai` SDK to the
fake LLM and the real `mcp` SDK to the demo MCP server.

    .venv/bin/python -m pytest tests/test_identity_layers.py -q -p no:cacheprovider

A user (alice, then bob) asks the planner agent through the A2A route; the planner delegates
to the researcher through the A2A route; the researcher calls the LLM (`/v1`) and the MCP tool
`export_rows` (`/mcp`), forwarding the headers it got from its hop (traceparent and
x-tollgate-*, among them the gateway credential `x-tollgate-a2a-credential`). The stack's MCP
rule `researcher-exports-for-alice` lets the researcher export only on behalf of alice; the
LLM limit `agent-requests` (scope `agent`, here lowered to 2 requests) counts the researcher's
requests whoever it acts for.

Whether a call reached the MCP server is read from the server's own counters (GET /_calls);
what the researcher received from the gateway from the agent's own record (GET /_seen).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import httpx2
import pytest

import harness
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_stream_response_text, new_text_message
from a2a.types import SendMessageRequest
from a2a.types.a2a_pb2 import Role
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.timeout(150)

CREDENTIAL = "x-tollgate-a2a-credential"
# The fleet's demo secret: the A2A filter's delegation.signing_key, the LLM and MCP filters'
# identity.gateway.signing_key in envoy/stack.yaml.
SIGNING_KEY = b"CHANGE-ME-a-random-secret-of-32-bytes-or-more"
USER_KEYS = {"alice": "tg-demo-alice", "bob": "tg-demo-bob"}  # A2A identities in the stack (README "Demo identities")
LLM_MODEL = "gpt-4o-mini"
EXPORT_ARGS = {"tables": ["orders"]}


def _encode(value: str) -> str:
    return "".join(chr(b) if 0x21 <= b <= 0x7E and chr(b) not in ";=,%" else f"%{b:02x}" for b in value.encode())


def sign_credential(*, expiry: int, trace_id: str, agent: str, on_behalf_of: str | None = None,
                    chain: list[str] | None = None, key: bytes = SIGNING_KEY) -> str:
    """The gateway credential as documented (filters/core/src/gateway.rs), written independently."""
    signed = f"v1;exp={expiry};trace={_encode(trace_id)};agent={_encode(agent)}"
    if on_behalf_of:
        signed += f";obo={_encode(on_behalf_of)}"
    if chain:
        signed += ";chain=" + ",".join(_encode(c) for c in chain)
    mac = hmac.new(key, b"tollgate-gateway/v1\n" + signed.encode(), hashlib.sha256).hexdigest()
    return f"{signed};sig={mac}"


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _ask(url: str, user: str, text: str) -> str:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {USER_KEYS[user]}"}, timeout=60) as http:
        client = await create_client(url, client_config=ClientConfig(streaming=False, httpx_client=http))
        try:
            request = SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
            return "\n".join([get_stream_response_text(e) async for e in client.send_message(request)])
        finally:
            await client.close()


def ask(gw: str, user: str, text: str) -> str:
    return asyncio.run(_ask(f"{gw}/agents/planner/", user, text))


async def _sdk_export(url: str, headers: dict[str, str]) -> Any:
    async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with McpClient(streamable_http_client(url, http_client=http), mode="legacy") as mcp:
            return await mcp.call_tool("export_rows", EXPORT_ARGS)


def sdk_export(url: str, headers: dict[str, str]) -> Any:
    """The mcp SDK client's call of export_rows; the exception when the gateway refuses it."""
    try:
        return asyncio.run(_sdk_export(url, headers))
    except BaseException as exc:  # noqa: BLE001 - the refusal surfaces as an (exception group) error
        return exc


def exports(mcp_url: str) -> int:
    return httpx.get(f"{mcp_url}/_calls", timeout=5).json().get("export_rows", 0)


@pytest.fixture
def stack(procs, fleet_store):
    ports = {"llm_provider_a": harness.free_port(), "llm_provider_b": harness.free_port(),
             "mcp_demo": harness.free_port(), "agent_planner": harness.free_port(),
             "agent_researcher": harness.free_port(), "tollgate_limits": fleet_store["tollgate_limits"]}
    cfg = harness.load_envoy_config("stack.yaml")
    llm = harness.plugin_config(cfg, "tollgate.llm")
    [agent_limit] = [limit for limit in llm["limits"] if limit["id"] == "agent-requests"]
    assert (agent_limit["scope"], agent_limit["agents"]) == ("agent", ["*"])
    agent_limit["requests_per_window"] = 2  # so that the third request of the researcher is refused
    envoy = procs.envoy(cfg, upstreams=ports, plugin_configs={"tollgate.llm": llm})
    gw = envoy.url
    procs.python("fake-llm", "examples/fake_llm/server.py", ["--port", str(ports["llm_provider_a"]), "--name", "provider-a"],
                 f"http://127.0.0.1:{ports['llm_provider_a']}/healthz")  # fmt: skip
    mcp_url = f"http://127.0.0.1:{ports['mcp_demo']}"
    procs.python("mcp", "examples/mcp_server/server.py", ["--port", str(ports["mcp_demo"]), "--json-response", "--export-tool"],
                 f"{mcp_url}/_calls")  # fmt: skip
    researcher_url = f"http://127.0.0.1:{ports['agent_researcher']}"
    procs.python("researcher", "examples/a2a_agent/agent.py",
                 ["--port", str(ports["agent_researcher"]), "--name", "researcher", "--call-llm", f"{gw}/v1",
                  "--call-mcp", f"{gw}/mcp", "--mcp-tool", "export_rows", "--mcp-arguments", json.dumps(EXPORT_ARGS)],
                 f"{researcher_url}/.well-known/agent-card.json",
                 env={"AGENT_LLM_KEY": "tg-demo-alice", "AGENT_LLM_MODEL": LLM_MODEL})  # fmt: skip
    procs.python("planner", "examples/a2a_agent/agent.py",
                 ["--port", str(ports["agent_planner"]), "--name", "planner", "--delegate-to", f"{gw}/agents/researcher/"],
                 f"http://127.0.0.1:{ports['agent_planner']}/.well-known/agent-card.json")  # fmt: skip
    return envoy, mcp_url, researcher_url


def _records_of_trace(envoy: harness.Envoy, trace_id: str) -> list[dict]:
    return [r for r in envoy.audit_records() if r.get("trace_id") == trace_id]


def test_the_researchers_llm_and_mcp_calls_name_the_agent_the_user_and_the_chain(stack) -> None:
    envoy, mcp_url, researcher_url = stack
    gw = envoy.url

    # --- alice: the researcher may export for her --------------------------------------------
    reply = ask(gw, "alice", "find the orders")
    assert "[planner] echo: find the orders" in reply, reply
    assert "[researcher] echo: find the orders" in reply, reply
    assert "mcp: orders" in reply, reply
    assert exports(mcp_url) == 1
    [hop1] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("target") == "planner"
                              and r.get("method") == "SendMessage")
    trace_id = hop1["trace_id"]
    [hop2] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "a2a" and r.get("target") == "researcher"
                              and r.get("method") == "SendMessage")
    assert (hop2["caller"], hop2["on_behalf_of"], hop2["chain"]) == ("planner", "alice", ["planner", "researcher"])
    [call] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("tool") == "export_rows")
    [llm] = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm")
    for record in (call, llm):
        assert record["agent"] == "researcher", record
        assert record["on_behalf_of"] == "alice", record
        assert record["chain"] == ["planner", "researcher"], record
        assert record["identity"]["principal"] == "researcher" and record["identity"]["source"] == "gateway", record
    assert (call["decision"], call["rule_id"]) == ("allow", "researcher-exports-for-alice")
    assert (llm["decision"], llm["status"]) == ("allow", 200)
    # One trace: both A2A hops, every MCP message and the LLM call of this request.
    records = _records_of_trace(envoy, trace_id)
    assert {r["layer"] for r in records} == {"a2a", "mcp", "llm"}
    assert {r.get("trace_id") for r in envoy.audit_records() if r.get("layer") in ("mcp", "llm")} == {trace_id}
    assert all(r.get("agent") == "researcher" for r in records if r["layer"] in ("mcp", "llm")), records

    # What the researcher got with its hop: a credential for itself, bound to this trace.
    seen = httpx.get(f"{researcher_url}/_seen", timeout=5).json()
    [got] = [s for s in seen if s["method"] == "SendMessage"]
    credential = got["headers"][CREDENTIAL]
    assert f";trace={trace_id};agent=researcher;obo=alice;" in credential, credential
    assert got["headers"]["traceparent"].split("-")[1] == trace_id

    # --- bob: the same agent may not export for him; the LLM counts the researcher ------------
    reply = ask(gw, "bob", "find bob's orders")
    assert "[researcher] echo: find bob's orders" in reply, reply
    assert "mcp: orders" not in reply, reply
    assert exports(mcp_url) == 1, "nothing reached the server for bob"
    denied = envoy.wait_audit(1, where=lambda r: r.get("layer") == "mcp" and r.get("tool") == "export_rows"
                              and r.get("on_behalf_of") == "bob")
    assert [(r["decision"], r["agent"], r.get("rule_id")) for r in denied] == [("deny", "researcher", None)]
    bob_llm = envoy.wait_audit(1, where=lambda r: r.get("layer") == "llm" and r.get("on_behalf_of") == "bob")
    assert [(r["decision"], r["status"]) for r in bob_llm] == [("allow", 200)]

    # --- the researcher's third LLM request: over its per-agent limit, whoever it is for -------
    reply = ask(gw, "alice", "once more")
    assert "mcp: orders" in reply and exports(mcp_url) == 2, reply
    assert "llm: error: RateLimitError" in reply, reply
    refused = envoy.wait_audit(3, where=lambda r: r.get("layer") == "llm")[-1]
    assert (refused["decision"], refused["status"], refused["rule_id"]) == ("deny", 429, "agent-requests"), refused
    assert (refused["agent"], refused["on_behalf_of"]) == ("researcher", "alice")


def test_a_replayed_expired_or_forged_credential_is_refused_by_the_mcp_filter(stack) -> None:
    envoy, mcp_url, researcher_url = stack
    gw = envoy.url
    reply = ask(gw, "alice", "get the credential")
    assert "mcp: orders" in reply and exports(mcp_url) == 1, reply
    [got] = [s for s in httpx.get(f"{researcher_url}/_seen", timeout=5).json() if s["method"] == "SendMessage"]
    credential, hop_traceparent = got["headers"][CREDENTIAL], got["headers"]["traceparent"]
    trace_id = hop_traceparent.split("-")[1]

    # The researcher's own headers, on its own trace: accepted (the SDK client, as the agent does).
    result = sdk_export(f"{gw}/mcp", {CREDENTIAL: credential, "traceparent": traceparent(trace_id)})
    assert not isinstance(result, BaseException) and not result.is_error, result
    assert exports(mcp_url) == 2

    # The same credential on another trace: a replay.
    other_trace = secrets.token_hex(16)
    result = sdk_export(f"{gw}/mcp", {CREDENTIAL: credential, "traceparent": traceparent(other_trace)})
    assert isinstance(result, BaseException), result
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "export_rows", "arguments": EXPORT_ARGS}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream", CREDENTIAL: credential}
    cases = {
        # A trace of its own: the SDK client's attempt above left its records on `other_trace`.
        "other_trace": (credential, secrets.token_hex(16), "gateway credential replayed on another trace"),
        "expired": (sign_credential(expiry=int(time.time()) - 1, trace_id=trace_id, agent="researcher",
                                    on_behalf_of="alice", chain=["planner", "researcher"]),
                    trace_id, "gateway credential expired"),
        "bad_signature": (sign_credential(expiry=int(time.time()) + 600, trace_id=trace_id, agent="researcher",
                                          on_behalf_of="alice", chain=["planner", "researcher"], key=b"x" * 48),
                          trace_id, "gateway credential signature invalid"),
    }
    for label, (value, trace, reason) in cases.items():
        response = httpx.post(f"{gw}/mcp", json=body, timeout=10,
                              headers={**headers, CREDENTIAL: value, "traceparent": traceparent(trace)})
        assert response.status_code == 401, (label, response.text)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json() == {"jsonrpc": "2.0", "id": None, "error": {
            "code": response.json()["error"]["code"], "message": f"Unauthorized: {reason}", "data": {"reason": label}}}
        [record] = envoy.wait_audit(1, where=lambda r, t=trace, e=reason: r.get("layer") == "mcp" and r.get("error") == e
                                    and r.get("trace_id") == t)
        assert (record["decision"], record["identity"]) == ("deny", None), record
    # Without a traceparent the request is on a new trace the gateway starts: not the signed one.
    response = httpx.post(f"{gw}/mcp", json=body, headers=headers, timeout=10)
    assert (response.status_code, response.json()["error"]["data"]) == (401, {"reason": "other_trace"})
    assert exports(mcp_url) == 2, "no refused call reached the server"
    # A credential the test signed itself with the fleet's key and a future expiry is accepted:
    # the documented format is the one the filters read.
    mine = sign_credential(expiry=int(time.time()) + 600, trace_id=trace_id, agent="researcher",
                           on_behalf_of="alice", chain=["planner", "researcher"])
    result = sdk_export(f"{gw}/mcp", {CREDENTIAL: mine, "traceparent": traceparent(trace_id)})
    assert not isinstance(result, BaseException) and not result.is_error, result
    assert exports(mcp_url) == 3
    stats = envoy.stats()
    assert stats.get("wasmcustom.tollgate.mcp.gateway_credentials.result.other_trace", 0) >= 3
    assert stats.get("wasmcustom.tollgate.mcp.gateway_credentials.result.expired") == 1
    assert stats.get("wasmcustom.tollgate.mcp.gateway_credentials.result.bad_signature") == 1


def _index(items: list[dict], key: str) -> int:
    return next(i for i, item in enumerate(items) if key in item)


@pytest.mark.parametrize("layer, change, field", [
    ("mcp", lambda p: p["identity"].pop("gateway"),
     lambda p: f"policy.rules[{_index(p['policy']['rules'], 'agents')}].agents: needs identity.gateway"),
    ("mcp", lambda p: p["identity"]["gateway"].update(signing_key="short"),
     lambda p: "identity.gateway.signing_key: must be at least 32 bytes"),
    ("llm", lambda p: p["identity"].pop("gateway"),
     lambda p: f"limits[{_index(p['limits'], 'agents')}].agents: needs identity.gateway"),
    ("llm", lambda p: p["identity"]["gateway"].update(ttl_secs=5), lambda p: "identity.gateway"),
])
def test_envoy_refuses_a_bad_gateway_identity_configuration_naming_the_field(tmp_path, layer, change, field) -> None:
    cfg = harness.load_envoy_config(f"{layer}.yaml")
    plugin = harness.plugin_config(cfg, f"tollgate.{layer}")
    change(plugin)
    log = harness.run_envoy_expect_failure(cfg, tmp_path, plugin_configs={f"tollgate.{layer}": plugin})
    assert field(plugin) in log, log[-3000:]
