"""MCP denials and refusals that read as what they are (issue 21 item 6), end to end: the real
Envoy 1.40 with dist/tollgate_mcp.wasm and the shipped envoy/mcp.yaml in front of the real `mcp`
SDK server (examples/mcp_server, as `make run` starts it: SSE answers, sessions), driven by the
real `mcp` SDK client, raw httpx and the curl commands we print.

    .venv/bin/python -m pytest tests/test_mcp_messages.py -q -p no:cacheprovider

- `hide` style: a tool (prompt) the caller's lists show, refused for its arguments, is answered
  403 / -31403 "Not allowed: tools/call query_db with these arguments" (no rule id); what the
  lists do not show stays "Unknown tool: X";
- 2026-07-28: a missing `Mcp-Method` / `Mcp-Name` header is called missing, not a mismatch;
- the MCP curl sequence of the `make run` banner (examples/run_stack.py) and of envoy/mcp.yaml's
  header comment works: a session, an allowed call, a refused one, a hidden one.

Whether a call reached the MCP server is read from the server's own per-tool counters
(GET /_calls), never inferred from the gateway's answer.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess

import httpx
import pytest

import harness
from mcp.shared.exceptions import MCPError
from test_run_stack import run  # noqa: F401 - the `make run` stack fixture (started only for its test)
from test_mcp import ROOT_ID, SHIPPED_ENVOY, SHIPPED_PLUGIN, audit_for, call, canonical_sha256, key, post, rpc, run_sdk

pytestmark = pytest.mark.timeout(120)

NOT_ALLOWED_QUERY = "Not allowed: tools/call query_db with these arguments"
# Added to the shipped policy here only (prompts: the shipped rules have no argument condition
# on a prompt). Tools are judged by the shipped rules alone, so the printed curl sequence runs
# against what `make run` runs.
EXTRA_RULES = [{"id": "no-admin-greeting", "effect": "deny", "prompts": ["greeting"],
                "arguments": [{"path": "$.name", "regex": "^admin"}]}]

_spec = importlib.util.spec_from_file_location("run_stack", harness.REPO / "examples" / "run_stack.py")
run_stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_stack)


def Gateway(workdir) -> harness.DemoMcpGateway:
    plugin = copy.deepcopy(SHIPPED_PLUGIN)
    plugin["policy"]["rules"].extend(EXTRA_RULES)
    # The server as `make run` starts it: SSE answers, stateful sessions.
    return harness.DemoMcpGateway(workdir, "envoy-messages", copy.deepcopy(SHIPPED_ENVOY), {ROOT_ID: plugin}, [])


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("mcp-messages"))
    yield g
    g.stop()


# --- hide: what the caller can see is "not allowed", what it cannot is "unknown" ----------------

@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
def test_a_listed_tool_refused_for_its_arguments_is_not_called_unknown(gw, client_mode):
    gw.reset_calls()
    users = {"table": "users", "sql": f"select 1 -- {client_mode}"}
    orders = {"table": "orders", "sql": f"select 1 -- {client_mode}"}

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        out = {}
        for name, tool, arguments in [("users", "query_db", users), ("delete_row", "delete_row", {"table": "t", "id": 1})]:
            try:
                out[name] = await client.call_tool(tool, arguments)
            except MCPError as e:
                out[name] = e
        out["orders"] = await client.call_tool("query_db", orders)
        for name, prompt, arguments in [("admin_greeting", "greeting", {"name": "admin"}), ("internal", "internal", {})]:
            try:
                out[name] = await client.get_prompt(prompt, arguments)
            except MCPError as e:
                out[name] = e
        out["greeting"] = await client.get_prompt("greeting", {"name": "alice"})
        return tools, out

    tools, out = run_sdk(gw.envoy.url + "/mcp", client_mode, key("alice"), actions)

    assert "query_db" in tools and "delete_row" not in tools
    assert isinstance(out["users"], MCPError), out["users"]
    assert (out["users"].code, out["users"].message, out["users"].data) == (-31403, NOT_ALLOWED_QUERY, {"reason": "denied by policy"})
    assert isinstance(out["delete_row"], MCPError), out["delete_row"]
    assert (out["delete_row"].code, out["delete_row"].message) == (-32602, "Unknown tool: delete_row")
    assert not out["orders"].is_error, out["orders"]
    assert isinstance(out["admin_greeting"], MCPError), out["admin_greeting"]
    assert (out["admin_greeting"].code, out["admin_greeting"].message) == (-31403, "Not allowed: prompts/get greeting with these arguments")
    assert isinstance(out["internal"], MCPError), out["internal"]
    assert (out["internal"].code, out["internal"].message) == (-32602, "Unknown prompt: internal")
    assert "alice" in out["greeting"].messages[0].content.text
    # Only the allowed call reached the server.
    assert gw.calls() == {"query_db": 1}

    # One record per message: the refusal, its status, no rule (no allow rule matched), principal.
    refused = audit_for(gw.envoy, tool="query_db", arguments_sha256=canonical_sha256(users))
    assert (refused["decision"], refused["enforced"], refused["status"], refused.get("rule_id"), refused["reason"]) == (
        "deny", True, 403, None, "no rule allows")
    assert refused["identity"]["principal"] == "alice"
    hidden = audit_for(gw.envoy, tool="delete_row", decision="deny", revision=refused["revision"])
    assert hidden["status"] == (400 if client_mode == "2026-07-28" else 200)
    prompt = audit_for(gw.envoy, prompt="greeting", decision="deny", revision=refused["revision"])
    assert (prompt["status"], prompt["rule_id"]) == (403, "no-admin-greeting")
    assert gw.envoy.stat("wasmcustom.tollgate.mcp.calls.server.demo.tool.query_db.caller.alice.decision.deny") >= 1


def test_raw_answers_and_statuses(gw):
    gw.reset_calls()
    headers = {"mcp-protocol-version": "2025-03-26"}

    refused = post(gw.envoy, call("query_db", {"table": "users", "sql": "select 2"}, id=7), headers)
    hidden = post(gw.envoy, call("admin_reset", {}, id=8), headers)
    batch = post(gw.envoy, [call("query_db", {"table": "users", "sql": "select 3"}, id=1), call("admin_reset", {}, id=2),
                            call("add", {"a": 1, "b": 2}, id=3)], headers)

    assert (refused.status_code, refused.headers["content-type"], refused.json()) == (403, "application/json", {
        "jsonrpc": "2.0", "id": 7, "error": {"code": -31403, "message": NOT_ALLOWED_QUERY, "data": {"reason": "denied by policy"}}})
    assert "www-authenticate" not in refused.headers, "hide tells no rule and asks for no other scope"
    assert (hidden.status_code, hidden.json()["error"]) == (200, {"code": -32602, "message": "Unknown tool: admin_reset"})
    # A batch (2025-03-26) keeps 200; each element answered as its own target is shown.
    assert batch.status_code == 200
    assert [m["error"]["code"] for m in batch.json()] == [-31403, -32602, -32600]
    assert gw.calls() == {}


# --- 2026-07-28: a missing routing header is "missing" ----------------------------------------

ADD = call("add", {"a": 1, "b": 2}, id=11)


@pytest.mark.parametrize("headers, message", [
    ({"mcp-name": "add"}, "Mcp-Method header is missing (the body's method is `tools/call`)"),
    ({"mcp-method": "tools/call"}, "Mcp-Name header is missing (required for tools/call)"),
    ({"mcp-method": "tools/list", "mcp-name": "add"}, "Mcp-Method header does not match the body's method `tools/call`"),
    ({"mcp-method": "tools/call", "mcp-name": "echo"}, "Mcp-Name header does not match the body"),
])
def test_a_missing_routing_header_is_called_missing(gw, headers, message):
    gw.reset_calls()

    response = post(gw.envoy, ADD, {"mcp-protocol-version": "2026-07-28", **headers})

    assert (response.status_code, response.json()) == (400, {"jsonrpc": "2.0", "id": 11, "error": {"code": -32020, "message": message}})
    assert gw.calls() == {}
    record = gw.envoy.wait_audit(1, where=lambda r: r.get("error") == message)[-1]
    assert (record["decision"], record["status"], record["revision"]) == ("error", 400, "2026-07-28")


# --- the printed curl sequence works ---------------------------------------------------------

def mcp_yaml_commands(gateway: str) -> str:
    """The shell lines of envoy/mcp.yaml's header comment (from `mcp() {` to the comment's last
    command), pointed at `gateway`."""
    lines = (harness.REPO / "envoy" / "mcp.yaml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("#   mcp() {"))
    out = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        out.append(line[4:])
    return "\n".join(out).replace("localhost:10000", gateway.removeprefix("http://"))


def run_sequence(script: str) -> str:
    """Runs a printed sequence with bash (`set -eu`); checks what it printed: the allowed call's
    result (SSE from the server), the refusal, the hidden tool. Returns its output."""
    assert "initialize" in script and "notifications/initialized" in script and "mcp-session-id: $SID" in script
    done = subprocess.run(["bash", "-c", "set -eu\n" + script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    results = [json.loads(l[5:]) for l in out.splitlines() if l.startswith("data:")]
    allowed = [m for m in results if m.get("id") == 2]
    assert allowed and allowed[0]["result"]["isError"] is False, out
    assert allowed[0]["result"]["structuredContent"]["result"][0]["table"] == "orders"
    errors = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert {"jsonrpc": "2.0", "id": 3, "error": {"code": -31403, "message": NOT_ALLOWED_QUERY, "data": {"reason": "denied by policy"}}} in errors, out
    assert {"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "Unknown tool: delete_row"}} in errors, out
    return out


def check_session_records(records: list[dict]) -> None:
    """The gateway's records of one printed sequence: initialize, the notification and three
    calls, in one session, all alice's."""
    assert [r.get("method") for r in records] == ["initialize", "notifications/initialized", "tools/call", "tools/call", "tools/call"]
    assert [r["decision"] for r in records] == ["allow", "allow", "allow", "deny", "deny"]
    assert [r["status"] for r in records] == [200, 202, 200, 403, 200]
    sessions = {r.get("session_id") for r in records[1:]}
    assert len(sessions) == 1 and None not in sessions, records
    assert {r["identity"]["principal"] for r in records} == {"alice"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("source", ["make-run-banner", "envoy/mcp.yaml"])
def test_the_printed_mcp_sequence_shows_an_allowed_call_then_the_denials(gw, source):
    gw.reset_calls()
    if source == "make-run-banner":
        script = run_stack.mcp_example(gw.envoy.url)
        assert script in run_stack.examples(gw.envoy.url, gw.envoy.admin, "")
    else:
        script = mcp_yaml_commands(gw.envoy.url)
    before = len(gw.envoy.audit_records())

    run_sequence(script)

    assert gw.calls() == {"query_db": 1}, "the allowed call reached the server once, nothing else did"
    harness.wait_until(lambda: len(gw.envoy.audit_records()) >= before + 5, 5, "five audit records")
    check_session_records(gw.envoy.audit_records()[before:])


@pytest.mark.timeout(240)  # the stack's start included (as tests/test_run_stack.py)
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_mcp_sequence_make_run_prints_works_on_the_stack_it_started(run):
    """The block as `make run` printed it (its own ports), pasted into bash against that stack."""
    out = run.stdout()
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("# Tools (MCP gateway)"))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    script = "\n".join(lines[start:end])
    assert script == run_stack.mcp_example(run.gateway).rstrip("\n")
    mcp_port = run.ports["mcp_demo"]
    httpx.post(f"http://127.0.0.1:{mcp_port}/_calls/reset", timeout=5).raise_for_status()
    before = len(run.audit())

    run_sequence(script)

    assert httpx.get(f"http://127.0.0.1:{mcp_port}/_calls", timeout=5).json() == {"query_db": 1}

    def mine() -> list[dict]:
        return [r for r in run.audit()[before:] if r.get("layer") == "mcp"]
    harness.wait_until(lambda: len(mine()) >= 5, 5, "the sequence's audit lines in the terminal")
    check_session_records(mine())
