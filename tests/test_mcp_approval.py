"""Approval for risky tools ("are you sure?", issue 18 item 6) end to end: the real Envoy 1.40
with dist/tollgate_mcp.wasm in front of the real `mcp` SDK server (examples/mcp_server, JSON
responses), driven by the real `mcp` SDK client and raw httpx, with an approval service
written here (APPROVER: a small Starlette app that records what it was asked and answers yes,
no, slowly or wrongly, as the test sets it).

    .venv/bin/python -m pytest tests/test_mcp_approval.py -q -p no:cacheprovider

Whether a call reached the MCP server is read from the server's own per-tool counters
(GET /_calls); what the approver was asked from its own record (GET /_asked).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from typing import Any

import httpx
import pytest

import harness
from mcp.shared.exceptions import MCPError
from test_mcp import ROOT_ID, audit_for, call, canonical_sha256, envoy_config, gateway_plugin, key, post, run_sdk

pytestmark = pytest.mark.timeout(120)

TIMEOUT_MS = 1500
# Added to the test gateway's policy (tests/test_mcp.py: bob is in `finance`, whose
# `finance-small-transfers` allows transfers up to 1000).
RULES = [
    # A transfer above 100 needs a yes, even though finance-small-transfers allows it.
    {"id": "big-transfers", "effect": "approve", "groups": ["finance"], "tools": ["transfer"],
     "arguments": [{"path": "$.amount", "gt": 100}]},
    # alice may delete rows, each one approved (no allow rule covers it).
    {"id": "alice-deletes", "effect": "approve", "principals": ["alice"], "tools": ["delete_row"]},
]

APPROVER = r'''
"""An approval service for the test: records every question; answers as /_mode says."""
import asyncio, json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

asked = []
mode = {"mode": "yes"}

async def approve(request):
    body = await request.body()
    asked.append({"headers": dict(request.headers), "body": json.loads(body)})
    m = mode["mode"]
    if m == "yes":
        return JSONResponse({"approved": True, "approver": "carol@example.com", "reason": "ticket OPS-7"})
    if m == "no":
        return JSONResponse({"approved": False, "approver": "carol@example.com", "reason": "not during the freeze"})
    if m == "slow":
        await asyncio.sleep(4)
        return JSONResponse({"approved": True, "approver": "too-late"})
    if m == "string":
        return JSONResponse({"approved": "true"})
    if m == "error":
        return JSONResponse({"approved": True}, status_code=500)
    if m == "html":
        return Response(b"<html>yes</html>", media_type="text/html")
    return Response(status_code=404)

async def set_mode(request):
    mode["mode"] = (await request.json())["mode"]
    asked.clear()
    return JSONResponse(mode)

async def get_asked(request):
    return JSONResponse(asked)

app = Starlette(routes=[Route("/approve", approve, methods=["POST"]), Route("/_mode", set_mode, methods=["POST"]),
                        Route("/_asked", get_asked)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


def approval_envoy_config() -> dict:
    """The test gateway's Envoy config with an `approvals` cluster for the approval service."""
    cfg = envoy_config()
    clusters = cfg["static_resources"]["clusters"]
    approvals = copy.deepcopy(next(c for c in clusters if c["name"] == "mcp_demo"))
    approvals["name"] = approvals["load_assignment"]["cluster_name"] = "approvals"
    clusters.append(approvals)
    return cfg


def approval_plugin(deny_style: str, include_arguments: bool) -> dict:
    plugin = gateway_plugin(deny_style=deny_style)
    plugin["policy"]["rules"].extend(RULES)
    plugin["approval"] = {"cluster": "approvals", "path": "/approve", "timeout_ms": TIMEOUT_MS,
                          "include_arguments": include_arguments}
    return plugin


