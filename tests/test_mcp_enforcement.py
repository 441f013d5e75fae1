"""MCP argument rules and list filtering where a server reads what a naive gateway would not:
the real Envoy 1.40 with dist/tollgate_mcp.wasm in front of the real `mcp` SDK server
(examples/mcp_server with `--export-tool`, JSON responses), driven by the real `mcp` SDK client
and raw httpx; for lists, a small upstream that answers `tools/list` with `text/plain`, and one
that adds a response to an id the client never sent (a tools list) to its answers.

    .venv/bin/python -m pytest tests/test_mcp_enforcement.py -q

- integers compare exactly, whatever their size (one allowed id admits no neighbour);
- numbers with 17+ significant digits are read as written (ranges and audit records);
- a JSON array inside a string is judged as the array the SDK server will act on;
- a list answer that is neither JSON nor SSE is never passed;
- a response to no request of the POST never reaches the client (JSON batch, JSON, SSE).

Whether a call reached the MCP server is read from the server's own per-tool counters
(GET /_calls), never inferred from the gateway's answer.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest

import harness
from test_mcp import ROOT_ID, audit_array, audit_for, call, envoy_config, gateway_plugin, key, post, rpc, run_sdk
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.timeout(120)

BIG_ID = 1234567890123456789
# Rules added to the test gateway's policy (tests/test_mcp.py).
RULES = [
    # alice may delete exactly one row id: 2^63-ish ids, where a double covers 256 integers.
    {"id": "one-row", "effect": "allow", "principals": ["alice"], "tools": ["delete_row"],
     "arguments": [{"path": "$.id", "one_of": [BIG_ID]}]},
    {"id": "exports", "effect": "allow", "principals": ["*"], "tools": ["export_rows"]},
    {"id": "no-user-export", "effect": "deny", "tools": ["export_rows"],
     "arguments": [{"path": "$.tables", "one_of": ["users"]}]},
]

TEXT_LIST_UPSTREAM = r'''
"""Answers every POST with a tools/list result as text/plain (a JSON body, another type)."""
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

seen = []
TOOLS = [{"name": "add", "inputSchema": {"type": "object"}},
         {"name": "admin_reset", "inputSchema": {"type": "object"}}]

async def mcp(request):
    body = json.loads(await request.body())
    seen.append(body.get("method"))
    status = int(request.headers.get("x-stub-status", "200"))
    text = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": {"tools": TOOLS}})
    return Response(text.encode(), status_code=status, media_type="text/plain")

async def get_seen(request):
    return JSONResponse(seen)

app = Starlette(routes=[Route("/mcp", mcp, methods=["POST"]), Route("/_seen", get_seen)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''

STRAY_UPSTREAM = r'''
"""Answers every POST's requests (an empty result each) and puts before them a response to an
id the client never sent, 7, carrying a tools list: a JSON batch for a batch, the stray
response alone for a single request (`x-stub-mode: json`), or SSE events (`sse`)."""
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

STRAY = {"jsonrpc": "2.0", "id": 7, "result": {"tools": [
    {"name": "a$d", "inputSchema": {"type": "object"}}, {"name": "admin_reset", "inputSchema": {"type": "object"}},
    {"name": "echo", "inputSchema": {"type": "object"}}], "nextCursor": "abc"}}

async def mcp(request):
    body = json.loads(await request.body())
    messages = body if isinstance(body, list) else [body]
    answers = [{"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": "3"}], "isError": False}}
               for m in messages if "id" in m and "method" in m]
    if request.headers.get("x-stub-mode") == "sse":
        events = "".join(f"id: e{i}\nevent: message\ndata: {json.dumps(m)}\n\n" for i, m in enumerate([STRAY, *answers]))
        return Response(events.encode(), media_type="text/event-stream")
    out = [STRAY, *answers] if isinstance(body, list) else STRAY
    return Response(json.dumps(out).encode(), media_type="application/json")

app = Starlette(routes=[Route("/mcp", mcp, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


def Stack(workdir) -> harness.DemoMcpGateway:
    plugin = gateway_plugin()
    plugin["policy"]["rules"].extend(RULES)
    plugin["audit_arguments"] = True
    return harness.DemoMcpGateway(workdir, "envoy-enforcement", envoy_config(), {ROOT_ID: plugin},
                                  ["--json-response", "--stateless", "--export-tool"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("mcp-enforcement"))
    yield s
    s.stop()


def sdk_call(stack: Stack, who: str, tool: str, arguments: dict[str, Any]):
    """One tools/call through the gateway with the real SDK client: the result or the MCPError."""
    async def actions(client):
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as e:
            return e

    return run_sdk(stack.envoy.url + "/mcp", "legacy", key(who), actions)


def raw_audit_lines(envoy: harness.Envoy, needle: str) -> list[str]:
    """Audit log lines as written (numbers not re-read by Python) containing `needle`."""
    harness.wait_until(lambda: needle in envoy.audit_log.read_text(), 5, f"an audit line with {needle}")
    return [line for line in envoy.audit_log.read_text().splitlines() if needle in line]


# --- integers compare exactly ---------------------------------------------------------------

@pytest.mark.parametrize("row_id", [1234567890123456800, 1234567890123456788, 1234567890123456790, 1234567890123456768])
def test_one_allowed_id_admits_no_other_id_of_the_same_double(stack, row_id):
    assert float(row_id) == float(BIG_ID)  # what an f64 comparison could not tell apart
    stack.reset_calls()

    result = sdk_call(stack, "alice", "delete_row", {"table": "accounts", "id": row_id})

    # delete_row is listed to alice (one-row allows it for one id): "not allowed", not "unknown".
    assert isinstance(result, MCPError) and (result.code, result.message) == (-31403, "Not allowed: tools/call delete_row with these arguments"), result
    assert stack.calls() == {}
    record = audit_for(stack.envoy, tool="delete_row", arguments={"id": row_id, "table": "accounts"})
    assert (record["decision"], record.get("rule_id")) == ("deny", None)


def test_the_allowed_id_itself_passes_exactly(stack):
    stack.reset_calls()

    result = sdk_call(stack, "alice", "delete_row", {"table": "accounts", "id": BIG_ID})

    assert not isinstance(result, MCPError) and not result.is_error, result
    assert result.content[0].text == f"deleted accounts#{BIG_ID}"
    assert stack.calls() == {"delete_row": 1}
    # Spelled with an exponent, it is the same integer.
    response = post(stack.envoy, None, raw=json.dumps(call("delete_row", {"table": "t", "id": 0})).replace(
        '"id": 0', '"id": 1.234567890123456789e18').encode())
    assert "error" not in rpc(response), response.text
    assert stack.calls() == {"delete_row": 2}


# --- 17+ significant digits -----------------------------------------------------------------

def test_an_amount_just_over_the_limit_is_refused_and_recorded_as_written(stack):
    stack.reset_calls()

    result = sdk_call(stack, "bob", "transfer", {"amount": 1000.0000000000001, "to": "acct-1"})

    assert isinstance(result, MCPError) and result.message == "Not allowed: tools/call transfer with these arguments", result
    assert stack.calls() == {}
    record = audit_for(stack.envoy, tool="transfer", decision="deny")
    assert record["arguments"]["amount"] == 1000.0000000000001
    assert any('"amount":1000.0000000000001' in line for line in raw_audit_lines(stack.envoy, "1000.0000000000001"))


@pytest.mark.parametrize("amount", ["1000.00000000000000000001", "\"1000.0000000000001\""])
def test_amounts_not_exactly_within_the_range_are_refused(stack, amount):
    stack.reset_calls()
    body = json.dumps(call("transfer", {"amount": "X", "to": "acct-1"})).replace('"X"', amount)

    response = post(stack.envoy, None, raw=body.encode(), headers=key("bob"))

    assert (response.status_code, rpc(response)["error"]["message"]) == (403, "Not allowed: tools/call transfer with these arguments")
    assert stack.calls() == {}


def test_an_allowed_amount_is_recorded_as_written(stack):
    stack.reset_calls()
    body = json.dumps(call("transfer", {"amount": "X", "to": "acct-1"})).replace('"X"', "1e3")

    response = post(stack.envoy, None, raw=body.encode(), headers=key("bob"))

    assert rpc(response)["result"]["content"][0]["text"] == "transferred 1000.00 to acct-1"
    assert stack.calls() == {"transfer": 1}
    assert any('"arguments":{"amount":1e3,"to":"acct-1"}' in line for line in raw_audit_lines(stack.envoy, '"amount":1e3'))


# --- JSON inside a string -------------------------------------------------------------------

@pytest.mark.parametrize("tables", [["users"], "[\"users\"]", " [\"orders\", \"users\"]\n", "[\"users\", NaN]"])
def test_a_denied_table_never_reaches_the_server_also_inside_a_string(stack, tables):
    stack.reset_calls()

    result = sdk_call(stack, "alice", "export_rows", {"tables": tables})

    assert isinstance(result, MCPError) and result.message == "Not allowed: tools/call export_rows with these arguments", result
    assert stack.calls() == {}
    record = audit_for(stack.envoy, tool="export_rows", arguments={"tables": tables})
    assert (record["decision"], record["rule_id"]) == ("deny", "no-user-export")


def test_an_allowed_table_inside_a_string_reaches_the_server_as_a_list(stack):
    stack.reset_calls()

    result = sdk_call(stack, "alice", "export_rows", {"tables": "[\"orders\"]"})

    assert not isinstance(result, MCPError) and not result.is_error, result
    # The SDK server read the string as the list it holds.
    assert result.structured_content == {"result": ["orders"]}
    assert stack.calls() == {"export_rows": 1}


# --- a list answer that is neither JSON nor SSE ---------------------------------------------

def stub_gateway(tmp_path_factory, name: str, plugin: dict):
    """Envoy + the filter (`plugin`) in front of the stub upstream (TEXT_LIST_UPSTREAM), for a
    module fixture: yields (envoy, stub port), always stopped."""
    workdir = tmp_path_factory.mktemp(f"mcp-{name}")
    port = harness.free_port()
    script = workdir / "stub_upstream.py"
    script.write_text(TEXT_LIST_UPSTREAM)
    procs = [harness.Proc(f"{name}-upstream", [sys.executable, str(script), str(port)], workdir)]
    try:
        harness.wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/_seen", timeout=1).status_code == 200,
                           20, "stub upstream", procs[0])
        envoy = harness.Envoy(envoy_config(), workdir, name=f"envoy-{name}",
                              upstreams={"mcp_demo": port}, plugin_configs={ROOT_ID: plugin})
        procs.append(envoy.proc)
        yield envoy, port
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def text_list_gateway(tmp_path_factory):
    yield from stub_gateway(tmp_path_factory, "text-list", gateway_plugin())


def test_a_list_answered_as_text_plain_is_never_passed(text_list_gateway):
    envoy, port = text_list_gateway
    request = {"jsonrpc": "2.0", "id": 41, "method": "tools/list"}

    response = post(envoy, request)

    assert "tools/list" in httpx.get(f"http://127.0.0.1:{port}/_seen", timeout=5).json()
    assert "admin_reset" not in response.text
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert (answer["id"], answer["error"]["code"]) == (41, -32603)
    record = audit_for(envoy, method="tools/list", jsonrpc_id=41)
    assert (record["decision"], record["status"]) == ("error", 502)
    assert "text/plain" in record["error"]


def test_an_error_status_keeps_its_status_but_not_its_body(text_list_gateway):
    envoy, _ = text_list_gateway

    response = post(envoy, {"jsonrpc": "2.0", "id": 42, "method": "tools/list"}, {"x-stub-status": "404"})

    assert response.status_code == 404
    assert "admin_reset" not in response.text
    assert response.json()["error"]["code"] == -32603


# --- a response to no request of the POST --------------------------------------------------

@pytest.fixture(scope="module")
def stray_gateway(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mcp-stray")
    port = harness.free_port()
    script = workdir / "stray_upstream.py"
    script.write_text(STRAY_UPSTREAM)
    procs = [harness.Proc("stray-upstream", [sys.executable, str(script), str(port)], workdir)]
    try:
        harness.wait_until(lambda: httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=1).status_code == 200,
                           20, "stray upstream", procs[0])
        envoy = harness.Envoy(envoy_config(), workdir, name="envoy-stray",
                              upstreams={"mcp_demo": port}, plugin_configs={ROOT_ID: gateway_plugin()})
        procs.append(envoy.proc)
        yield envoy
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_a_response_to_no_request_is_dropped_from_a_json_batch(stray_gateway):
    """The fuzz finding F6 through Envoy: the first element has `kd`, not `id` (a
    notification), so the POST asks only for tools/call 2; the server adds a tools list under
    id 7, the client never sees it."""
    batch = [{"jsonrpc": "2.0", "kd": 1, "method": "tools/list"},
             {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
             call("add", {"a": 1}, id=2)]

    response = post(stray_gateway, batch)

    assert response.status_code == 200
    assert "admin_reset" not in response.text and '"id": 7' not in response.text
    assert [m["id"] for m in response.json()] == [2]
    records = audit_array(stray_gateway, lambda a: len(a) == 3 and a[2].get("jsonrpc_id") == 2)
    assert records[2]["decision"] == "error"
    assert records[2]["error"] == "server response with id 7 answers no request of this POST: dropped"
    assert [r["decision"] for r in records[:2]] == ["allow", "allow"]


def test_a_single_answer_to_another_id_becomes_an_error_under_the_requests_id(stray_gateway):
    response = post(stray_gateway, call("add", {"a": 1}, id=41))

    assert "admin_reset" not in response.text
    answer = response.json()
    assert (answer["id"], answer["error"]["code"]) == (41, -32603)
    assert audit_for(stray_gateway, jsonrpc_id=41)["decision"] == "error"


def test_a_response_to_no_request_is_removed_from_the_posts_stream(stray_gateway):
    response = post(stray_gateway, call("add", {"a": 1}, id=43), {"x-stub-mode": "sse"})

    assert response.headers["content-type"].startswith("text/event-stream")
    assert "admin_reset" not in response.text
    # The stray event is gone; its event id stays (an event without data), for resumption.
    assert response.text.startswith("id: e0\n\nid: e1\n"), response.text
    assert rpc(response)["id"] == 43
    assert "answers no request" in audit_for(stray_gateway, jsonrpc_id=43)["error"]


# --- Origin (the MCP spec's DNS-rebinding rule) ----------------------------------------------

@pytest.fixture(scope="module")
def origin_gateway(tmp_path_factory):
    plugin = gateway_plugin()
    plugin["allowed_origins"] = ["https://app.example.com", "http://localhost:*"]
    yield from stub_gateway(tmp_path_factory, "origin", plugin)


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example:80", "null",
                                    "https://app.example.com.evil.example"])
def test_a_request_from_an_origin_not_allowed_is_refused_with_403_and_never_forwarded(origin_gateway, origin):
    envoy, port = origin_gateway
    seen_before = httpx.get(f"http://127.0.0.1:{port}/_seen", timeout=5).json()
    response = post(envoy, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, {"origin": origin})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == -32600
    assert httpx.get(f"http://127.0.0.1:{port}/_seen", timeout=5).json() == seen_before
    record = audit_for(envoy, decision="deny", error=f"origin `{origin}` not allowed")
    assert record["identity"]["principal"] == "alice"
    assert record["status"] == 403


@pytest.mark.parametrize("origin", [None, "https://app.example.com", "http://localhost:6274"])
def test_an_allowed_or_absent_origin_passes(origin_gateway, origin):
    envoy, _ = origin_gateway
    response = post(envoy, {"jsonrpc": "2.0", "id": 8, "method": "ping"}, {"origin": origin} if origin else None)
    assert response.status_code != 403, response.text