class Stack:
    """The MCP server, the approval service and two gateways (explain without arguments, hide
    with arguments), always stopped."""

    def __init__(self, workdir):
        self.procs: list[harness.Proc] = []
        try:
            self.mcp_port = harness.free_port()
            self.procs.append(harness.python_server(
                "mcp-json", "examples/mcp_server/server.py",
                ["--host", "127.0.0.1", "--port", str(self.mcp_port), "--json-response"],
                workdir, f"http://127.0.0.1:{self.mcp_port}/_calls"))
            self.approver_port = harness.free_port()
            script = workdir / "approver.py"
            script.write_text(APPROVER)
            approver = harness.Proc("approver", [sys.executable, str(script), str(self.approver_port)], workdir)
            self.procs.append(approver)
            harness.wait_until(lambda: httpx.get(f"{self.approver}/_asked", timeout=1).status_code == 200,
                               20, "approval service", approver)
            upstreams = {"mcp_demo": self.mcp_port, "approvals": self.approver_port}
            self.explain = harness.Envoy(approval_envoy_config(), workdir, name="envoy-approval-explain", upstreams=upstreams,
                                         plugin_configs={ROOT_ID: approval_plugin("explain", False)})
            self.procs.append(self.explain.proc)
            self.hide = harness.Envoy(approval_envoy_config(), workdir, name="envoy-approval-hide", upstreams=upstreams,
                                      plugin_configs={ROOT_ID: approval_plugin("hide", True)})
            self.procs.append(self.hide.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def approver(self) -> str:
        return f"http://127.0.0.1:{self.approver_port}"

    def answer(self, mode: str) -> None:
        """Sets how the approver answers and forgets what it was asked."""
        httpx.post(f"{self.approver}/_mode", json={"mode": mode}, timeout=5).raise_for_status()

    def asked(self) -> list[dict]:
        return httpx.get(f"{self.approver}/_asked", timeout=5).json()

    def calls(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.mcp_port}/_calls", timeout=5).json()

    def reset(self, mode: str) -> None:
        self.answer(mode)
        httpx.post(f"http://127.0.0.1:{self.mcp_port}/_calls/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("mcp-approval"))
    yield s
    s.stop()


def sdk_call(envoy: harness.Envoy, who: str, tool: str, arguments: dict[str, Any]):
    """One tools/call with the real SDK client: the result, or the MCPError."""
    async def actions(client):
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as e:
            return e

    return run_sdk(envoy.url + "/mcp", "legacy", key(who), actions)


def approvals_stat(envoy: harness.Envoy, outcome: str) -> int:
    return envoy.stat(f"wasmcustom.tollgate.mcp.approvals.server.demo.outcome.{outcome}")


# --- yes -------------------------------------------------------------------------------------

def test_an_explicit_yes_forwards_the_call_and_the_approver_was_told_who_what_and_the_digest(stack):
    stack.reset("yes")
    arguments = {"amount": 500, "to": "acct-9"}
    before = approvals_stat(stack.explain, "approved")

    result = sdk_call(stack.explain, "bob", "transfer", arguments)

    assert not isinstance(result, MCPError) and not result.is_error, result
    assert result.content[0].text == "transferred 500.00 to acct-9"
    assert stack.calls() == {"transfer": 1}
    [question] = stack.asked()
    body = question["body"]
    assert body["identity"] == {"principal": "bob", "groups": ["finance"], "source": "api_key", "key_name": "bob-demo"}
    assert (body["server"], body["method"], body["tool"], body["rule_id"]) == ("demo", "tools/call", "transfer", "big-transfers")
    assert body["arguments_sha256"] == canonical_sha256(arguments)
    assert "arguments" not in body, "arguments are sent only with include_arguments"
    assert body["version"] == 1 and len(body["trace_id"]) == 32
    assert question["headers"]["content-type"] == "application/json"
    assert question["headers"]["x-request-id"] == body["request_id"]
    record = audit_for(stack.explain, request_id=body["request_id"])
    assert (record["decision"], record["rule_id"], record["reason"], record["status"]) == ("allow", "big-transfers", "approved", 200)
    assert record["trace_id"] == body["trace_id"]
    assert record["arguments_sha256"] == body["arguments_sha256"]
    approval = record["approval"]
    assert {k: approval[k] for k in ("rule_id", "asked", "approved", "approver", "reason", "status")} == {
        "rule_id": "big-transfers", "asked": True, "approved": True, "approver": "carol@example.com",
        "reason": "ticket OPS-7", "status": 200}
    harness.wait_until(lambda: approvals_stat(stack.explain, "approved") == before + 1, 5, "approvals metric")
    assert 'tollgate_mcp_approvals{mcp_server="demo",mcp_approval_outcome="approved"}' in stack.explain.prometheus()
    assert 'tollgate_mcp_calls{mcp_server="demo",mcp_tool="transfer",mcp_caller="bob",mcp_decision="approved"}' in stack.explain.prometheus()


def test_a_call_no_approve_rule_matches_is_never_asked_about(stack):
    stack.reset("no")

    result = sdk_call(stack.explain, "bob", "transfer", {"amount": 50, "to": "acct-9"})

    assert not isinstance(result, MCPError) and not result.is_error, result
    assert stack.calls() == {"transfer": 1}
    assert stack.asked() == []


def test_a_tool_that_needs_approval_is_listed_and_runs_once_approved(stack):
    stack.reset("yes")

    async def actions(client):
        tools = [t.name for t in (await client.list_tools()).tools]
        return tools, await client.call_tool("delete_row", {"table": "orders", "id": 7})

    tools, deleted = run_sdk(stack.explain.url + "/mcp", "legacy", key("alice"), actions)

    assert tools == ["add", "echo", "query_db", "delete_row"]
    assert deleted.content[0].text == "deleted orders#7"
    assert stack.calls() == {"delete_row": 1}
    assert [q["body"]["rule_id"] for q in stack.asked()] == ["alice-deletes"]


# --- no, timeout, bad answers ----------------------------------------------------------------

def test_no_is_refused_nothing_reaches_the_server_and_the_audit_names_the_answer(stack):
    stack.reset("no")
    before = approvals_stat(stack.explain, "denied")

    denied = sdk_call(stack.explain, "bob", "transfer", {"amount": 900, "to": "acct-9"})

    assert isinstance(denied, MCPError), denied
    assert (denied.code, denied.message) == (-31403, "Not approved: tools/call transfer")
    assert denied.data == {"rule_id": "big-transfers", "reason": "not approved",
                           "approver": "carol@example.com", "approver_reason": "not during the freeze"}
    assert stack.calls() == {}
    [question] = stack.asked()
    record = audit_for(stack.explain, request_id=question["body"]["request_id"])
    assert (record["decision"], record["rule_id"], record["reason"], record["status"]) == ("deny", "big-transfers", "not approved", 403)
    assert (record["approval"]["approved"], record["approval"]["approver"], record["approval"]["reason"]) == (
        False, "carol@example.com", "not during the freeze")
    harness.wait_until(lambda: approvals_stat(stack.explain, "denied") == before + 1, 5, "approvals metric")


def test_no_answer_within_the_timeout_is_refused(stack):
    stack.reset("slow")
    started = time.monotonic()

    denied = post(stack.explain, call("transfer", {"amount": 900, "to": "acct-9"}, id="t1"), key("bob"))

    elapsed = time.monotonic() - started
    assert TIMEOUT_MS / 1000 <= elapsed < 3.5, elapsed
    assert denied.status_code == 403
    assert denied.json() == {"jsonrpc": "2.0", "id": "t1", "error": {
        "code": -31403, "message": "Not approved: tools/call transfer",
        "data": {"rule_id": "big-transfers", "reason": "approval timed out"}}}
    [question] = stack.asked()
    record = audit_for(stack.explain, request_id=question["body"]["request_id"])
    assert (record["decision"], record["reason"]) == ("deny", "approval timed out")
    assert record["approval"]["timeout"] is True and record["approval"]["approved"] is False
    assert stack.calls() == {}


@pytest.mark.parametrize("mode, status", [("string", 200), ("error", 500), ("html", 200), ("unknown", 404)])
def test_anything_but_an_explicit_true_is_refused(stack, mode, status):
    stack.reset(mode)

    denied = sdk_call(stack.explain, "bob", "transfer", {"amount": 900, "to": "acct-9"})

    assert isinstance(denied, MCPError) and denied.code == -31403, denied
    assert denied.data == {"rule_id": "big-transfers", "reason": "approval service failed"}
    assert stack.calls() == {}
    [question] = stack.asked()
    record = audit_for(stack.explain, request_id=question["body"]["request_id"])
    assert (record["decision"], record["approval"]["approved"], record["approval"]["status"]) == ("deny", False, status)
    assert record["approval"]["error"]


# --- arguments, hide style -------------------------------------------------------------------

def test_arguments_are_sent_when_configured_and_hide_tells_only_the_outcome(stack):
    stack.reset("no")
    arguments = {"amount": 250.5, "to": "acct-9"}

    denied = sdk_call(stack.hide, "bob", "transfer", arguments)

    assert isinstance(denied, MCPError), denied
    assert (denied.code, denied.message, denied.data) == (-31403, "Not approved: tools/call transfer", {"reason": "not approved"})
    assert stack.calls() == {}
    [question] = stack.asked()
    assert question["body"]["arguments"] == arguments
    assert question["body"]["arguments_sha256"] == canonical_sha256(arguments)

    stack.reset("yes")
    result = sdk_call(stack.hide, "bob", "transfer", arguments)
    assert result.content[0].text == "transferred 250.50 to acct-9"
    assert stack.calls() == {"transfer": 1}


# --- batches (2025-03-26) --------------------------------------------------------------------

def test_a_batch_holding_a_call_that_needs_approval_is_refused_whole_without_asking(stack):
    stack.reset("yes")
    batch = [call("add", {"a": 1, "b": 2}, id=1), call("transfer", {"amount": 900, "to": "acct-9"}, id=2)]

    response = post(stack.explain, batch, {**key("bob"), "mcp-protocol-version": "2025-03-26"})

    assert response.status_code == 403
    answers = response.json()
    assert [a["id"] for a in answers] == [1, 2]
    assert answers[0]["error"]["data"] == {"reason": "another message in the batch needs approval"}
    assert answers[1]["error"]["message"] == "Approval required: tools/call transfer must be sent on its own, not in a batch"
    assert stack.calls() == {}
    assert stack.asked() == []


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("approval, expected", [
    (None, "policy.rules[{n}].effect: `approve` needs `approval` (the approval service) configured (rule `big-transfers`)"),
    ({"cluster": "approvals", "timeout_ms": 0}, "approval.timeout_ms: must be between 1 and 300000"),
    ({"cluster": "approvals", "include_args": True}, "approval.include_args: unknown field `include_args`"),
])
def test_a_bad_approval_configuration_is_refused_at_load_naming_the_field(tmp_path, approval, expected):
    plugin = approval_plugin("explain", False)
    n = next(i for i, r in enumerate(plugin["policy"]["rules"]) if r["id"] == "big-transfers")
    if approval is None:
        del plugin["approval"]
    else:
        plugin["approval"] = approval

    log = harness.run_envoy_expect_failure(approval_envoy_config(), tmp_path, plugin_configs={ROOT_ID: plugin})

    assert f"tollgate-mcp: invalid plugin configuration: {expected.format(n=n)}" in log, log[-3000:]
